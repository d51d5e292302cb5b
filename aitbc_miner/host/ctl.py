"""``aitbc-miner ctl``: talk to a running miner through its control socket.

``ctl events`` prints each event as the miner's own log line for it (same schema: ``ts``,
``level``, ``logger``, ``event``, ``msg``, fields); ``--format text`` as one short line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from ..codes import ExitCode
from ..engine.codec import event_from_json
from ..logs import event_line

COMMANDS = ("status", "pause", "resume", "drain", "undrain", "cancel", "events")


def run_ctl(socket_path: Path, command: str, job_id: str | None = None,
            exit_when_drained: bool = False, fmt: str | None = None) -> int:
    """``fmt``: text or json; None: text, but json log lines for ``events``."""
    as_json = fmt == "json" or (fmt is None and command == "events")
    try:
        found = socket_path.is_socket()
    except PermissionError:  # a folder on the way is closed to this user
        print(f"this user may not reach {socket_path} (see docs/control-socket.md)",
              file=sys.stderr)
        return ExitCode.FATAL
    if not found:
        print(f"no miner is running here (no control socket at {socket_path})", file=sys.stderr)
        return ExitCode.FATAL
    transport = httpx.HTTPTransport(uds=str(socket_path))
    with httpx.Client(transport=transport, base_url="http://miner", timeout=10.0) as http:
        try:
            if command == "status":
                response = http.get("/snapshot")
                if response.status_code == 200:
                    snapshot = response.json()
                    print(json.dumps(snapshot, indent=2) if as_json else _status(snapshot))
                    return ExitCode.OK
            elif command == "events":
                with http.stream("GET", "/events", timeout=None) as response:
                    for line in response.iter_lines():
                        if line.strip():
                            print(_event(line, as_json), flush=True)
                return ExitCode.OK if response.status_code == 200 else ExitCode.FATAL
            elif command == "cancel":
                response = http.post(f"/cancel/{job_id}")
            elif command == "drain":
                response = http.post("/drain", json={"exit_when_drained": exit_when_drained})
            else:
                response = http.post(f"/{command}")
        except httpx.TransportError as exc:
            print(f"the miner did not answer on {socket_path}: {exc}", file=sys.stderr)
            return ExitCode.FATAL
    answer = response.json()
    print(json.dumps(answer) if as_json else ", ".join(f"{k}: {v}" for k, v in answer.items()))
    return ExitCode.OK if response.status_code == 200 else ExitCode.FATAL


def _event(line: str, as_json: bool) -> str:
    """An event off the socket as the log line the miner wrote for it (or a short one)."""
    try:
        data = json.loads(line)
    except ValueError:
        return line
    if not isinstance(data, dict) or "event" not in data:
        return line
    event = event_from_json(data)
    level = event.log_severity() if event is not None else "INFO"  # a newer agent's event
    name, at, message = str(data.pop("event")), data.pop("at", 0.0), data.pop("message", "")
    out = event_line(name=name, level=level, at=float(at or 0.0), message=str(message),
                     fields={k: v for k, v in data.items() if v is not None})
    if as_json:
        return out
    record = json.loads(out)
    return f"{record['ts']} {record['level']:<7} {record['msg']}"


def _status(s: dict[str, Any]) -> str:
    c = s["connection"]
    lines = [f"{s['miner_id']} @ {c['url']}: {s['mode'].upper()}, link {c['link']}"
             + (f" ({c['reason']})" if c.get("reason") else "")]
    lines += [f"  WARNING: {text}" for text in s.get("warnings", ())]
    if s.get("disk", {}).get("low"):
        lines.append(f"  NOT CLAIMING: {s['disk']['reason']}")
    gpu = s.get("gpu", {})
    if gpu.get("simulated"):
        lines.append(f"  GPUs: SIMULATED ({len(gpu.get('gpus', []))}), no real GPU is used")
    elif gpu.get("message"):
        lines.append(f"  GPUs: {gpu['message']}")
    for slot in s["slots"]:
        lines.append(f"  {slot['slot_id']:<10} {slot['state']:<9} {slot['job_id'] or ''}")
    n = s["counters"]
    lines.append(f"  outbox {s['outbox']} · completed {n['completed']} · failed {n['failed']} · "
                 f"canceled {n['canceled']} · receipts {n['receipts']} "
                 f"(flagged {n['receipts_flagged']})")
    return "\n".join(lines)
