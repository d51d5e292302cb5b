"""The engine's side of a fleet of rigs: the few places a fleet acts inside the engine.

A fleet (``aitbc_miner/fleet/``, on Redis) plugs in as ``core.fleet``; with no fleet
configured it is ``None`` and the engine runs exactly as a lone rig. The engine never
imports Redis: it only calls the :class:`FleetLink` methods below, each of which returns
quickly and never raises (Redis being away is the fleet's business: docs/fleet.md).

- ``claimed``: a job was journaled as ours (the fleet notes it, so that if this rig dies
  another rig can run it).
- ``hand_off``: a job this rig cannot finish for a local reason (its GPU was lost, its
  LLM backend is down, a drain's deadline came, it has no slot of the job's kind) goes to
  the fleet's retry queue instead of failing. True: the fleet took it.
- ``permit``: before each send of an outcome, the fleet says whether this rig may send it
  (a fencing token), must not (another rig delivered it), or must wait (``None``).
- ``sent``: the coordinator settled that send; the fleet marks the job done.
- ``unsent``: that send provably did not reach the coordinator (it is sent again later).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..codes import ErrorCode
from ..journal import JobRecord

#: Why a job may go to the fleet instead of failing: the rig's own trouble, not the job's.
HANDOFF_CODES = frozenset({ErrorCode.E_GPU_LOST, ErrorCode.E_BACKEND_UNAVAILABLE,
                           ErrorCode.E_UNSUPPORTED, ErrorCode.E_CANCELED})
#: How long a delivery waits when the fleet asks it to (an outcome in the fleet's care
#: while Redis is away, or one another live rig is delivering).
FLEET_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Permit:
    """The fleet's answer before a send.

    ``token``: the fencing token of this send (``None``: the outcome was never given to
    the fleet, so it is this rig's alone and needs none). ``done_by``: another rig already
    delivered the job; this rig must not send it.
    """

    token: int | None = None
    done_by: str | None = None


class FleetLink(Protocol):
    rig_id: str

    async def claimed(self, job_id: str, payload: Mapping[str, Any],
                      constraints: Mapping[str, Any]) -> None: ...

    async def hand_off(self, job_id: str, job_type: str, payload: Mapping[str, Any],
                       constraints: Mapping[str, Any], code: ErrorCode,
                       message: str) -> bool: ...

    async def permit(self, record: JobRecord) -> Permit | None: ...

    async def sent(self, record: JobRecord, permit: Permit) -> None: ...

    async def unsent(self, record: JobRecord, permit: Permit) -> None: ...
