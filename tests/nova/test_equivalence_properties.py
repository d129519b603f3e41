# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Hypothesis against Nova: ties, zero capacity, allocation ratios below 1, host_subset_size, many servers.

Ties get their own generator (clone hosts: a template or two copied with at most one field changed, so most
hosts share every raw weight) and fixed identical-host jobs: on a tie Nova's order is the previous server's
list, then input order, and nothing else in these tests would notice that order being wrong.
"""

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


MEMBERS = [scenarios.server_uuid(n, 9) for n in range(3)]
host_template = st.fixed_dictionaries({
    "total_usable_ram_mb": st.sampled_from([4096, 8192]), "total_usable_disk_gb": st.sampled_from([40, 80]),
    "vcpus_total": st.sampled_from([4, 8]), "num_io_ops": st.sampled_from([0, 1]), "num_instances": st.sampled_from([0, 1]),
    "hypervisor_version": st.sampled_from([8000000, 9000000]), "cpu_allocation_ratio": st.sampled_from([1.0, 4.0]),
})
VARIATIONS = {"free_ram_mb": [2048, 4096], "num_io_ops": [0, 2], "vcpus_used": [0, 2], "num_instances": [0, 3],
              "hypervisor_version": [7002000, 9000000], "failed_builds": [0, 1], "instances": [[], MEMBERS[:1], MEMBERS[1:]]}


@st.composite
def clone_hosts(draw):
    """2-8 copies of one or two templates, each with at most one field changed: many exact ties."""
    templates = draw(st.lists(host_template, min_size=1, max_size=2))
    out = []
    for i in range(draw(st.integers(2, 8))):
        host = dict(draw(st.sampled_from(templates)), hostname="h%d" % i)
        field = draw(st.sampled_from([None, None, *sorted(VARIATIONS)]))
        if field is not None:
            host[field] = draw(st.sampled_from(VARIATIONS[field]))
        out.append(host)
    return out


def tie_job(hosts, count, subset=1, seed=0, multipliers=None, group=None):
    hints = {"group": {"policy": group, "members": list(MEMBERS)}} if group else {}
    return {
        "hosts": hosts,
        "request": {"flavor": {"vcpus": 1, "memory_mb": 512, "root_gb": 1},
                    "instance_uuids": [scenarios.server_uuid(n) for n in range(count)], "hints": hints},
        "filters": scenarios.DEFAULT_FILTERS, "weighers": scenarios.ALL_WEIGHERS, "multipliers": multipliers or {},
        "options": {"seed": seed, "host_subset_size": subset},
    }


def assert_same(nova, job):
    theirs = nova.run(job)
    mine, _seconds = scenarios.ours(job)
    assert (mine["error"], mine["hosts"], mine["alternates"]) == (theirs["error"], theirs["hosts"], theirs["alternates"])
    return theirs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hosts=clone_hosts(), count=st.integers(1, 8), subset=st.sampled_from([1, 1, 2, 3]), seed=st.integers(0, 3),
       ram=st.sampled_from([1.0, -1.0, 0.0]), num_instances=st.sampled_from([0.0, -1.0, 1.0]),
       group=st.sampled_from([None, "soft-affinity", "soft-anti-affinity", "anti-affinity", "affinity"]))
def test_ties_choose_as_nova(nova, hosts, count, subset, seed, ram, num_instances, group):
    multipliers = {"ram_weight_multiplier": ram, "num_instances_weight_multiplier": num_instances}
    assert_same(nova, tie_job(hosts, count, subset, seed, multipliers, group))


IDENTICAL = [{"hostname": "h%d" % i, "total_usable_ram_mb": 8192, "total_usable_disk_gb": 100, "vcpus_total": 8}
             for i in range(5)]


@pytest.mark.parametrize(("count", "subset", "seed", "multipliers"), [
    (1, 1, 0, {}),  # first in input order
    (7, 1, 0, {}),  # spreading over equal hosts: the order among the untouched ones is the input order
    (7, 1, 0, {"ram_weight_multiplier": -1.0}),  # stacking
    (6, 3, 7, {}),  # random among the top 3 of a tied list: which 3 depends on the order
    (1, 4, 2, {}),
    (12, 2, 5, {"io_ops_weight_multiplier": 0.0, "ram_weight_multiplier": 0.0, "cpu_weight_multiplier": 0.0,
                "disk_weight_multiplier": 0.0}),  # nothing weighs: every server is a tie over all hosts
])
def test_identical_hosts_choose_as_nova(nova, count, subset, seed, multipliers):
    answer = assert_same(nova, tie_job(IDENTICAL, count, subset, seed, multipliers))
    assert len(answer["hosts"]) == count


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
