# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Each filter's rule, with the edge cases Nova's own code has."""

from __future__ import annotations

import time

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.extra_specs_ops import match
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.image_properties import version_of
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.registry import FILTERS
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.request_spec import RequestSpec

from .helpers import host, spec

CONFIG = {"now": 1_000_000.0, "service_down_time": 60, "max_instances_per_host": 3, "max_io_ops_per_host": 2,
          "rules": [], "image_properties_default_architecture": None}


def passes(name, h, s, **config):
    f = FILTERS[name](dict(CONFIG, **config))
    return f.host_passes(h, s) if f.is_active(s) else True


@pytest.mark.parametrize(("fields", "memory_mb", "ok"), [
    ({"free_ram_mb": 1024}, 1024, True),
    ({"free_ram_mb": 1023}, 1024, False),
    ({"free_ram_mb": 0, "ram_allocation_ratio": 1.5}, 2048, True),  # 4096 * 1.5 - 4096 = 2048 left
    ({"free_ram_mb": 0, "ram_allocation_ratio": 1.5}, 2049, False),
    ({"ram_allocation_ratio": 100.0}, 8192, False),  # never overcommit a server against itself
    ({"ram_allocation_ratio": 0.5}, 2048, True),  # ratio below 1 shrinks the host
    ({"ram_allocation_ratio": 0.5}, 2049, False),
])
def test_ram_filter(fields, memory_mb, ok):
    assert passes("RamFilter", host(**fields), spec(memory_mb=memory_mb)) is ok


@pytest.mark.parametrize(("fields", "flavor", "ok"), [
    ({"free_disk_mb": 10 * 1024}, {"root_gb": 10}, True),
    ({"free_disk_mb": 10 * 1024}, {"root_gb": 10, "swap": 1}, False),  # swap is MiB on top
    ({"free_disk_mb": 15 * 1024}, {"root_gb": 10, "ephemeral_gb": 5}, True),
    ({"free_disk_mb": 0, "disk_allocation_ratio": 2.0}, {"root_gb": 100}, True),
    ({"total_usable_disk_gb": 0, "free_disk_mb": 0}, {"root_gb": 0}, True),  # zero capacity, zero request
    ({"total_usable_disk_gb": 0, "free_disk_mb": 0}, {"root_gb": 0, "swap": 1}, False),
])
def test_disk_filter(fields, flavor, ok):
    assert passes("DiskFilter", host(**fields), spec(**flavor)) is ok


@pytest.mark.parametrize(("fields", "vcpus", "ok"), [
    ({"vcpus_used": 15}, 1, True),  # 4 x 4.0 - 15
    ({"vcpus_used": 16}, 1, False),
    ({"vcpus_used": 0}, 5, False),  # more than the host has, whatever the ratio
    ({"vcpus_total": 0, "vcpus_used": 99}, 64, True),  # Nova: no vCPU count reported -> pass
    ({"cpu_allocation_ratio": 0.5}, 2, True),
    ({"cpu_allocation_ratio": 0.5}, 3, False),
])
def test_core_filter(fields, vcpus, ok):
    assert passes("CoreFilter", host(**fields), spec(vcpus=vcpus)) is ok


@pytest.mark.parametrize(("service", "ok"), [
    ({}, True),  # never reported: up
    ({"last_seen_up": 1_000_000.0 - 60}, True),
    ({"last_seen_up": 1_000_000.0 - 61}, False),
    ({"last_seen_up": "1970-01-12T13:46:00+00:00"}, True),  # ISO 8601, 40 s before "now"
    ({"disabled": True}, False),
    ({"forced_down": True}, False),
])
def test_compute_filter(service, ok):
    assert passes("ComputeFilter", host(service=service), spec()) is ok


def test_compute_filter_uses_the_clock_when_now_is_not_given():
    fresh = host(service={"last_seen_up": time.time() - 5})
    assert FILTERS["ComputeFilter"](dict(CONFIG, now=None)).host_passes(fresh, spec())


def test_availability_zone_filter():
    s = RequestSpec({"vcpus": 1, "memory_mb": 64}, availability_zone="az1")
    assert passes("AvailabilityZoneFilter", host(availability_zone="az1"), s)
    assert not passes("AvailabilityZoneFilter", host(), s)
    in_aggregate = host(aggregates=[{"name": "x", "metadata": {"availability_zone": "az2, az1"}}])
    assert passes("AvailabilityZoneFilter", in_aggregate, s)  # aggregate metadata, comma-separated
    assert passes("AvailabilityZoneFilter", host(availability_zone="az9"), spec())  # no zone asked


@pytest.mark.parametrize(("value", "req", "ok"), [
    ("4", ">= 4", True), ("3", ">= 4", False), ("4", "= 3", True), ("4.0", "== 4", True), ("4", "!= 4", False),
    ("abc", "s== abc", True), ("abc", "s!= abc", False), ("b", "s> a", True), ("a", "s<= a", True),
    ("avx avx2", "<in> avx2", True), ("sse", "<in> avx", False), ("a b c", "<all-in> a c", True),
    ("x", "<or> y <or> x", True), ("z", "<or> y <or> x", False), ("plain", "plain", True), ("1", "1.0", False),
    ("x", ">= 4", False), ("4", ">=", False),
])
def test_extra_specs_operators(value, req, ok):
    assert match(value, req) is ok


def test_compute_capabilities_filter():
    h = host(hypervisor_type="QEMU", cpu_info={"arch": "x86_64", "maxphysaddr": {"bits": 46}}, stats={"gpu": "2"})

    def check(specs):
        return passes("ComputeCapabilitiesFilter", h, spec(extra_specs=specs))

    assert check({"capabilities:hypervisor_type": "s== QEMU", "capabilities:cpu_info:arch": "x86_64"})
    assert not check({"capabilities:cpu_info:arch": "aarch64"})
    assert not check({"capabilities:cpu_info:nothing": "x"})  # a missing capability fails
    assert check({"vcpus_total": ">= 4", "gpu": ">= 2"})  # unscoped: host fields and stats
    assert check({"no_such_field": "1", "hw:cpu_policy": "dedicated"})  # ignored, as in Nova
    assert not check({"free_ram_mb": "<= 100"})
    assert check({"hw:maxphysaddr_bits": "40"}) and not check({"hw:maxphysaddr_bits": "48"})


def test_image_properties_filter():
    h = host(supported_instances=[["x86_64", "qemu", "hvm"]], hypervisor_version=7002000)

    def check(props, hh=h, **cfg):
        return passes("ImagePropertiesFilter", hh, spec(image={"properties": props}), **cfg)

    assert check({}) and check({"hw_architecture": "amd64"})  # canonical names
    assert check({"img_hv_type": "QEMU", "hw_vm_mode": "hv"})
    assert not check({"hw_architecture": "aarch64"})
    x86 = {"hw_architecture": "x86_64"}
    assert check(dict(x86, img_hv_requested_version=">= 7.2, < 8"))
    assert not check(dict(x86, img_hv_requested_version=">= 7.2.1"))
    assert check({"img_hv_requested_version": ">= 99"})  # as in Nova: a version alone does not trigger the check
    assert not check({"hw_architecture": "x86_64"}, host())  # asked for, nothing advertised
    assert not check({}, host(), image_properties_default_architecture="x86_64")
    with pytest.raises(SchedulerInputError, match="bad restriction"):
        check({"hw_architecture": "x86_64", "img_hv_requested_version": "newest"})


@pytest.mark.parametrize(("number", "version"), [
    (0, (0,)), (1, (1,)), (7002000, (7, 2)), (9000000, (9,)), (1000, (1,)), (10**18 + 1, (1, 0, 0, 0, 0, 0, 1)),
])
def test_version_of(number, version):
    assert version_of(number) == version


@pytest.mark.timeout(5)
def test_version_of_refuses_negative_numbers_instead_of_looping():
    # Floor division of a negative number never reaches 0: this used to hang the lookup.
    with pytest.raises(SchedulerInputError, match="must not be negative"):
        version_of(-5)


def test_aggregate_filters():
    ssd = host(aggregates=[{"name": "a", "metadata": {"ssd": "true", "filter_tenant_id": "p1, p2"}}])
    plain = host()
    assert passes("AggregateInstanceExtraSpecsFilter", ssd, spec(extra_specs={"aggregate_instance_extra_specs:ssd": "true"}))
    assert not passes("AggregateInstanceExtraSpecsFilter", plain, spec(extra_specs={"ssd": "true"}))
    assert passes("AggregateInstanceExtraSpecsFilter", plain, spec(extra_specs={"hw:x": "y"}))  # other scope ignored
    assert passes("AggregateMultiTenancyIsolation", ssd, spec(project_id="p2"))
    assert not passes("AggregateMultiTenancyIsolation", ssd, spec(project_id="p3"))
    assert passes("AggregateMultiTenancyIsolation", plain, spec(project_id="p3"))


def test_same_and_different_host_filters():
    a, b = "10000000-0000-4000-8000-000000000000", "20000000-0000-4000-8000-000000000000"
    h = host(instances=[a])
    assert passes("SameHostFilter", h, spec(hints={"same_host": [a, b]}))
    assert not passes("SameHostFilter", host(), spec(hints={"same_host": a}))
    assert not passes("DifferentHostFilter", h, spec(hints={"different_host": [a]}))
    assert passes("DifferentHostFilter", h, spec(hints={"different_host": [b]}))


def test_server_group_filters():
    member = "30000000-0000-4000-8000-000000000000"
    h1, h2 = host(0, instances=[member]), host(1)
    anti = spec(hints={"group": {"policy": "anti-affinity", "members": [member]}})
    assert not passes("ServerGroupAntiAffinityFilter", h1, anti) and passes("ServerGroupAntiAffinityFilter", h2, anti)
    two = spec(hints={"group": {"policy": "anti-affinity", "members": [member], "rules": {"max_server_per_host": 2}}})
    assert passes("ServerGroupAntiAffinityFilter", h1, two)
    affinity = spec(hints={"group": {"policy": "affinity", "members": [member]}})
    affinity.fill_group_hosts([h1, h2])
    assert passes("ServerGroupAffinityFilter", h1, affinity) and not passes("ServerGroupAffinityFilter", h2, affinity)
    empty = spec(hints={"group": {"policy": "affinity"}})
    empty.fill_group_hosts([h1, h2])
    assert passes("ServerGroupAffinityFilter", h2, empty)  # a new group may start anywhere


def test_num_instances_and_io_ops_filters():
    assert passes("NumInstancesFilter", host(num_instances=2), spec())
    assert not passes("NumInstancesFilter", host(num_instances=3), spec())
    assert passes("IoOpsFilter", host(num_io_ops=1), spec())
    assert not passes("IoOpsFilter", host(num_io_ops=2), spec())


def test_numa_topology_filter():
    cells = {"cells": [{"id": 0, "cpus": [0, 1], "memory_mb": 2048}, {"id": 1, "cpus": 2, "memory_mb": 2048,
                                                                      "memory_usage": 1536}]}
    h = host(numa_topology=cells, cpu_allocation_ratio=1.0)
    assert passes("NUMATopologyFilter", h, spec(vcpus=2, memory_mb=1024, extra_specs={"hw:numa_nodes": "1"}))
    assert not passes("NUMATopologyFilter", h, spec(vcpus=2, memory_mb=2048, extra_specs={"hw:numa_nodes": "2"}))
    assert passes("NUMATopologyFilter", h, spec(vcpus=2, memory_mb=1024, extra_specs={"hw:numa_nodes": "2"}))
    assert not passes("NUMATopologyFilter", host(), spec(extra_specs={"hw:numa_nodes": "1"}))
    assert passes("NUMATopologyFilter", host(), spec())  # no NUMA request
    with pytest.raises(SchedulerInputError, match="divide"):
        passes("NUMATopologyFilter", h, spec(vcpus=3, extra_specs={"hw:numa_nodes": "2"}))


def test_jmespath_filter():
    h = host(traits=["CUSTOM_SSD"], free_ram_mb=4096)
    assert passes("JMESPathFilter", h, spec(), rules=["free_ram_mb >= `4096` && contains(traits, 'CUSTOM_SSD')"])
    assert not passes("JMESPathFilter", h, spec(hints={"query": "contains(traits, 'CUSTOM_GPU')"}))
    assert not passes("JMESPathFilter", h, spec(hints={"query": "aggregates"}))  # [] is false
    assert passes("JMESPathFilter", h, spec(hints={"query": "num_io_ops"}))  # 0 is true in JMESPath
    with pytest.raises(SchedulerInputError, match="bad JMESPath rule"):
        FILTERS["JMESPathFilter"](dict(CONFIG, rules=["free_ram_mb >="]))
