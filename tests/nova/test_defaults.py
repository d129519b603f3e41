# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Our defaults against Nova's own: `Scheduler()` with nothing configured must choose what a default Nova 34 chooses.

The other equivalence tests name the filters and weighers on both sides, so a wrong default would pass them.
Here Nova's side comes from its CONF alone (enabled_filters after the restated Placement checks, weight_classes =
all_weighers with their default multipliers) and ours from the registry's defaults.
"""

from __future__ import annotations

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler import registry
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.engine import OPTION_DEFAULTS
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import HostState

pytestmark = [
    pytest.mark.nova,
    pytest.mark.skipif(not os.path.exists(scenarios.NOVA_PYTHON),
                       reason="needs .venv-nova with Nova 34: run bash tests/nova/setup_venv.sh"),
]

RESOURCE_FILTERS = ["RamFilter", "DiskFilter", "CoreFilter", "AvailabilityZoneFilter"]
# Nova weighers we do not implement, and why they cannot matter for a new server with Nova's defaults.
NOT_IMPLEMENTED = {"ImagePropertiesWeigher": "multiplier 0.0 by default", "CrossCellWeigher": "weighs only moves"}


@pytest.fixture(scope="module")
def nova():
    runner = scenarios.NovaRunner()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def conf(nova):
    return nova.defaults()


@pytest.mark.parametrize("option", ["service_down_time", "max_io_ops_per_host", "max_instances_per_host",
                                    "host_subset_size", "max_attempts"])
def test_option_defaults_are_novas_conf(conf, option):
    assert OPTION_DEFAULTS[option] == conf[option]


def test_default_filters_are_the_placement_checks_then_novas_enabled_filters(conf):
    assert list(registry.DEFAULT_FILTERS) == RESOURCE_FILTERS + conf["enabled_filters"]


def test_default_weighers_and_multipliers_are_novas(conf):
    theirs = [name for name in conf["weighers"] if name not in NOT_IMPLEMENTED]
    assert list(registry.DEFAULT_WEIGHERS) == theirs  # same order too: weights are summed in it
    assert conf["multipliers"]["ImagePropertiesWeigher"] == 0.0
    plain_host = HostState.from_dict({"hostname": "h", "total_usable_ram_mb": 1, "total_usable_disk_gb": 1, "vcpus_total": 1})
    ours = {name: registry.WEIGHERS[name]({}).weight_multiplier(plain_host) for name in theirs}
    assert ours == {name: conf["multipliers"][name] for name in theirs}


def assert_same(nova, job):
    theirs = nova.run(job)
    mine, _seconds = scenarios.ours(job)
    assert (mine["error"], mine["hosts"], mine["alternates"]) == (theirs["error"], theirs["hosts"], theirs["alternates"])
    return theirs


@pytest.mark.parametrize("seed", range(25))
def test_defaults_choose_as_nova_single_server(nova, seed):
    rng = random.Random(3000 + seed)
    assert_same(nova, scenarios.default_job(scenarios.random_job(rng, rng.randint(1, 60), 1)))


@pytest.mark.parametrize("seed", range(25))
def test_defaults_choose_as_nova_many_servers(nova, seed):
    rng = random.Random(4000 + seed)
    assert_same(nova, scenarios.default_job(scenarios.random_job(rng, rng.randint(2, 40), rng.randint(2, 12))))


def test_defaults_on_a_plain_fleet_spread_many_servers(nova):
    job = scenarios.default_job(scenarios.random_job(random.Random(9), 200, 40, rich=False, seed=3))
    answer = assert_same(nova, job)
    assert len(answer["hosts"]) == 40 and len(set(answer["hosts"])) > 1
    assert len(answer["alternates"][0]) == OPTION_DEFAULTS["max_attempts"] - 1


def test_defaults_sum_the_weights_in_novas_order(nova):
    """Normalised, h0 has RAM 4/9 + disk 1 + CPU 8/9 and h1 RAM 1 + disk 1/3 + CPU 1: both 7/3 exactly, so the
    float sums decide, and they depend on the order. Summed in our registry's order h0 won; Nova picks h1."""
    common = {"total_usable_ram_mb": 10240, "total_usable_disk_gb": 10, "vcpus_total": 10, "cpu_allocation_ratio": 1.0}
    hosts = [dict(common, hostname="h0", free_ram_mb=4096, free_disk_mb=6144, vcpus_used=2),
             dict(common, hostname="h1", free_ram_mb=9216, free_disk_mb=2048, vcpus_used=1)]
    job = {"hosts": hosts, "request": {"flavor": {"vcpus": 1, "memory_mb": 512},
                                       "instance_uuids": [scenarios.server_uuid(0)], "hints": {}},
           "defaults": True, "options": {"seed": 1}}
    assert assert_same(nova, job)["hosts"] == ["h1"]
    job = dict(job, defaults=False, filters=scenarios.DEFAULT_FILTERS, weighers=list(registry.WEIGHERS), multipliers={})
    assert scenarios.ours(job)[0]["hosts"] == ["h0"]  # the registry order, which the defaults used before
