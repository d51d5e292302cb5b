"""Fixtures: a fake ``pynvml`` in ``sys.modules`` for one test, and ready-made fakes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aitbc_miner.gpu import Nvml, Sampler
from tests.fakes.fake_pynvml import FakeNvml, install

Install = Callable[[FakeNvml], FakeNvml]


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Install:
    """``fake_nvml(FakeNvml.with_gpus(4))``: that fake is ``import pynvml`` until the end."""
    return lambda fake: install(monkeypatch, fake)


@pytest.fixture
def sampler_for(fake_nvml: Install) -> Callable[..., tuple[FakeNvml, Sampler]]:
    """Install a fake and give a sampler over a fresh ``Nvml`` (which imports it lazily)."""

    def make(fake: FakeNvml, **kw: object) -> tuple[FakeNvml, Sampler]:
        fake_nvml(fake)
        return fake, Sampler(Nvml(), **kw)  # type: ignore[arg-type]

    return make
