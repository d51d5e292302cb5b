"""``aitbc-miner ctl``: talk to a running miner through its control socket."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from ..codes import ExitCode

COMMANDS = ("status", "pause", "resume", "drain", "undrain", "cancel", "events")


def run_ctl(socket_path: Path, command: str, job_id: str | None = None,
            exit_when_drained: bool = False, as_json: bool = False) -> int:
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
                        print(line, flush=True)
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


def _status(s: dict) -> str:
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
