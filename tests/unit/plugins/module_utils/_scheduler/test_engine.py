# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The engine: placements, consumption, groups, alternates, explanation, errors, and the incremental path
giving exactly the choices of the plain one (Hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.engine import Scheduler
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import NoValidHost, SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import host_states

from .helpers import BASE, spec


def fleet(*rams, **fields):
    return [dict(BASE, hostname="h%d" % i, free_ram_mb=ram, **fields) for i, ram in enumerate(rams)]


def hosts_of(placements):
    return [p["host"] for p in placements]


def test_count_consumes_between_placements():
    states = host_states(fleet(4096, 3072))
    placements = Scheduler(weighers=["RAMWeigher"]).schedule(states, spec(count=3, memory_mb=1024))
    assert hosts_of(placements) == ["h0", "h0", "h1"]  # 4096 > 3072, then 3072 (earlier host wins a tie), ...
    assert states[0].free_ram_mb == 2048 and states[1].free_ram_mb == 2048
    assert states[0].num_instances == 2 and states[0].num_io_ops == 2 and states[0].vcpus_used == 2
    assert placements[0]["instance_uuid"] in states[0].instances


def test_no_valid_host_names_the_filter():
    with pytest.raises(NoValidHost, match=r"^No valid host: RAM filter \(RamFilter\) removed 2 of 2 hosts$") as info:
        Scheduler().schedule(fleet(512, 1000), spec(memory_mb=1024))
    assert info.value.filter_name == "RamFilter" and info.value.retryable
    with pytest.raises(NoValidHost, match=r"for server 3 of 3: RAM filter \(RamFilter\) removed 1 of 1 hosts"):
        Scheduler().schedule(fleet(2048), spec(count=3, memory_mb=1024))


def test_stale_facts_are_named_when_the_compute_filter_drops_every_host():
    # hypervisor_info's last_seen_up is the gather time: scheduling 125 s later drops every host at 60 s.
    now = 1_000_000.0
    hosts = fleet(4096, 4096, 4096)
    hosts[0]["service"] = {"last_seen_up": now - 125}
    hosts[1]["service"] = {"last_seen_up": now - 300}
    hosts[2]["service"] = {"disabled": True, "last_seen_up": now}
    message = (r"^No valid host: compute service filter \(ComputeFilter\) removed 3 of 3 hosts; 2 of them only because "
               r"their facts are stale: the newest last_seen_up \(host h0\) is 125 s old, more than service_down_time "
               r"\(60 s\); gather them again with nimbus\.compute\.hypervisor_info shortly before scheduling, or raise "
               r"service_down_time$")
    with pytest.raises(NoValidHost, match=message):
        Scheduler(now=now).schedule(hosts, spec())
    assert hosts_of(Scheduler(now=now, service_down_time=130).schedule(hosts, spec())) == ["h0"]
    with pytest.raises(NoValidHost, match=r"is 100 s in the future \(clock skew\?\)"):
        Scheduler(now=now).schedule(fleet(4096, service={"last_seen_up": now + 100}), spec())


def test_no_stale_hint_when_every_host_is_disabled_or_forced_down():
    hosts = fleet(4096, 4096)
    hosts[0]["service"] = {"disabled": True, "last_seen_up": 0}
    hosts[1]["service"] = {"forced_down": True}
    with pytest.raises(NoValidHost, match=r"removed 2 of 2 hosts$"):
        Scheduler(now=1_000_000.0).schedule(hosts, spec())


def test_anti_affinity_spreads_and_affinity_packs():
    anti = Scheduler().schedule(fleet(4096, 4096, 4096), spec(count=3, hints={"group": {"policy": "anti-affinity"}}))
    assert sorted(hosts_of(anti)) == ["h0", "h1", "h2"]
    with pytest.raises(NoValidHost, match="server group anti-affinity filter"):
        Scheduler().schedule(fleet(4096, 4096), spec(count=3, hints={"group": {"policy": "anti-affinity"}}))
    packed = Scheduler().schedule(fleet(1024, 4096, 2048), spec(count=3, hints={"group": {"policy": "affinity"}}))
    assert hosts_of(packed) == ["h1", "h1", "h1"]
    soft = Scheduler().schedule(fleet(4096, 4096), spec(count=2, hints={"group": {"policy": "soft-anti-affinity"}}))
    assert sorted(hosts_of(soft)) == ["h0", "h1"]


def test_alternates_are_the_next_best_unselected_hosts():
    one = Scheduler().schedule(fleet(1024, 4096, 2048, 3072), spec(memory_mb=512))
    assert one[0]["host"] == "h1" and one[0]["alternates"] == ["h3", "h2"]
    few = Scheduler(max_attempts=2).schedule(fleet(1024, 4096, 2048, 3072), spec(count=2, memory_mb=512))
    assert all(p["alternates"] == ["h2"] for p in few)  # re-weighed after both placements, selected hosts excluded
    assert Scheduler(max_attempts=1).schedule(fleet(1024, 4096), spec())[0]["alternates"] == []


def test_host_subset_size_is_random_but_seeded():
    picks = {hosts_of(Scheduler(host_subset_size=3, seed=s).schedule(fleet(4096, 4096, 4096, 1024), spec()))[0]
             for s in range(20)}
    assert picks == {"h0", "h1", "h2"}
    runs = [hosts_of(Scheduler(host_subset_size=3, seed=5).schedule(fleet(4096, 4096, 4096), spec(count=4)))
            for _round in range(2)]
    assert runs[0] == runs[1]


def test_explain_reports_filters_and_top_weights():
    hosts = fleet(4096, 512, 2048)
    hosts[2]["service"] = {"disabled": True}
    [placement] = Scheduler().schedule(hosts, spec(memory_mb=1024), explain=True)
    removed = {f["filter"]: f["removed"] for f in placement["explain"]["filters"]}
    assert removed == {"RamFilter": 1, "DiskFilter": 0, "CoreFilter": 0, "ComputeFilter": 1}
    assert [w["host"] for w in placement["explain"]["weighed"]] == ["h0"]


def test_hint_filters_switch_on_with_their_hint():
    member = "50000000-0000-4000-8000-000000000000"
    hosts = fleet(1024, 4096)
    hosts[0]["instances"] = [member]
    assert hosts_of(Scheduler().schedule(hosts, spec(memory_mb=512, hints={"same_host": [member]}))) == ["h0"]
    assert hosts_of(Scheduler(rules=["free_ram_mb < `2000`"]).schedule(fleet(1024, 4096), spec(memory_mb=512))) == ["h0"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"filters": ["RamFilter", "Nope"]}, "unknown filter Nope"),
    ({"weighers": "RAMWeigher"}, "weigher must be a list"),
    ({"host_subset_size": 0}, "host_subset_size must be a whole number >= 1"),
    ({"colour": "blue"}, "unknown scheduler option"),
])
def test_bad_options_fail_before_scheduling(kwargs, message):
    with pytest.raises(SchedulerInputError, match=message):
        Scheduler(**kwargs)


values = st.sampled_from([0, 512, 1024, 2048, 4096])
CPU_X3 = {"name": "x", "metadata": {"cpu_weight_multiplier": "3"}}  # a per-host multiplier: the plain path


@st.composite
def fleets(draw):
    n = draw(st.integers(1, 9))
    hosts = []
    for i in range(n):
        total = draw(st.sampled_from([1024, 4096, 8192]))
        hosts.append(dict(hostname="h%d" % i, total_usable_ram_mb=total, free_ram_mb=draw(values), total_usable_disk_gb=50,
                          free_disk_mb=draw(st.sampled_from([0, 10240, 51200])), vcpus_total=draw(st.sampled_from([2, 8])),
                          vcpus_used=draw(st.integers(0, 3)), num_io_ops=draw(st.integers(0, 2)),
                          hypervisor_version=draw(st.sampled_from([1, 2])), failed_builds=draw(st.integers(0, 1)),
                          ram_allocation_ratio=draw(st.sampled_from([0.5, 1.0, 2.0])),
                          aggregates=draw(st.sampled_from([[], [], [CPU_X3]]))))
    return hosts


@settings(max_examples=200, deadline=None)
@given(hosts=fleets(), count=st.integers(1, 12), subset=st.sampled_from([1, 1, 2, 3]), seed=st.integers(0, 9),
       policy=st.sampled_from([None, "anti-affinity", "soft-affinity", "soft-anti-affinity", "affinity"]),
       memory_mb=st.sampled_from([16, 256, 1024]))
def test_incremental_path_chooses_like_the_plain_path(hosts, count, subset, seed, policy, memory_mb):
    results = []
    for incremental in (False, True):
        s = spec(count=count, memory_mb=memory_mb, root_gb=1, hints={"group": {"policy": policy}} if policy else None)
        try:
            placements = Scheduler(incremental=incremental, host_subset_size=subset, seed=seed).schedule(hosts, s)
            results.append([(p["host"], p["weight"], p["alternates"]) for p in placements])
        except NoValidHost as err:
            results.append(str(err))
    assert results[0] == results[1]


def test_incremental_path_on_a_large_fleet_with_many_identical_hosts():
    rng = random.Random(3)
    hosts = [dict(BASE, hostname="h%03d" % i, total_usable_ram_mb=65536, free_ram_mb=rng.choice([65536, 32768]),
                  vcpus_total=32, num_io_ops=rng.choice([0, 0, 1])) for i in range(300)]
    plain = Scheduler(incremental=False, seed=1).schedule(hosts, spec(count=150))
    fast = Scheduler(seed=1).schedule(hosts, spec(count=150))
    assert hosts_of(plain) == hosts_of(fast) and plain[0]["alternates"] == fast[0]["alternates"]
    assert len(set(hosts_of(fast))) > 50


NUMA_FILTERS = ["RamFilter", "CoreFilter", "NUMATopologyFilter"]


def numa_host(index, cells):
    return dict(BASE, hostname="h%d" % index, total_usable_ram_mb=8192, cpu_allocation_ratio=1.0, vcpus_total=8,
                numa_topology={"cells": [{"id": n, "cpus": 2, "memory_mb": 2048} for n in range(cells)]})


def test_numa_use_is_consumed_between_placements():
    # One 2-CPU/2 GiB cell holds one 2-vCPU/2 GiB guest; the host's totals (8 CPUs, 8 GiB) would take four.
    numa = {"hw:numa_nodes": "1"}
    with pytest.raises(NoValidHost, match=r"for server 2 of 2: NUMA topology filter \(NUMATopologyFilter\) removed 1 of 1"):
        Scheduler(filters=NUMA_FILTERS).schedule([numa_host(0, 1)], spec(count=2, vcpus=2, memory_mb=2048, extra_specs=numa))
    states = host_states([numa_host(0, 1), numa_host(1, 1)])
    placements = Scheduler(filters=NUMA_FILTERS).schedule(states, spec(count=2, vcpus=2, memory_mb=2048, extra_specs=numa))
    assert sorted(hosts_of(placements)) == ["h0", "h1"]
    assert [s.numa_topology["cells"][0]["cpu_usage"] for s in states] == [2, 2]
    assert [s.numa_topology["cells"][0]["memory_usage"] for s in states] == [2048, 2048]
    two_cells = host_states([numa_host(0, 2)])
    assert hosts_of(Scheduler(filters=NUMA_FILTERS).schedule(
        two_cells, spec(count=2, vcpus=2, memory_mb=2048, extra_specs=numa))) == ["h0", "h0"]  # one guest per cell
    assert [c["memory_usage"] for c in two_cells[0].numa_topology["cells"]] == [2048, 2048]


def test_numa_consumption_leaves_the_input_and_other_requests_alone():
    given = numa_host(0, 1)
    states = host_states([given])
    Scheduler(filters=NUMA_FILTERS).schedule(states, spec(vcpus=2, memory_mb=2048, extra_specs={"hw:numa_nodes": "1"}))
    assert given["numa_topology"]["cells"][0].get("cpu_usage", 0) == 0  # the fact dict is not changed
    assert states[0].numa_topology["cells"][0]["cpu_usage"] == 2
    plain = host_states([numa_host(0, 1)])
    Scheduler(filters=NUMA_FILTERS).schedule(plain, spec(count=3, vcpus=2, memory_mb=2048))  # no NUMA request
    assert plain[0].numa_topology["cells"][0]["cpu_usage"] == 0
    copy = states[0].copy()
    copy.numa_topology["cells"][0]["cpu_usage"] += 1
    assert states[0].numa_topology["cells"][0]["cpu_usage"] == 2
