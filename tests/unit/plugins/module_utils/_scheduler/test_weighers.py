# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Weighers: raw values, multipliers (defaults, overrides, aggregate metadata) and Nova's normalisation."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.engine import Scheduler
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import NoValidHost, SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.registry import WEIGHERS

from .helpers import host, spec

MEMBER = "40000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(("name", "fields", "raw"), [
    ("RAMWeigher", {"free_ram_mb": 1000}, 1000),
    ("DiskWeigher", {"free_disk_mb": 7}, 7),
    ("CPUWeigher", {"vcpus_total": 4, "cpu_allocation_ratio": 1.5, "vcpus_used": 2}, 4.0),
    ("IoOpsWeigher", {"num_io_ops": 3}, 3),
    ("NumInstancesWeigher", {"num_instances": 5}, 5),
    ("HypervisorVersionWeigher", {"hypervisor_version": 9000000}, 9000000),
    ("BuildFailureWeigher", {"failed_builds": 2}, 2),
    ("PCIWeigher", {"pci_stats": [{"count": 2}, {"count": 1}]}, 97),
    ("PCIWeigher", {"pci_stats": [{"count": 500}]}, 1),
    ("ServerGroupSoftAffinityWeigher", {"instances": [MEMBER]}, 1),
    ("ServerGroupSoftAntiAffinityWeigher", {"instances": [MEMBER]}, 0),  # other policy: no effect
])
def test_raw_weights(name, fields, raw):
    s = spec(hints={"group": {"policy": "soft-affinity", "members": [MEMBER]}})
    w = WEIGHERS[name]({})
    assert w.raw_weight(host(**fields), s) == raw
    assert w.raw_weights([host(**fields)], s) == [raw]


def test_soft_anti_affinity_raw_weight_is_minus_one_per_member_on_the_host():
    # Nova's ServerGroupSoftAntiAffinityWeigher: -1 * len(host instances & group members); multiplier +1.0.
    other, stranger = "50000000-0000-4000-8000-000000000000", "60000000-0000-4000-8000-000000000000"
    s = spec(hints={"group": {"policy": "soft-anti-affinity", "members": [MEMBER, other]}})
    w = WEIGHERS["ServerGroupSoftAntiAffinityWeigher"]({})
    assert w.raw_weight(host(instances=[MEMBER, other, stranger]), s) == -2
    assert w.raw_weight(host(instances=[MEMBER, stranger]), s) == -1
    assert w.raw_weight(host(instances=[stranger]), s) == 0
    assert w.weight_multiplier(host()) == 1.0
    soft_affinity = spec(hints={"group": {"policy": "soft-affinity", "members": [MEMBER]}})
    assert w.raw_weight(host(instances=[MEMBER]), soft_affinity) == 0  # another policy: no effect
    # Normalised from the minimum (-2) to the maximum (0): fewer members, more weight.
    hosts = [host(0, instances=[MEMBER, other]), host(1, instances=[other]), host(2)]
    scheduler = Scheduler(weighers=["ServerGroupSoftAntiAffinityWeigher"], max_attempts=3)
    result = scheduler.schedule(hosts, s, explain=True)[0]
    assert result["host"] == "h2" and result["alternates"] == ["h1", "h0"]
    assert [(x["host"], x["weight"]) for x in result["explain"]["weighed"]] == [("h2", 1.0), ("h1", 0.5), ("h0", 0.0)]


def test_default_multipliers_are_novas():
    defaults = {name: cls({}).multiplier for name, cls in WEIGHERS.items()}
    assert defaults["IoOpsWeigher"] == -1.0 and defaults["NumInstancesWeigher"] == 0.0
    assert defaults["BuildFailureWeigher"] == 1000000.0 and defaults["RAMWeigher"] == 1.0
    assert WEIGHERS["BuildFailureWeigher"]({}).weight_multiplier(host()) == -1000000.0  # negated, as Nova


def test_aggregate_metadata_overrides_multiplier_with_its_minimum():
    w = WEIGHERS["RAMWeigher"]({}, 2.0)
    aggs = [{"name": "a", "metadata": {"ram_weight_multiplier": "3.0"}},
            {"name": "b", "metadata": {"ram_weight_multiplier": "-1"}}]
    assert w.weight_multiplier(host(aggregates=aggs)) == -1.0
    assert w.weight_multiplier(host(aggregates=[{"name": "c", "metadata": {"ram_weight_multiplier": "x"}}])) == 2.0
    assert w.weight_multiplier(host()) == 2.0


def test_metrics_weigher():
    config = {"metrics_weight_setting": {"cpu.idle": 2.0, "mem.free": -0.5}}
    w = WEIGHERS["MetricsWeigher"](config)
    assert w.raw_weight(host(metrics={"cpu.idle": 10, "mem.free": 4}), spec()) == 18.0
    with pytest.raises(NoValidHost, match=r"no metric mem\.free"):
        w.raw_weight(host(metrics={"cpu.idle": 10}), spec())
    lenient = WEIGHERS["MetricsWeigher"](dict(config, metrics_required=False))
    assert lenient.raw_weight(host(metrics={"cpu.idle": 10}), spec()) == -10000.0
    assert not WEIGHERS["MetricsWeigher"]({}).is_active(spec())


def weights(hosts, **kwargs):
    placement = Scheduler(max_attempts=len(hosts), **kwargs).schedule(hosts, spec(), explain=True)[0]
    return {w["host"]: w for w in placement["explain"]["weighed"]}


def test_ram_normalises_from_zero_so_equal_hosts_still_score():
    # RAM/disk/CPU/I/O ops weighers have minval 0: two equal hosts both normalise to 1.0, not 0.
    result = weights([host(0), host(1)], weighers=["RAMWeigher"])
    assert [w["weight"] for w in result.values()] == [1.0, 1.0]
    result = weights([host(0, failed_builds=1), host(1, failed_builds=1)], weighers=["BuildFailureWeigher"])
    assert [w["weight"] for w in result.values()] == [0.0, 0.0]  # no minval: all equal -> 0


def test_weights_sum_multiplied_contributions():
    hosts = [host(0, free_ram_mb=4096, num_io_ops=2), host(1, free_ram_mb=1024, num_io_ops=0)]
    result = weights(hosts, weighers=["RAMWeigher", "IoOpsWeigher"], weight_multipliers={"RAMWeigher": 2.0})
    assert result["h0"]["weighers"] == {"RAMWeigher": 2.0, "IoOpsWeigher": -1.0}
    assert result["h1"]["weighers"] == {"RAMWeigher": 0.5, "IoOpsWeigher": -0.0}
    assert result["h0"]["weight"] == 1.0 and result["h1"]["weight"] == 0.5


def test_multiplier_validation():
    with pytest.raises(SchedulerInputError, match="unknown weight multiplier"):
        Scheduler(weight_multipliers={"ram": 1})
    with pytest.raises(SchedulerInputError, match=r"must be >= 0\.0"):
        Scheduler(weight_multipliers={"soft_affinity_weight_multiplier": -1})
    with pytest.raises(SchedulerInputError, match="must be a finite number"):
        Scheduler(weight_multipliers={"cpu_weight_multiplier": "lots"})
