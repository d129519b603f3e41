# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Same input to Nova 34's own filter and weigher classes and to ours: the same hosts must be chosen.

Nova runs in .venv-nova (tests/nova/setup_venv.sh); jobs cross over as JSON lines to nova_runner.py.
"""

from __future__ import annotations

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios

pytestmark = [
    pytest.mark.nova,
    pytest.mark.skipif(not os.path.exists(scenarios.NOVA_PYTHON),
                       reason="needs .venv-nova with Nova 34: run bash tests/nova/setup_venv.sh"),
]


@pytest.fixture(scope="module")
def nova():
    runner = scenarios.NovaRunner()
    yield runner
    runner.close()


def assert_same(nova, job):
    theirs = nova.run(job)
    mine, _seconds = scenarios.ours(job)
    assert mine["error"] == theirs["error"]
    if theirs["error"] is None:
        assert mine["hosts"] == theirs["hosts"]
        assert mine["alternates"] == theirs["alternates"]
    return theirs


def test_plain_fleet_single_server(nova):
    job = scenarios.random_job(random.Random(7), 300, 1, rich=False, seed=1)
    answer = assert_same(nova, job)
    assert answer["hosts"] and len(answer["alternates"][0]) == 2


def test_plain_fleet_many_servers(nova):
    job = scenarios.random_job(random.Random(8), 200, 60, rich=False, seed=2)
    answer = assert_same(nova, job)
    assert len(answer["hosts"]) == 60
    assert len(set(answer["hosts"])) > 1  # consumption spreads the servers


@pytest.mark.parametrize("seed", range(40))
def test_rich_random_single_server(nova, seed):
    rng = random.Random(1000 + seed)
    assert_same(nova, scenarios.random_job(rng, rng.randint(1, 60), 1))


@pytest.mark.parametrize("seed", range(40))
def test_rich_random_many_servers(nova, seed):
    rng = random.Random(2000 + seed)
    assert_same(nova, scenarios.random_job(rng, rng.randint(1, 40), rng.randint(2, 12)))


def test_some_random_jobs_fail_on_both_sides(nova):
    """The generator must also reach NoValidHost, or the error comparison above proves nothing."""
    outcomes = set()
    for seed in range(40):
        rng = random.Random(1000 + seed)
        outcomes.add(nova.run(scenarios.random_job(rng, rng.randint(1, 60), 1))["error"])
    assert outcomes == {None, "NoValidHost"}


SOFT_ANTI_ONLY = {name: 0.0 for name in (  # every other weigher silent: the soft anti-affinity weigher decides
    "ram_weight_multiplier", "disk_weight_multiplier", "cpu_weight_multiplier", "io_ops_weight_multiplier",
    "num_instances_weight_multiplier", "hypervisor_version_weight_multiplier", "build_failure_weight_multiplier",
    "soft_affinity_weight_multiplier", "pci_weight_multiplier")}


@pytest.mark.parametrize("count", [1, 5])
def test_soft_anti_affinity_weigher_decides_as_in_nova(nova, count):
    members = [scenarios.server_uuid(n, 7) for n in range(4)]
    base = {"total_usable_ram_mb": 65536, "total_usable_disk_gb": 500, "vcpus_total": 32}
    hosts = [dict(base, hostname="h0", instances=members[:2]),  # most RAM, but two members: last
             dict(base, hostname="h1", instances=members[2:3], free_ram_mb=1024),
             dict(base, hostname="h2", free_ram_mb=2048),  # no member: first
             dict(base, hostname="h3", instances=members[3:], free_ram_mb=4096)]
    job = {"hosts": hosts, "request": {"flavor": {"vcpus": 1, "memory_mb": 512},
                                       "instance_uuids": [scenarios.server_uuid(n) for n in range(count)],
                                       "hints": {"group": {"policy": "soft-anti-affinity", "members": members}}},
           "filters": scenarios.DEFAULT_FILTERS, "weighers": scenarios.ALL_WEIGHERS, "multipliers": SOFT_ANTI_ONLY,
           "options": {"seed": 1}}
    answer = assert_same(nova, job)
    assert answer["hosts"][0] == "h2"  # a +1 sign would pick h0, the host with the most members
    if count > 1:
        # The new servers are members too; on a tie the previous order keeps the last chosen host first.
        assert answer["hosts"] == ["h2", "h2", "h1", "h3", "h3"]
