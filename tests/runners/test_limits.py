"""Entry limits override only what they name, and the rlimit stand-in for memory."""

from __future__ import annotations

from aitbc_miner.runners.allowlist import AllowEntry
from aitbc_miner.sandbox import Limits


def test_an_entry_overrides_only_the_limits_it_names():
    # Given operator defaults and an entry naming two limits, one of them lifted with null
    defaults = Limits(memory_mb=512, nice=5, processes=64)
    entry = AllowEntry.model_validate({"executable": "/usr/bin/true",
                                       "limits": {"nice": 12, "memory_mb": None}})
    # When merged
    merged = defaults.merged(entry.limits)
    # Then those two changed and every other default stayed
    assert (merged.nice, merged.memory_mb, merged.processes) == (12, None, 64)
    assert defaults.merged(None) is defaults


def test_without_a_memory_cgroup_memory_becomes_the_address_space_rlimit_except_for_gpus():
    limits = Limits(memory_mb=300)
    assert limits.rlimit_memory_mb(cgroup_memory=False, gpu=False) == 300
    assert limits.rlimit_memory_mb(cgroup_memory=True, gpu=False) is None
    assert limits.rlimit_memory_mb(cgroup_memory=False, gpu=True) is None
    assert Limits(address_space_mb=999).rlimit_memory_mb(cgroup_memory=True, gpu=True) == 999
