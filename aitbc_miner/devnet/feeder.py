"""Demo feeder: keep N jobs queued at a coordinator through the client route.

It mixes the job types a demo miner can run (sleep, echo, sha256) with an occasional
type it should refuse (transcribe), from a seeded random source so runs repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
from typing import Any

import httpx

from ..protocol import API_PREFIX

DEFAULT_MIX: dict[str, float] = {"sleep": 0.4, "echo": 0.3, "sha256": 0.25, "transcribe": 0.05}
# The demo's mix when it runs a reference Ollama on simulated GPUs.
DEMO_MIX: dict[str, float] = {"inference": 0.45, "sleep": 0.25, "echo": 0.1, "sha256": 0.15,
                              "transcribe": 0.05}
DEMO_MODELS = ("llama3.2:latest", "mistral:7b")
PROMPT_WORDS = ("explain", "the", "GPU", "market", "in", "one", "short", "poem", "about",
                "tokens", "receipts", "and", "miners", "please", "briefly")


def make_payload(rng: random.Random, mix: dict[str, float] = DEFAULT_MIX) -> dict[str, Any]:
    """One job payload drawn from ``mix`` (type -> weight)."""
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    if kind == "sleep":
        return {"type": "sleep", "seconds": round(rng.uniform(0.1, 2.0), 2)}
    if kind in ("echo", "sha256"):
        data = "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(4, 48)))
        return {"type": kind, "data": data}
    if kind == "inference":
        prompt = " ".join(rng.choices(PROMPT_WORDS, k=rng.randint(4, 12)))
        return {"type": "inference", "prompt": prompt, "model": rng.choice(DEMO_MODELS)}
    return {"type": kind, "url": "https://example.invalid/audio.wav", "model": "whisper-small"}


class Feeder:
    """Tops the coordinator's queue up to ``target`` jobs it submitted and still sees QUEUED."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        target: int = 5,
        seed: int = 0,
        interval: float = 0.5,
        ttl_seconds: int = 900,
        mix: dict[str, float] = DEFAULT_MIX,
    ) -> None:
        self.base_url = base_url.rstrip("/") + API_PREFIX
        self.headers = headers
        self.target = target
        self.interval = interval
        self.ttl_seconds = ttl_seconds
        self.mix = mix
        self.rng = random.Random(seed)
        self.queued: set[str] = set()

    async def _still_queued(self, http: httpx.AsyncClient) -> None:
        for job_id in list(self.queued):
            response = await http.get(f"/jobs/{job_id}")
            if response.status_code != 200 or response.json().get("state") != "QUEUED":
                self.queued.discard(job_id)

    async def top_up(self, http: httpx.AsyncClient) -> int:
        """One round: refresh what is still queued, submit the shortfall. Returns # submitted."""
        await self._still_queued(http)
        added = 0
        while len(self.queued) < self.target:
            body = {"payload": make_payload(self.rng, self.mix), "ttl_seconds": self.ttl_seconds}
            response = await http.post("/jobs", json=body)
            response.raise_for_status()
            job_id = response.json()["job_id"]
            self.queued.add(job_id)
            added += 1
        return added

    async def run(self) -> None:
        """Until cancelled; transient HTTP errors are skipped to the next round."""
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=10.0
        ) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    await self.top_up(http)
                await asyncio.sleep(self.interval)

    def client(self) -> httpx.AsyncClient:
        """A client configured like ``run``'s, for driving ``top_up`` by hand."""
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=10.0)
