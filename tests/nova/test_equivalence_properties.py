# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Hypothesis against Nova: ties, zero capacity, allocation ratios below 1, host_subset_size, many servers."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios

pytestmark = [
    pytest.mark.nova,
    pytest.mark.skipif(not os.path.exists(scenarios.NOVA_PYTHON),
                       reason="needs .venv-nova with Nova 34: run bash tests/nova/setup_venv.sh"),
]

small = st.sampled_from([0, 1, 2, 1024, 2048, 4096])  # few distinct values: many exact ties
ratio = st.sampled_from([0.0, 0.5, 1.0, 1.5, 4.0])


@st.composite
def hosts(draw):
    n = draw(st.integers(1, 7))
    out = []
    for i in range(n):
        ram = draw(small)
        cpus = draw(st.sampled_from([0, 1, 2, 8]))
        disk = draw(st.sampled_from([0, 1, 2, 40]))
        out.append({
            "hostname": "h%d" % i, "total_usable_ram_mb": ram, "free_ram_mb": draw(st.sampled_from([ram, ram // 2, 0, -512])),
            "total_usable_disk_gb": disk, "free_disk_mb": draw(st.sampled_from([disk * 1024, 0, 1024])),
            "vcpus_total": cpus, "vcpus_used": draw(st.integers(0, 4)), "num_io_ops": draw(st.integers(0, 2)),
            "num_instances": draw(st.integers(0, 2)), "failed_builds": draw(st.integers(0, 1)),
            "hypervisor_version": draw(st.sampled_from([0, 8000000, 9000000])),
            "ram_allocation_ratio": draw(ratio), "disk_allocation_ratio": draw(ratio), "cpu_allocation_ratio": draw(ratio),
        })
    return out


@pytest.fixture(scope="module")
def nova():
    runner = scenarios.NovaRunner()
    yield runner
    runner.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hosts=hosts(), count=st.integers(1, 5), vcpus=st.sampled_from([1, 2]), memory_mb=st.sampled_from([16, 512, 1024]),
       root_gb=st.sampled_from([0, 1]), swap=st.sampled_from([0, 512]), subset=st.sampled_from([1, 1, 2, 5]),
       io_ops_multiplier=st.sampled_from([-1.0, 0.0, 2.0]), seed=st.integers(0, 3))
def test_same_choices_as_nova(nova, hosts, count, vcpus, memory_mb, root_gb, swap, subset, io_ops_multiplier, seed):
    job = {
        "hosts": hosts,
        "request": {"flavor": {"vcpus": vcpus, "memory_mb": memory_mb, "root_gb": root_gb, "swap": swap},
                    "instance_uuids": [scenarios.server_uuid(n) for n in range(count)], "hints": {}},
        "filters": [*scenarios.DEFAULT_FILTERS, "IoOpsFilter"], "weighers": scenarios.ALL_WEIGHERS,
        "multipliers": {"io_ops_weight_multiplier": io_ops_multiplier},
        "options": {"seed": seed, "host_subset_size": subset, "max_io_ops_per_host": 4},
    }
    theirs = nova.run(job)
    mine, _seconds = scenarios.ours(job)
    assert (mine["error"], mine["hosts"], mine["alternates"]) == (theirs["error"], theirs["hosts"], theirs["alternates"])
