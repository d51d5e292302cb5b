"""One rig in a fleet: its lease, heartbeat and metrics history, the shared retry queue,
fenced delivery, and taking over a gone rig's work (the keys: docs/fleet.md).

``FleetRig`` is the engine's ``FleetLink`` (``core.fleet``); ``run()`` is its loops, run
beside the engine. SQLite stays the rig's source of truth: with Redis away the rig works
alone (its snapshot says ``fleet: Redis unreachable``) and catches up when Redis is back.

Rules that keep "nothing lost, nothing delivered twice":

- An outcome is given to the fleet (mirrored to Redis, and noted so in the journal first)
  just before its first send, and from then on sent only under a fencing token from
  Redis. An outcome staged while Redis is away is never mirrored and goes out alone.
- A rig whose lease ended more than a lease ago is gone: another rig adopts its mirrored
  outcomes (and delivers them, fenced) and puts the jobs it was running back in the
  retry queue. A rig that comes back under the same name does the same with whatever of
  its own it no longer knows (a new state dir).
- No rig takes over anything until it has held its own lease for a full lease since
  (re)joining, so that after a Redis outage every live rig has renewed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from ..codes import ErrorCode
from ..config.model import FleetSettings
from ..engine import Engine
from ..engine.fleetlink import Permit
from ..engine.snapshot import FleetStatus, Mode, SlotState, Snapshot
from ..journal import JobRecord, JobState, Outcome
from ..protocol import is_job_id
from ..untrusted import scrub
from .commands import follow_commands, stop_if_cancelled
from .connect import connect
from .fencing import DONE, DONE_TTL_S, GONE, PERMIT, RELEASE, RENEW, SETTLED_ALONE, Verdict
from .view import as_text, fleet_key, redis_problem

log = logging.getLogger("aitbc_miner.fleet")

GROUP = "rigs"  # the one consumer group of each retry stream: every rig reads in it
KINDS = ("cpu", "gpu")
MAX_HOPS = 8  # hand-offs of one job before a rig fails it where it is
IDLE_CLAIM_MS = 3000  # an entry read but not taken this long is taken by another rig
BLOCK_MS = 1000  # one blocking read (well under the client's socket timeout)
BOUNCE_S = 0.5  # after putting back an entry this rig may not run: let another read it
RETRY_S = 1.0  # Redis away: the next try to join
MAX_FIELD_CHARS = 1 << 20  # a payload or body read from Redis (outside input)
METRICS_BACKLOG = 1000  # samples kept while Redis is away, written when it returns

T = TypeVar("T")


class Away(Exception):
    """Redis is not reachable now (the fleet works alone until it is)."""


class FleetRig:
    def __init__(self, engine: Engine, settings: FleetSettings, *,
                 redis: Redis | None = None, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.core = engine, engine.core
        self.settings = settings
        self.fleet = settings.name
        self.rig_id = settings.rig_id or engine.core.tuning.miner_id
        self.redis = redis if redis is not None else connect(settings)
        self.lease_s = settings.lease_s
        self.grace_s = settings.lease_s  # gone = lease ended more than this long ago
        self.clock = clock
        self.up = False
        self.joined_at: float | None = None  # monotonic, when Redis last answered a join
        self._joined = asyncio.Event()
        self._wake = asyncio.Event()
        self._permit = self.redis.register_script(PERMIT)
        self._done = self.redis.register_script(DONE)
        self._release = self.redis.register_script(RELEASE)
        self._settled_alone = self.redis.register_script(SETTLED_ALONE)
        self._renew = self.redis.register_script(RENEW)
        self._gone = self.redis.register_script(GONE)
        self._pending_done: dict[str, int] = {}  # job -> token: settled while Redis was away
        self._metrics: deque[dict[str, str]] = deque(maxlen=METRICS_BACKLOG)
        self._claimed_by: dict[str, str] = {}  # fleet jobs running here: who claimed them
        self._hops: dict[str, int] = {}
        self._foreign: set[str] = set()  # jobs here that another rig claimed or staged
        self.lease_until: float | None = None
        engine.core.fleet = self
        self._status("joining", "connecting to Redis")

    def key(self, name: str) -> str:
        return fleet_key(self.fleet, name)

    # --- Redis up and down ------------------------------------------------------------

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        """One Redis round trip; ``Away`` (at once when Redis is known away)."""
        if not self.up:
            raise Away()
        try:
            return await op()
        except (redis_errors.RedisError, OSError) as exc:
            self._lost(exc)
            raise Away() from exc

    def _lost(self, exc: BaseException) -> None:
        problem = redis_problem(exc)
        why = str(problem) if problem is not None else f"{type(exc).__name__}: {exc}"
        if self.up or self.core.fleet_status.state != "unreachable":
            log.warning("fleet %s: Redis unreachable (%s); rig %s works alone on its journal "
                        "and rejoins when Redis answers", self.fleet, scrub(why), self.rig_id,
                        extra={"event_name": "fleet_unreachable"})
        self.up = False
        self.joined_at = None
        self._joined.clear()
        self._status("unreachable", scrub(why))
        self._wake.set()

    def _status(self, state: str, message: str | None) -> None:
        before = self.core.fleet_status
        since = before.since if before.state == state else self.clock()
        self.core.fleet_status = FleetStatus(state=state, fleet=self.fleet, rig_id=self.rig_id,
                                             message=message, since=since)
        self.core.changed()

    # --- the engine's hooks (FleetLink) -----------------------------------------------

    async def claimed(self, job_id: str, payload: Mapping[str, Any],
                      constraints: Mapping[str, Any]) -> None:
        """Note a job running here, so that if this rig dies another rig runs it."""
        if not self.up:
            return
        entry = json.dumps({"payload": payload, "constraints": constraints,
                            "claimed_by": self._claimed_by.get(job_id, self.rig_id),
                            "kind": self._kind(payload) or "cpu"}, default=str)
        with contextlib.suppress(Away):
            await self._call(lambda: self.redis.hset(self.key(f"running:{self.rig_id}"),
                                                      job_id, entry))

    async def hand_off(self, job_id: str, job_type: str, payload: Mapping[str, Any],
                       constraints: Mapping[str, Any], code: ErrorCode, message: str) -> bool:
        """Put a job this rig cannot finish in the retry queue of its slot kind."""
        hops = self._hops.pop(job_id, 0)
        kind = self._kind(payload)
        if not self.up or kind is None or hops >= MAX_HOPS:
            return False
        fields = {
            "job_id": job_id, "payload": json.dumps(payload, default=str),
            "constraints": json.dumps(constraints, default=str), "from_rig": self.rig_id,
            "claimed_by": self._claimed_by.pop(job_id, self.rig_id), "code": code.value,
            "reason": scrub(message, max_chars=500), "hops": str(hops + 1),
            "at": f"{self.clock():.3f}",
        }

        async def queue() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.key(f"retry:{kind}"), fields)  # type: ignore[arg-type]
                pipe.hdel(self.key(f"running:{self.rig_id}"), job_id)
                await pipe.execute()

        try:
            await self._call(queue)
        except Away:
            return False
        return True

    async def permit(self, record: JobRecord) -> Permit | None:
        """Before each send: the fencing token, ``done_by``, or ``None`` (wait, ask again)."""
        journal = self.core.journal
        row = await journal.fleet_job(record.job_id)
        if not (row and row["mirrored"]):
            if not self.up:
                return Permit()  # staged while Redis is away: never mirrored, ours alone
            # Noted before Redis has it: a crash in between leaves a rig that waits for
            # Redis rather than one that sends what another rig may also send.
            await journal.record_fleet(record.job_id, mirrored=True)
        if not self.up:
            return None
        mirror = json.dumps({
            "job_id": record.job_id, "endpoint": record.endpoint or "fail",
            "outcome": (record.outcome or Outcome.FAILED).value,
            "code": record.error_code or "", "job_type": record.job_type or "",
            "body": json.dumps(record.body or {}), "payload": json.dumps(record.payload),
            "constraints": json.dumps(record.constraints),
            "claimed_by": (row or {}).get("claimed_by") or self.rig_id,
            "ran_by": (row or {}).get("ran_by") or self.rig_id,
        }, default=str)
        try:
            answer = await self._call(lambda: self._permit(
                keys=[self.key(f"outcome:{record.job_id}"), self.key("rigs")],
                args=[self.rig_id, self.key(""), record.job_id, self.grace_s, mirror]))
        except Away:
            return None
        verdict = Verdict.of(answer)
        if verdict.word == "go":
            return Permit(token=verdict.token)
        if verdict.word == "done":
            return Permit(done_by=verdict.by)
        if verdict.word == "expired":
            self._wake.set()  # renew the lease now
        return None

    async def sent(self, record: JobRecord, permit: Permit) -> None:
        """The coordinator settled a send: mark the job done in the fleet."""
        job_id = record.job_id
        self._claimed_by.pop(job_id, None)
        self._hops.pop(job_id, None)
        if job_id in self._foreign:
            self._foreign.discard(job_id)
            self.core.wake_session.set()  # our /result released a job it never counted
            with contextlib.suppress(Exception):
                await self.core.journal.record_fleet(job_id, delivered_by=self.rig_id)
        if permit.token is None:
            with contextlib.suppress(Away):
                await self._call(lambda: self._settled_alone(
                    keys=[self.key(f"outcome:{job_id}"), self.key(f"running:{self.rig_id}")],
                    args=[self.rig_id, DONE_TTL_S, job_id]))
            return
        try:
            await self._mark_done(job_id, permit.token)
        except Away:
            self._pending_done[job_id] = permit.token

    async def unsent(self, record: JobRecord, permit: Permit) -> None:
        """The send did not reach the coordinator: the fleet's copy is "staged" again."""
        if permit.token is None:
            return
        token = permit.token
        with contextlib.suppress(Away):  # left "sending": an adopter treats it as uncertain
            await self._call(lambda: self._release(
                keys=[self.key(f"outcome:{record.job_id}")], args=[self.rig_id, token]))

    async def _mark_done(self, job_id: str, token: int) -> None:
        current = await self._call(lambda: self._done(
            keys=[self.key(f"outcome:{job_id}")],
            args=[self.rig_id, self.key(""), job_id, token, DONE_TTL_S]))
        if current != 1:
            log.error("fleet: job %s was taken over by another rig while this rig sent it "
                      "(fencing token %d is stale); the coordinator may hold two outcomes",
                      job_id, token, extra={"job_id": job_id, "event_name": "fleet_stale_fence"})

    # --- loops --------------------------------------------------------------------------

    async def run(self) -> None:
        """The fleet's loops, until cancelled; then the client is closed."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._membership(), name="fleet-membership")
                for kind in KINDS:
                    tg.create_task(self._take(kind), name=f"fleet-take-{kind}")
                tg.create_task(self._sweep(), name="fleet-sweep")
                tg.create_task(follow_commands(self.redis, self.fleet, self.rig_id, self._act,
                                               log, rescan_s=min(10.0, self.lease_s)),
                               name="fleet-commands")
        finally:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def _membership(self) -> None:
        """Join (again), then renew the lease and write heartbeat and metrics, 3x a lease."""
        sampled = -self.lease_s
        while True:
            stop_if_cancelled()  # each of these loops: a cancel redis-py swallowed
            if time.monotonic() - sampled >= self.lease_s / 3:
                sampled = time.monotonic()
                self._metrics.append(self._metrics_sample(self.core.snapshot()))
            try:
                if not self.up:
                    await self._join()
                await self._beat()
                delay = self.lease_s / 3
            except (redis_errors.RedisError, OSError) as exc:
                self._lost(exc)
                delay = RETRY_S
            except Away:
                delay = RETRY_S
            except Exception:  # a bug: said loudly, and the rig goes on (alone, if need be)
                log.exception("fleet: heartbeat failed")
                delay = RETRY_S
            self._wake.clear()
            # asyncio.wait, not asyncio.timeout: on 3.11 a cancel that lands as the timeout
            # expires is turned into a TimeoutError, and a suppressed one is lost.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=delay)
            finally:
                waiter.cancel()

    async def _join(self) -> None:
        redis = self.redis
        # Connections from before an outage are dead: drop them all, not one per error.
        await redis.connection_pool.disconnect()
        await redis.ping()
        await self._renew_lease()
        for kind in KINDS:
            with contextlib.suppress(redis_errors.ResponseError):  # BUSYGROUP: it exists
                await redis.xgroup_create(self.key(f"retry:{kind}"), GROUP, id="0",
                                          mkstream=True)
        self.up = True
        self.joined_at = time.monotonic()
        for job_id, token in list(self._pending_done.items()):
            await self._mark_done(job_id, token)
            self._pending_done.pop(job_id, None)
        await self._reconcile()
        self._joined.set()
        self._status("joined", f"rig {self.rig_id} in fleet {self.fleet}")
        log.info("fleet %s: rig %s joined (lease %gs)", self.fleet, self.rig_id, self.lease_s,
                 extra={"event_name": "fleet_joined"})

    async def _renew_lease(self) -> None:
        answer = await self._renew(keys=[self.key("rigs")], args=[self.rig_id, self.lease_s])
        self.lease_until = float(answer[1])

    async def _beat(self) -> None:
        await self._call(self._renew_lease)
        snap = self.core.snapshot()
        samples = list(self._metrics)

        async def write() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.key(f"rig:{self.rig_id}"),
                          mapping=self._heartbeat(snap))  # type: ignore[arg-type]
                for sample in samples:
                    pipe.xadd(self.key(f"metrics:{self.rig_id}"), sample,  # type: ignore[arg-type]
                              maxlen=self.settings.history, approximate=True)
                await pipe.execute()

        await self._call(write)
        for _ in samples:
            self._metrics.popleft()

    async def _reconcile(self) -> None:
        """After (re)joining: what Redis holds as this rig's and the journal does not know
        (a new state dir) is handed on; what the journal settled meanwhile is marked."""
        journal = self.core.journal
        running = _texts(await self.redis.hgetall(self.key(f"running:{self.rig_id}")))
        for job_id, raw in running.items():
            if job_id in self.core.held:
                continue
            record = await journal.get(job_id)
            if record is None:
                await self._requeue(self.rig_id, job_id, raw, "the rig restarted without it")
            elif record.state in (JobState.DELIVERED, JobState.REJECTED):
                await self._settled_alone(
                    keys=[self.key(f"outcome:{job_id}"), self.key(f"running:{self.rig_id}")],
                    args=[self.rig_id, DONE_TTL_S, job_id])
            else:
                await self.redis.hdel(self.key(f"running:{self.rig_id}"), job_id)
        for job_id, held in list(self.core.held.items()):  # claimed while Redis was away
            if job_id not in running and held.task is not None and not held.staged:
                record = await journal.get(job_id)
                if record is not None:
                    await self.claimed(job_id, record.payload, record.constraints)
        for member in await self.redis.smembers(self.key(f"outcomes:{self.rig_id}")):
            job_id = as_text(member)
            if await journal.get(job_id) is None:
                await self._adopt(job_id, self.rig_id)

    async def _take(self, kind: str) -> None:
        """Take jobs from the retry queue of ``kind`` while a slot of that kind is free."""
        stream = self.key(f"retry:{kind}")
        while True:
            stop_if_cancelled()
            await self._joined.wait()
            await self.core.wait_until(lambda s: _free_slot(s, kind), timeout=None)
            try:
                answer: Any = await self._call(lambda: self.redis.xreadgroup(
                    GROUP, self.rig_id, {stream: ">"}, count=1, block=BLOCK_MS))
                entries = answer[0][1] if answer else []
                if not entries:
                    claimed: Any = await self._call(lambda: self.redis.xautoclaim(
                        stream, GROUP, self.rig_id, IDLE_CLAIM_MS, "0-0", count=1))
                    entries = claimed[1] if claimed else []
                for entry_id, fields in entries:
                    if fields:
                        await self._consider(stream, entry_id, fields)
            except Away:
                await asyncio.sleep(RETRY_S)
            except redis_errors.ResponseError as exc:  # NOGROUP after a Redis that forgot
                self._lost(exc)
                await asyncio.sleep(RETRY_S)
            except Exception:  # a bug, or Redis content we did not expect: go on
                log.exception("fleet: taking a job from the retry queue failed")
                await asyncio.sleep(RETRY_S)

    async def _consider(self, stream: str, entry_id: str, fields: Mapping[str, str]) -> None:
        job_id = fields.get("job_id")
        payload = _json_object(fields.get("payload"))
        constraints = _json_object(fields.get("constraints"))
        if not is_job_id(job_id) or payload is None or constraints is None:
            log.error("fleet: retry entry %s is malformed; it is dropped", scrub(entry_id))
            await self._ack(stream, entry_id)
            return
        from_rig = scrub(str(fields.get("from_rig") or "?"), max_chars=128)
        claimed_by = scrub(str(fields.get("claimed_by") or from_rig), max_chars=128)
        hops = int(h) if (h := str(fields.get("hops", "1"))).isdigit() else MAX_HOPS
        if from_rig != self.rig_id:
            self._claimed_by[job_id] = claimed_by
            self._hops[job_id] = hops
            if await self.engine.run_fleet_job(job_id, payload, constraints,
                                               claimed_by=claimed_by, handed_by=from_rig):
                self._foreign.add(job_id)
                log.info("fleet: took job %s from rig %s (%s)", job_id, from_rig,
                         scrub(str(fields.get("code", ""))),
                         extra={"job_id": job_id, "event_name": "fleet_job_taken"})
                await self._ack(stream, entry_id)
                return
            self._claimed_by.pop(job_id, None)
            self._hops.pop(job_id, None)
        # This rig handed it off, or knows it already: put it back for another rig.
        await self._ack(stream, entry_id, again={**fields})
        await asyncio.sleep(BOUNCE_S)

    async def _ack(self, stream: str, entry_id: str,
                   again: dict[str, str] | None = None) -> None:
        async def ack() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(stream, GROUP, entry_id)
                pipe.xdel(stream, entry_id)
                if again is not None:
                    pipe.xadd(stream, again)  # type: ignore[arg-type]
                await pipe.execute()

        await self._call(ack)

    async def _sweep(self) -> None:
        """Take over the work of rigs gone for more than a lease (never before this rig has
        itself held its lease for a full lease since joining)."""
        while True:
            stop_if_cancelled()
            await asyncio.sleep(self.lease_s / 2)
            if not self.up or self.joined_at is None:
                continue
            if time.monotonic() - self.joined_at < self.lease_s:
                continue
            try:
                gone = await self._call(lambda: self._gone(keys=[self.key("rigs")],
                                                           args=[self.grace_s]))
                for rig in gone:
                    if rig != self.rig_id:
                        await self._take_over(str(rig))
            except Away:
                continue
            except Exception:  # a bug, or Redis content we did not expect: next round
                log.exception("fleet: taking over a gone rig's work failed; trying again")

    async def _take_over(self, rig: str) -> None:
        redis = self.redis
        lock = await self._call(lambda: redis.set(self.key(f"sweep:{rig}"), self.rig_id,
                                                  nx=True, ex=max(1, int(self.lease_s))))
        if not lock:
            return
        running = _texts(await self._call(lambda: redis.hgetall(self.key(f"running:{rig}"))))
        for job_id, raw in running.items():
            await self._requeue(rig, job_id, raw, f"rig {rig} is gone")
        outcomes = await self._call(lambda: redis.smembers(self.key(f"outcomes:{rig}")))
        for member in outcomes:
            await self._adopt(as_text(member), rig)

    async def _requeue(self, rig: str, job_id: str, raw: str, why: str) -> None:
        """A job ``rig`` was running goes back to the retry queue (atomically)."""
        entry = _json_object(raw) or {}
        kind = entry.get("kind") if entry.get("kind") in KINDS else "cpu"
        fields = {
            "job_id": job_id, "payload": json.dumps(entry.get("payload") or {}),
            "constraints": json.dumps(entry.get("constraints") or {}),
            "from_rig": rig, "claimed_by": str(entry.get("claimed_by") or rig),
            "code": ErrorCode.E_INTERRUPTED.value, "reason": why, "hops": "1",
            "at": f"{self.clock():.3f}",
        }

        async def move() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(self.key(f"running:{rig}"))
                if not await pipe.hexists(self.key(f"running:{rig}"), job_id):
                    return  # another rig moved it first
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.xadd(self.key(f"retry:{kind}"), fields)  # type: ignore[arg-type]
                pipe.hdel(self.key(f"running:{rig}"), job_id)
                with contextlib.suppress(redis_errors.WatchError):
                    await pipe.execute()

        await self._call(move)
        log.warning("fleet: job %s that rig %s was running goes back to the retry queue (%s)",
                    job_id, rig, why, extra={"job_id": job_id, "event_name": "fleet_requeued"})

    async def _adopt(self, job_id: str, rig: str) -> None:
        """Deliver a mirrored outcome of ``rig`` from here (fenced: see ``permit``)."""
        if not is_job_id(job_id):
            return
        data = _texts(await self._call(
            lambda: self.redis.hgetall(self.key(f"outcome:{job_id}"))))
        if not data or data.get("state") == "done":
            return
        record = _record(job_id, data)
        if record is None:
            log.error("fleet: the outcome of job %s in Redis is malformed; not adopted",
                      job_id)
            return
        # "sending": the gone rig asked to send it and never said how that ended.
        if await self.engine.adopt_outcome(record, claimed_by=data.get("claimed_by") or rig,
                                           ran_by=data.get("ran_by") or rig,
                                           maybe_sent=data.get("state") == "sending"):
            self._foreign.add(job_id)
            log.warning("fleet: delivering the outcome of job %s that rig %s staged", job_id,
                        rig, extra={"job_id": job_id, "event_name": "fleet_outcome_adopted"})

    # --- commands, heartbeat ----------------------------------------------------------

    async def _act(self, command: str, user: str) -> None:
        actions: dict[str, Callable[[], None]] = {
            "pause": self.engine.pause, "resume": self.engine.resume,
            "drain": self.engine.drain, "undrain": self.engine.undrain,
        }
        action = actions.get(command)
        if action is None:
            log.warning("fleet: unknown command %r from Redis user %s ignored",
                        scrub(command), scrub(user))
            return
        log.warning("fleet: %s asked by Redis user %s", command, scrub(user),
                    extra={"event_name": "fleet_command", "command": command,
                           "user": scrub(user)})
        action()

    def _kind(self, payload: Mapping[str, Any]) -> str | None:
        try:
            return self.core.registry.for_payload(payload).slot_kind.value
        except Exception:  # unknown type, backend down: the runner's own answer
            job_type = payload.get("type")
            runner = next((r for r in self.core.registry.runners
                           if job_type in getattr(r, "job_types", ())), None)
            return runner.slot_kind.value if runner is not None else None

    def _heartbeat(self, snap: Snapshot) -> dict[str, str]:
        gpus = [{"index": g.index, "name": g.name, "util_pct": g.util_gpu_pct,
                 "mem_used_mib": g.memory_used_mb, "mem_total_mib": g.memory_total_mb,
                 "temp_c": g.temperature_c, "power_w": g.power_w} for g in snap.gpu.gpus]
        beat = {
            "state": snap.mode.value, "seen": f"{self.clock():.3f}",
            "lease_until": f"{self.lease_until or 0:.3f}",
            "coordinator": snap.connection.url, "version": snap.version,
            "slots": str(sum(1 for s in snap.slots if s.state is not SlotState.LOST)),
            "running": str(snap.running), "outbox": str(snap.outbox),
            "completed": str(snap.counters.completed), "failed": str(snap.counters.failed),
            "earned": str(snap.earnings.verified.amount),
            "earned_per_hour": str(snap.earnings.per_hour_last_hour),
            "gpus": json.dumps(gpus), "problems": json.dumps(_problems(snap)),
        }
        # The dialect as the coordinator's answers show it: only 2026-08 lists a miner's
        # jobs (the earnings call); unknown until the rig has asked.
        lookup = snap.connection.lookup_supported
        if lookup is not None:
            beat["dialect"] = "2026-08" if lookup else "2026-01"
        return beat

    def _metrics_sample(self, snap: Snapshot) -> dict[str, str]:
        utils = [g.util_gpu_pct for g in snap.gpu.gpus if g.util_gpu_pct is not None]
        power = [g.power_w for g in snap.gpu.gpus if g.power_w is not None]
        return {
            "ts": f"{self.clock():.3f}", "completed": str(snap.counters.completed),
            "failed": str(snap.counters.failed), "earned": str(snap.earnings.verified.amount),
            "gpu_util_pct": f"{sum(utils) / len(utils):.1f}" if utils else "",
            "power_w": f"{sum(power):.1f}" if power else "", "outbox": str(snap.outbox),
            "problems": str(len(_problems(snap))),
        }


def _free_slot(snap: Snapshot, kind: str) -> bool:
    """Whether this rig would start a job of ``kind`` now (and claim nothing beyond its
    slots: the coordinator's jobs and the fleet's share them)."""
    if snap.mode is not Mode.RUNNING:
        return False
    usable = sum(1 for s in snap.slots if s.state is not SlotState.LOST)
    return (len(snap.jobs) + snap.outbox < usable
            and any(s.kind == kind and s.state is SlotState.IDLE for s in snap.slots))


def _problems(snap: Snapshot) -> list[str]:
    problems = list(snap.warnings)
    if snap.connection.link.value not in ("registered",):
        problems.append(f"coordinator: {snap.connection.link.value}"
                        + (f" ({snap.connection.reason})" if snap.connection.reason else ""))
    if snap.disk.low and snap.disk.reason:
        problems.append(snap.disk.reason)
    problems += [f"GPU {g.index} lost" for g in snap.gpu.gpus if g.state == "lost"]
    return [scrub(p, max_chars=200) for p in problems]


def _texts(answer: Mapping[Any, Any]) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in answer.items()}


def _json_object(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _record(job_id: str, data: Mapping[str, str]) -> JobRecord | None:
    """A mirrored outcome as a journal record to stage here, or None if malformed."""
    body, payload = _json_object(data.get("body")), _json_object(data.get("payload"))
    constraints = _json_object(data.get("constraints"))
    endpoint = data.get("endpoint")
    outcome = data.get("outcome")
    if (body is None or payload is None or constraints is None
            or endpoint not in ("result", "fail") or outcome not in set(Outcome)):
        return None
    return JobRecord(
        job_id=job_id, state=JobState.STAGED, job_type=data.get("job_type") or None,
        payload=payload, constraints=constraints, slot=None, outcome=Outcome(outcome),
        error_code=data.get("code") or None, endpoint=endpoint, body=body, attempts=0,
        last_error=None, claimed_at=time.time(), started_at=None, finished_at=None,
        delivered_at=None)

