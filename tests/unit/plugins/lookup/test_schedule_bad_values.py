# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Values found by fuzzing the lookup: each is refused with one message naming it, never the last-resort
"unexpected error" catch, never a NaN or infinite weight, never a silently ignored option or rule."""

from __future__ import annotations

import json
import math

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.nimbus.compute.plugins.plugin_utils._scheduler import schedule

BIG = 10**400
UUID = "11111111-1111-4111-8111-111111111111"
BASE = {"hostname": "h", "total_usable_ram_mb": 4096, "total_usable_disk_gb": 100, "vcpus_total": 4,
        "supported_instances": [["x86_64", "qemu", "hvm"]], "hypervisor_version": 8002000}
TWIN = dict(BASE, hostname="h2", free_ram_mb=1024)
FLAVOR = {"vcpus": 1, "memory_mb": 512, "root_gb": 1}
CAPS = ["RamFilter", "ComputeCapabilitiesFilter", "AggregateInstanceExtraSpecsFilter"]


def options(host=None, twin=None, **kwargs):
    opts = {"flavor": FLAVOR, "hosts": [dict(BASE, **(host or {})), dict(TWIN, **(twin or {}))], "count": 1,
            "hypervisor_group": "hypervisors"}
    opts.update(kwargs)
    return opts


def extra(**specs):
    return dict(FLAVOR, extra_specs=specs)


def refused(opts, *expected):
    with pytest.raises(AnsibleLookupError) as err:
        schedule(opts, {})
    msg = str(err.value)
    assert "unexpected error" not in msg
    for part in expected:
        assert part in msg
    return msg


HOST_NUMBERS = ["total_usable_ram_mb", "free_ram_mb", "total_usable_disk_gb", "free_disk_mb", "vcpus_total", "vcpus_used",
                "num_instances", "num_io_ops", "hypervisor_version", "failed_builds", "cpu_allocation_ratio",
                "ram_allocation_ratio", "disk_allocation_ratio"]


@pytest.mark.parametrize("field", HOST_NUMBERS)
def test_a_huge_host_number_is_too_large_not_an_overflow(field):
    refused(options({field: BIG}), "host h: %s is too large" % field)


@pytest.mark.parametrize(("host", "what"), [
    ({"service": {"last_seen_up": BIG}}, "host h: service.last_seen_up about 10**400 is not an ISO 8601 time"),
    ({"service": {"last_seen_up": 1e308}}, "host h: service.last_seen_up 1e+308 is not an ISO 8601 time"),
    ({"metrics": {"m": BIG}}, "host h: metrics.m is too large"),
    ({"pci_stats": [{"count": BIG}]}, "host h: pci_stats count is too large"),
    ({"numa_topology": {"cells": [{"cpus": BIG, "memory_mb": 4096}]}}, "host h: numa_topology cell 0 cpus is too large"),
    ({"numa_topology": {"cells": [{"cpus": 4, "memory_mb": 1e308}]}}, "host h: numa_topology cell 0 memory_mb is too large"),
    ({"total_usable_disk_gb": 1e308}, "host h: total_usable_disk_gb is too large"),
    # free_disk_mb defaults to total_usable_disk_gb x 1024, which must stay within the bound too
    ({"total_usable_disk_gb": 2**53}, "host h: total_usable_disk_gb is too large"),
])
def test_other_huge_host_values_are_too_large(host, what):
    refused(options(host), what)


@pytest.mark.parametrize(("kwargs", "what"), [
    ({"service_down_time": BIG}, "service_down_time is too large"),
    ({"weight_multipliers": {"RAMWeigher": BIG}}, "weight multiplier RAMWeigher is too large"),
    ({"metrics_weight_setting": {"m": BIG}}, "metrics_weight_setting ratio of m is too large"),
])
def test_huge_options_are_too_large(kwargs, what):
    refused(options(**kwargs), what)


@pytest.mark.parametrize(("host", "twin", "kwargs", "what"), [
    ({"vcpus_total": 1e308}, None, {}, "host h: vcpus_total is too large"),
    ({"cpu_allocation_ratio": 1e308}, None, {}, "host h: cpu_allocation_ratio is too large"),
    ({"metrics": {"m": 1e308}}, {"metrics": {"m": -1e308}}, {"metrics_weight_setting": {"m": 10}},
     "host h: metrics.m is too large"),
    (None, None, {"weight_multipliers": {"RAMWeigher": 1e308, "DiskWeigher": 1e308}},
     "weight multiplier RAMWeigher is too large"),
    (None, None, {"metrics_weight_setting": {"m": 1e308}}, "metrics_weight_setting ratio of m is too large"),
])
def test_values_that_made_a_nan_or_infinite_weight_are_refused(host, twin, kwargs, what):
    refused(options(host, twin, **kwargs), what)


def test_the_largest_accepted_values_still_give_finite_weights():
    top = {"total_usable_ram_mb": 2**53, "free_ram_mb": -2**53, "vcpus_total": 2**53, "cpu_allocation_ratio": 1e6,
           "vcpus_used": 0, "total_usable_disk_gb": 2**53 // 1024, "hypervisor_version": 2**53, "num_io_ops": 2**53,
           "metrics": {"m": 2**53}}
    low = {"metrics": {"m": -2**53}, "failed_builds": 2**53}
    multipliers = dict.fromkeys(("RAMWeigher", "DiskWeigher", "CPUWeigher", "IoOpsWeigher", "MetricsWeigher",
                                 "HypervisorVersionWeigher", "BuildFailureWeigher", "NumInstancesWeigher"), 1e9)
    placements = schedule(options(top, low, explain=True, weight_multipliers=multipliers,
                                  metrics_weight_setting={"m": 1e6, "n": -1e6}, metrics_required=False), {})
    assert all(math.isfinite(p["weight"]) for p in placements)
    json.dumps(placements, allow_nan=False)


@pytest.mark.parametrize("aggregate_value", ["1e308", "-1e308", "nan"])
def test_an_out_of_range_aggregate_multiplier_falls_back_like_nan(aggregate_value):
    aggregates = [{"name": "a", "metadata": {"ram_weight_multiplier": aggregate_value}}]
    placements = schedule(options({"aggregates": aggregates}), {})
    assert placements[0]["weight"] == 3.0  # the configured multipliers, as without the aggregate


@pytest.mark.parametrize(("rules", "what"), [
    ({"max_server_per_host": float("inf")}, "max_server_per_host must be a whole number from 1 to 2147483647, got inf"),
    ({"max_server_per_host": 2.7}, "got 2.7"),
    ({"max_server_per_host": True}, "got True"),
    ({"max_server_per_host": "\u00b2"}, "got '\u00b2'"),  # isdigit() takes it, int() does not
    ({"max_server_per_host": BIG}, "got 'a huge number'"),
    ({"max_servers_per_host": 5}, "unknown group rule(s) max_servers_per_host; known: max_server_per_host"),
    ("", "group rules must be a dict"),
])
def test_group_rules_must_be_a_positive_whole_number_and_known(rules, what):
    refused(options(count=3, hints={"group": {"policy": "anti-affinity", "rules": rules}}), what)


def test_max_server_per_host_as_a_string_of_digits_is_taken():
    hints = {"group": {"policy": "anti-affinity", "rules": {"max_server_per_host": "2"}}}
    assert [p["host"] for p in schedule(options(count=4, hints=hints), {})] == ["h", "h2", "h", "h2"]


@pytest.mark.parametrize(("hints", "what"), [
    ({"group": {}}, "hint group must be a dict {name, policy, members, rules}, got {}"),
    ({"group": ""}, "hint group must be a dict {name, policy, members, rules}, got ''"),
    ({"query": ""}, "hint query must be a non-empty JMESPath expression string, got ''"),
    ({"query": "  "}, "hint query must be a non-empty JMESPath expression string"),
])
def test_empty_group_or_query_hints_are_refused(hints, what):
    refused(options(hints=hints), what)


@pytest.mark.parametrize("key", ["filters", "weighers"])
def test_filter_and_weigher_names_must_be_strings(key):
    refused(options(**{key: [{"a": 1}]}), "names must be strings, got {'a': 1}")


def test_a_seed_that_is_not_a_number_is_refused():
    refused(options(seed=[1]), "seed must be a whole number, got [1]")


@pytest.mark.parametrize("uuids", [[UUID, UUID], [UUID, UUID.upper()]])
def test_duplicate_instance_uuids_are_refused(uuids):
    refused(options(count=2, instance_uuids=uuids), "instance UUID %s appears more than once" % UUID)


@pytest.mark.parametrize(("key", "value", "what"), [
    ("capabilities:vcpus_total", ">= abc", ">= needs a finite number, got 'abc'"),
    ("capabilities:vcpus_total", ">= nan", ">= needs a finite number, got 'nan'"),
    ("capabilities:vcpus_total", "<in>", "<in> needs exactly one operand"),
    ("capabilities:vcpus_total", "s== ", "s== needs exactly one operand"),
    ("capabilities:vcpus_total", "<or>", "<or> needs values separated by <or>"),
    ("capabilities:vcpus_total", "<or> 4 <or>", "<or> needs values separated by <or>"),
    ("capabilities:vcpus_total", "<or> 4 5", "<or> needs values separated by <or>"),
    ("capabilities:vcpus_total", "<all-in>", "<all-in> needs at least one value"),
    ("aggregate_instance_extra_specs:ssd", "<in>", "<in> needs exactly one operand"),
    ("vcpus_total", ">= x", ">= needs a finite number"),
])
def test_malformed_extra_spec_requirements_are_named(key, value, what):
    refused(options(flavor=extra(**{key: value}), filters=CAPS), "flavor extra spec %s=%r: %s" % (key, value, what))


@pytest.mark.parametrize(("value", "what"), [
    ("lots", "flavor extra spec hw:maxphysaddr_bits must be a whole number, got 'lots'"),
    ("-5", "flavor extra spec hw:maxphysaddr_bits must be >= 1, got -5"),
])
def test_a_malformed_maxphysaddr_bits_extra_spec_is_named(value, what):
    refused(options(flavor=extra(**{"hw:maxphysaddr_bits": value}), filters=CAPS), what)


@pytest.mark.parametrize("spec", [
    {"capabilities:vcpus_total": "<or> 4 <or> 8"}, {"capabilities:vcpus_total": "== 4"},
    {"capabilities:hypervisor_type": "<in> QEMU"}, {"capabilities:vcpus_total": "4"}, {"hw:cpu_policy": "shared"},
    {"capabilities:vcpus_total": "<all-in> 4"}, {"hw:maxphysaddr_bits": "40", "capabilities:vcpus_total": ">= 1"},
])
def test_well_formed_extra_specs_still_pass(spec):
    assert schedule(options({"cpu_info": {"maxphysaddr": {"bits": 46}}}, {"cpu_info": {"maxphysaddr": {"bits": 46}}},
                            flavor=extra(**spec), filters=CAPS[:2]), {})


@pytest.mark.parametrize(("props", "what"), [
    ({"hw_architecture": ["x86_64"]}, "image property hw_architecture must be a non-empty string, got ['x86_64']"),
    ({"hw_architecture": 5}, "image property hw_architecture must be a non-empty string, got 5"),
    ({"hw_architecture": ""}, "image property hw_architecture must be a non-empty string"),
    ({"img_hv_type": ["qemu"]}, "image property img_hv_type must be a non-empty string"),
    ({"hw_vm_mode": {"a": 1}}, "image property hw_vm_mode must be a non-empty string"),
    ({"img_hv_requested_version": "> x"}, "img_hv_requested_version '> x': bad restriction"),  # checked without arch too
    ({"hw_architecture": "x86_64", "img_hv_requested_version": ">= " + "9" * 5000},
     "img_hv_requested_version is too long (5003 characters, at most 255)"),
    ({"hw_architecture": "x86_64", "img_hv_requested_version": ">= 1" + "0" * 200}, "bad restriction"),
    ({"hw_architecture": "x86_64", "img_hv_requested_version": [">= 1"]},
     "img_hv_requested_version must be a string such as"),
])
def test_malformed_image_properties_are_named(props, what):
    refused(options(image={"properties": props}), what)


def test_count_is_capped():
    refused(options(count=10001), "count is 10001, at most 10000 servers per request")
    refused(options(count=BIG), "count is huge, at most 10000")


@pytest.mark.parametrize("field", ["vcpus_used", "num_instances", "num_io_ops", "failed_builds"])
def test_negative_host_counters_are_refused(field):
    refused(options({field: -5}), "host h: %s must not be negative, got -5" % field)


@pytest.mark.parametrize("field", ["cpus", "memory_mb", "cpu_usage", "memory_usage"])
def test_negative_numa_numbers_are_refused(field):
    cells = [{"cpus": 4, "memory_mb": 4096, field: -100}]
    refused(options({"numa_topology": {"cells": cells}}, flavor=extra(**{"hw:numa_nodes": "1"}),
                    filters=["NUMATopologyFilter"]),
            "host h: numa_topology cell 0 %s must not be negative" % field)


def test_negative_free_ram_and_disk_stay_allowed():
    # Overcommitted hosts report negative free RAM and disk, as in Nova.
    assert schedule(options({"free_ram_mb": -5, "free_disk_mb": -5}), {})[0]["host"] == "h2"


def test_a_deeply_nested_query_hint_is_refused():
    refused(options(hints={"query": "(" * 2000 + "a" + ")" * 2000}), "bad JMESPath rule", "nested too deeply")


def test_a_deeply_nested_json_stat_is_refused():
    deep = "[" * 100000 + "]" * 100000
    refused(options({"stats": {"x": deep}}, flavor=extra(**{"capabilities:stats:x:0": "1"})),
            "host h: stats:x is JSON nested too deeply")
