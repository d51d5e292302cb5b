"""What the process runners (``cli``, ``python``) share: the sandbox their jobs run in.

They are offered to the coordinator only while that sandbox can be built here. Where it
cannot, a job that arrives anyway gets ``E_SANDBOX_UNAVAILABLE`` with the reason, and the
reason is a standing warning on every screen.
"""

from __future__ import annotations

from ..codes import ErrorCode
from ..sandbox import Isolation, Sandbox
from .base import JobFailed
from .settings import RunnerSettings


def make_sandbox(settings: RunnerSettings) -> Sandbox:
    return Sandbox(sigint_grace_s=settings.kill.sigint_grace_s,
                   sigterm_grace_s=settings.kill.sigterm_grace_s,
                   isolation=Isolation(settings.isolation), job_user=settings.job_user)


class SandboxedRunner:
    """The runner hooks the registry and the engine call, answered by the sandbox."""

    sandbox: Sandbox

    def available(self) -> bool:
        return self.sandbox.unavailable() is None

    async def refresh(self) -> None:
        """Probe the host before the first registration (off the event loop)."""
        await self.sandbox.prepare()

    def warnings(self) -> list[str]:
        return self.sandbox.warnings()

    def refusal(self) -> JobFailed | None:
        """What a job gets where no process job can run, or None."""
        problem = self.sandbox.unavailable()
        return None if problem is None else JobFailed(
            ErrorCode.E_SANDBOX_UNAVAILABLE, f"sandbox: {problem}; not run")
