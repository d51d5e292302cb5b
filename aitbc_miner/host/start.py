"""The ``aitbc-miner`` entry point: secrets leave the environment before anything else.

Any ``AITBC_MINER_*`` variable may carry a secret (the miner key, a job secret), and a
process's environment block stays readable in ``/proc/<pid>/environ`` whatever the
process does to ``os.environ``. So the first thing the command does, before importing
the engine, is to exec itself again, same PID, without those variables, handing them
over in an inherited memory file (``aitbc_miner.handoff``); the new image reads them back
and runs the command line as usual. Only the standard library is loaded before that, so
the extra exec costs a fraction of the start.
"""

from __future__ import annotations

import ctypes
import sys

from ..handoff import HandoffError, receive_handoff, reexec_without, secret_variables

FATAL = 1  # codes.ExitCode.FATAL, without importing the package's heavier modules yet
PR_SET_DUMPABLE = 4  # prctl(2)


def main(argv: list[str] | None = None) -> int:
    try:
        receive_handoff()  # in the new image: the variables the old one handed over
        reexec_without(secret_variables())  # in the first image: returns only with none
    except (HandoffError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"aitbc-miner: error: cannot take the secrets out of the environment: "
              f"{reason}", file=sys.stderr)
        return FATAL
    keep_memory_private()
    from .cli import main as cli_main

    return cli_main(argv)


def keep_memory_private() -> None:
    """From here on the process holds secrets in memory: no core dump of it, and no other
    process of the same user may read its memory or its ``/proc`` files (``prctl
    PR_SET_DUMPABLE 0``; root still can). An exec resets it, so the CLI's second hop (the
    ``pin_env`` variable) gets it again from this same call in the new image."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # fails only on a kernel without prctl
