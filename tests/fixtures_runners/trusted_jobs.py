"""Trusted functions the python-runner tests configure (``trusted_jobs:<name>``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any


def add(payload: dict[str, Any]) -> dict[str, Any]:
    return {"sum": payload["a"] + payload["b"]}


async def add_later(payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"sum": payload["a"] + payload["b"]}


def whoami(payload: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0),
            "job_id": os.environ.get("AITBC_JOB_ID"), "cwd": os.getcwd()}


def bad_result(payload: dict[str, Any]) -> set[int]:
    return {1, 2, 3}


def not_finite(payload: dict[str, Any]) -> float:
    return float("nan")


def boom(payload: dict[str, Any]) -> None:
    raise ValueError("the function failed on purpose")


def chatty(payload: dict[str, Any]) -> str:
    print("a line the function printed", flush=True)
    return "done"


def artifact(payload: dict[str, Any]) -> dict[str, Any]:
    size = int(payload.get("size", 10))
    with open(os.path.join(os.environ["AITBC_OUT_DIR"], payload.get("name", "a.bin")), "wb") as fh:
        fh.write(b"a" * size)
    return {"written": size}
