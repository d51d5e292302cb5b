"""One job's life from claim to staged outcome; the job task is its only writer until then.

Order matters and is journaled: ``running`` is committed before the runner starts, and
the outcome is committed (shielded from cancellation) before the slot is given back.
A cancellation that the operator asked for becomes ``E_CANCELED``; a timeout ``E_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from .. import workspace
from ..codes import ErrorCode
from ..identity.rigkey import RigKeyError
from ..journal import ACTIVE_STATES, Outcome
from ..runners.base import JobFailed, RunContext
from ..untrusted import scrub
from .core import Core, HeldJob
from .disk import write_failed
from .slots import NoSlotOfKind
from .snapshot import (
    JobFinished,
    JobHandedOff,
    JobLogLine,
    JobStarted,
    OutcomeUnstaged,
    OutcomeView,
)

Enqueue = Any  # Callable[[str], None]; the outbox's enqueue
GPU_LOST_REASON = "gpu lost"  # cancel reason of a job whose GPU fell off the bus: E_GPU_LOST
DRAIN_GRACE_REASON = "drain grace elapsed"  # cancel reason when a drain's deadline comes

log = logging.getLogger("aitbc_miner.engine")


class JobRun:
    def __init__(self, core: Core, enqueue: Enqueue) -> None:
        self.core = core
        self.enqueue = enqueue

    def timeout_for(self, payload: Mapping[str, Any]) -> float:
        """The job's ``timeout_s`` when it asks for one, bounded by the operator's maximum."""
        t = self.core.tuning
        asked = payload.get("timeout_s")
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
            return min(float(asked), t.max_timeout_s)
        return t.default_timeout_s

    async def run(self, held: HeldJob, payload: dict[str, Any], constraints: dict[str, Any],
                  bad_payload: str | None = None) -> None:
        core = self.core
        started: float | None = None
        try:
            if bad_payload is not None:
                raise JobFailed(ErrorCode.E_BADJOB, bad_payload)
            runner = core.registry.for_payload(payload)
            try:
                slot = await core.pool.acquire(runner.slot_kind, held.job_id, constraints)
            except NoSlotOfKind as exc:
                if await self._hand_off(held, payload, constraints, ErrorCode.E_UNSUPPORTED,
                                        str(exc)):
                    return
                raise JobFailed(ErrorCode.E_UNSUPPORTED, str(exc)) from exc
            held.slot = slot
            if core.telemetry is not None and slot.gpu_uuid is not None:
                core.telemetry.track_job(held.job_id, slot.gpu_uuid)
            await core.journal.mark_running(held.job_id, slot.slot_id)
            held.started_at = core.clock()
            started = time.perf_counter()
            core.emit(JobStarted(at=core.clock(), job_id=held.job_id, slot=slot.slot_id,
                                 message=f"job {held.job_id} ({held.job_type}) started on "
                                 f"{slot.slot_id}"))
            try:
                folder = await asyncio.to_thread(
                    workspace.prepare, core.workspace_root, held.job_id,
                    {"job_id": held.job_id, "payload": payload, "constraints": constraints})
            except OSError as exc:
                raise write_failed(core, exc, "job.json") from exc
            ctx = RunContext(
                job_id=held.job_id, slot_id=slot.slot_id, slot_kind=slot.kind, workspace=folder,
                timeout_s=self.timeout_for(payload), constraints=constraints,
                gpu_uuid=slot.gpu_uuid, gpu_index=slot.gpu.gpu_index if slot.gpu else None,
                report_progress=lambda p: self._progress(held, p),
                report_log=lambda line: self._log(held, line),
                report_pid=lambda pid: self._pid(held, pid))
            async with asyncio.timeout(ctx.timeout_s):
                output = await runner.run(payload, ctx)
            metrics = {**self._gpu_metrics(held), **output.metrics,
                       "duration_ms": _ms_since(started)}
            body = {"result": output.result, "metrics": metrics}
            try:
                json.dumps(body, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise JobFailed(ErrorCode.E_BADRESULT, f"result is not JSON: {exc}") from exc
            if core.signer is not None:  # signed once, here: a resend sends the same bytes
                body["result"] = await self._signed(held.job_id, output.result, metrics)
            await self._stage(held, Outcome.COMPLETED, "result", body, None, started)
        except JobFailed as exc:
            if not (exc.code is ErrorCode.E_BACKEND_UNAVAILABLE and await self._hand_off(
                    held, payload, constraints, exc.code, exc.message)):
                await self._stage_failure(held, exc.code, exc.message, exc.metrics, started)
        except TimeoutError:
            await self._stage_failure(held, ErrorCode.E_TIMEOUT,
                                      f"ran past its {self.timeout_for(payload):g}s limit", {},
                                      started)
        except asyncio.CancelledError:
            reason = held.cancel_reason
            if held.staged:
                pass  # cancelled while its outcome was being written: that outcome stands
            elif reason in (GPU_LOST_REASON, DRAIN_GRACE_REASON) and await self._hand_off(
                    held, payload, constraints,
                    ErrorCode.E_GPU_LOST if reason == GPU_LOST_REASON else ErrorCode.E_CANCELED,
                    reason):
                pass
            elif reason == GPU_LOST_REASON:
                await self._stage_failure(held, ErrorCode.E_GPU_LOST,
                                          f"GPU {held.slot.gpu_uuid if held.slot else '?'} was "
                                          "lost while the job ran", {}, started)
            else:
                await self._stage_failure(held, ErrorCode.E_CANCELED,
                                          f"canceled by {reason or 'shutdown'}", {}, started)
            if reason is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        except Exception as exc:  # a bug in a runner or here: report it, never lose the job
            await self._stage_failure(held, ErrorCode.E_INTERNAL,
                                      f"{type(exc).__name__}: {exc}", {}, started)
        finally:
            if core.telemetry is not None:
                core.telemetry.end_job(held.job_id)
            if held.slot is not None:
                core.pool.release(held.slot)
            core.held.pop(held.job_id, None)
            core.wake_poll.set()
            core.changed()

    async def _hand_off(self, held: HeldJob, payload: dict[str, Any],
                        constraints: dict[str, Any], code: ErrorCode, message: str) -> bool:
        """Give the job to the fleet's retry queue instead of failing it (docs/fleet.md).
        False (the job fails here as before): no fleet, or the fleet could not take it."""
        core, fleet = self.core, self.core.fleet
        if fleet is None or held.staged:
            return False
        held.staged = True  # from here on it is too late to cancel
        if not await fleet.hand_off(held.job_id, held.job_type, payload, constraints, code,
                                    message):
            held.staged = False
            return False
        try:
            await core.journal.mark_handed_off(held.job_id, f"{code.value}: {scrub(message)}")
        except Exception as exc:  # the fleet has it; our journal says running: on restart
            # it is staged E_INTERRUPTED, and the fleet's fencing lets only one outcome out
            log.error("job %s: handed to the fleet, but the journal refused to say so: %s",
                      held.job_id, exc, extra={"job_id": held.job_id})
        core.count(handed_off=1)
        core.emit(JobHandedOff(at=core.clock(), job_id=held.job_id, code=code.value,
                               reason=scrub(message),
                               message=f"job {held.job_id} handed to the fleet's retry queue "
                               f"({code.value}: {scrub(message)}); another rig runs it"))
        core.wake_session.set()  # the next heartbeat no longer counts it as ours
        return True

    async def _stage_failure(self, held: HeldJob, code: ErrorCode, message: str,
                             metrics: Mapping[str, Any], started: float | None) -> None:
        body = _failure_body(code, message, metrics, started)
        outcome = Outcome.CANCELED if code is ErrorCode.E_CANCELED else Outcome.FAILED
        await self._stage(held, outcome, "fail", body, code, started)

    async def rescue(self, held: HeldJob, exc: Exception) -> None:
        """An exception that escaped the claim or ``run`` (a bug, a journal that refused a
        write): the job still ends with one outcome, ``E_INTERNAL`` unless it has one, and
        the engine goes on. If even that cannot be written, the job is dropped with an
        error in the log (the coordinator's copy runs out its TTL)."""
        core, job_id = self.core, held.job_id
        what = f"{type(exc).__name__}: {exc}"
        log.error("job %s: %s escaped; failing it with E_INTERNAL", job_id, what, exc_info=exc,
                  extra={"job_id": job_id})
        held.staged = True
        try:
            record = await core.journal.get(job_id)
            if record is None:
                await core.journal.claim(job_id, {}, {})
            if record is None or record.state in ACTIVE_STATES:
                code = ErrorCode.E_INTERNAL
                await core.journal.stage(job_id, Outcome.FAILED, "fail",
                                         _failure_body(code, f"miner error: {what}", {}, None),
                                         code)
                core.count(failed=1)
            self.enqueue(job_id)
        except Exception as again:
            log.error("job %s: no outcome could be recorded either (%s: %s)", job_id,
                      type(again).__name__, again, extra={"job_id": job_id})
            core.wake_session.set()  # the heartbeat repairs the coordinator's in-flight count
        finally:
            if held.slot is not None and held.slot.job_id == job_id:
                core.pool.release(held.slot)
            if core.held.get(job_id) is held:
                del core.held[job_id]
            core.wake_poll.set()
            core.changed()

    async def _stage(self, held: HeldJob, outcome: Outcome, endpoint: str,
                     body: dict[str, Any], code: ErrorCode | None, started: float | None) -> None:
        """Commit the outcome and hand it to the outbox, whole, even if cancelled meanwhile:
        once an outcome exists it is the job's only one (``held.staged`` tells ``cancel``
        and the cancel handler that it is too late)."""
        held.staged = True
        commit = asyncio.ensure_future(self._commit(held, outcome, endpoint, body, code, started))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await commit
            raise

    async def _commit(self, held: HeldJob, outcome: Outcome, endpoint: str,
                      body: dict[str, Any], code: ErrorCode | None, started: float | None) -> None:
        core = self.core
        try:
            await asyncio.to_thread(
                workspace.write_outcome, core.workspace_root, held.job_id,
                {"outcome": outcome.value, "endpoint": endpoint, "body": body})
        except OSError as exc:  # the job fails, never the engine (docs/disk.md)
            failed = write_failed(core, exc, "result.json")
            log.warning("job %s: %s; %s", held.job_id, failed.message,
                        f"failing it with {failed.code.value}" if outcome is Outcome.COMPLETED
                        else "its outcome is kept in the journal only",
                        extra={"job_id": held.job_id})
            if outcome is Outcome.COMPLETED:  # a result the miner cannot keep is not sent
                outcome, endpoint, code = Outcome.FAILED, "fail", failed.code
                body = {"error_code": failed.code.value, "error_message": failed.message,
                        "metrics": body.get("metrics", {})}
        try:
            await core.journal.stage(held.job_id, outcome, endpoint, body, code)
        except Exception as exc:  # the journal's own disk: the job stays claimed/running there
            core.emit(OutcomeUnstaged(
                at=core.clock(), job_id=held.job_id, error=f"{type(exc).__name__}: {exc}",
                message=f"job {held.job_id}: the journal refused its outcome ({exc}); it is "
                "reported E_INTERRUPTED on the next start"))
            return
        duration = None if started is None else round(time.perf_counter() - started, 3)
        counter = {Outcome.COMPLETED: "completed", Outcome.CANCELED: "canceled"}.get(
            outcome, "failed")
        core.count(**{counter: 1})
        core.recent.append(OutcomeView(held.job_id, held.job_type, outcome.value,
                                       code.value if code else None, core.clock(), duration))
        text = f"job {held.job_id} {outcome.value}" + (
            f" ({code.value}: {body.get('error_message')})" if code else "")
        core.emit(JobFinished(at=core.clock(), job_id=held.job_id, outcome=outcome.value,
                              code=code.value if code else None, duration_s=duration,
                              slot=held.slot.slot_id if held.slot else None,
                              job_type=held.job_type, message=text))
        self.enqueue(held.job_id)

    async def _signed(self, job_id: str, result: dict[str, Any],
                      metrics: dict[str, Any]) -> dict[str, Any]:
        """The result with the rig's signature (docs/identity.md); a key that cannot sign
        fails the job: the rig never submits a result it has not signed."""
        assert self.core.signer is not None
        try:
            return await self.core.signer.sign(job_id, result, metrics)
        except RigKeyError as exc:
            raise JobFailed(ErrorCode.E_INTERNAL, f"the rig key could not sign: {exc}") from exc

    def _pid(self, held: HeldJob, pid: int) -> None:
        if self.core.telemetry is not None:
            self.core.telemetry.set_job_pids(held.job_id, [pid])

    def _gpu_metrics(self, held: HeldJob) -> dict[str, Any]:
        """Mean utilization and peak VRAM of a GPU job, in the upstream miner's keys (a
        runner that measures its own, like the inference runners, overrides them)."""
        if self.core.telemetry is None or held.slot is None or held.slot.gpu_uuid is None:
            return {}
        stats = self.core.telemetry.job_stats(held.job_id)
        if stats is None or not stats.samples:
            return {}
        metrics: dict[str, Any] = {}
        if isinstance(stats.mean_util_pct, int | float):
            metrics["gpu_utilization"] = round(float(stats.mean_util_pct), 1)
        if isinstance(stats.peak_vram_mib, int | float):
            metrics["memory_peak"] = int(stats.peak_vram_mib)
        return metrics

    def _progress(self, held: HeldJob, progress: Mapping[str, Any]) -> None:
        held.progress.update(progress)
        self.core.changed()

    def _log(self, held: HeldJob, line: str) -> None:
        self.core.emit(JobLogLine(at=self.core.clock(), job_id=held.job_id, line=line[-500:],
                                  message=line[-500:]))


def _failure_body(code: ErrorCode, message: str, metrics: Mapping[str, Any],
                  started: float | None) -> dict[str, Any]:
    """A ``/fail`` body; the message may quote the job, so it is scrubbed (a coordinator
    stores it as text)."""
    return {"error_code": code.value, "error_message": scrub(message),
            "metrics": {**metrics, "duration_ms": _ms_since(started)}}


def _ms_since(started: float | None) -> int:
    return 0 if started is None else int((time.perf_counter() - started) * 1000)
