# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Malformed lookup input ends in an AnsibleLookupError naming the host and field, never a raw Python error."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler import engine
from ansible_collections.nimbus.compute.plugins.plugin_utils._scheduler import schedule

BASE = {"hostname": "h", "total_usable_ram_mb": 4096, "total_usable_disk_gb": 100, "vcpus_total": 4}
TWIN = dict(BASE, hostname="h2", free_ram_mb=1024)
FLAVOR = {"vcpus": 1, "memory_mb": 512}
X86 = {"properties": {"hw_architecture": "x86_64"}}
NUMA = {"flavor": dict(FLAVOR, extra_specs={"hw:numa_nodes": "1"}), "filters": ["RamFilter", "NUMATopologyFilter"]}


def options(host=None, **kwargs):
    opts = {"flavor": FLAVOR, "hosts": [dict(BASE, **(host or {})), TWIN], "count": 1, "hypervisor_group": "hypervisors"}
    opts.update(kwargs)
    return opts


CASES = {
    "service not a dict": (options({"service": ["up"]}), "host h: service must be a dict"),
    "service a string": (options({"service": "up"}), "host h: service must be a dict"),
    "service field misspelt": (options({"service": {"disable": True}}), "host h: unknown service field(s) disable"),
    "service disabled not a bool": (options({"service": {"disabled": "yes"}}), "host h: service.disabled must be true or false"),
    "last_seen_up not a time": (options({"service": {"last_seen_up": [1]}}), "host h: service.last_seen_up"),
    "supported_instances entry not a list": (options({"supported_instances": [5]}, image=X86),
                                             "host h: supported_instances must be a list of [arch, hv_type, vm_mode]"),
    "supported_instances a string": (options({"supported_instances": "x86_64"}, image=X86),
                                     "host h: supported_instances must be a list of"),
    "supported_instances entry too short": (options({"supported_instances": [["x86_64"]]}, image=X86),
                                            "host h: supported_instances must be a list of"),
    "instances not a list": (options({"instances": 5}), "host h: instances must be a list of server UUIDs, got int"),
    "instances items not strings": (options({"instances": [5]}), "host h: instances must be a list of server UUIDs"),
    "traits not a list": (options({"traits": 5}, rules=["contains(traits, 'X')"]), "host h: traits must be a list"),
    "metric value not a number": (options({"metrics": {"m": "high"}}, metrics_weight_setting={"m": 1.0}),
                                  "host h: metrics.m must be a number, got 'high'"),
    "metric value nan": (options({"metrics": {"m": float("nan")}}), "host h: metrics.m must be finite"),
    "metrics not a dict": (options({"metrics": [1]}), "host h: metrics must be a dict"),
    "metrics ratio not a number": (options(metrics_weight_setting={"m": "high"}),
                                   "metrics_weight_setting ratio of m must be a number, got 'high'"),
    "metrics ratio inf": (options(metrics_weight_setting={"m": float("inf")}),
                          "metrics_weight_setting ratio of m must be a finite number"),
    "rules item not a string": (options(rules=[5]), "rules must be a list of JMESPath expression strings"),
    "rules a string": (options(rules="free_ram_mb > `1`"), "rules must be a list of JMESPath expression strings"),
    "pci_stats not a list": (options({"pci_stats": {"count": 1}}), "host h: pci_stats must be a list of pools"),
    "pci_stats pool not a dict": (options({"pci_stats": ["gpu"]}), "host h: pci_stats must be a list of pools"),
    "pci_stats count not a number": (options({"pci_stats": [{"count": "x"}]}), "host h: pci_stats count must be a number"),
    "pci_stats count not whole": (options({"pci_stats": [{"count": 1.5}]}), "host h: pci_stats count must be a whole number"),
    "pci_stats count negative": (options({"pci_stats": [{"count": -1}]}), "host h: pci_stats count must not be negative"),
    "hosts entry not a dict": (options(hosts=["x"]), "host 0: a host state must be a dict, got str"),
    "hosts not a list": (options(hosts={"a": 1}), "hosts must be a list of host-state dicts, got dict"),
    "group hosts not a list": (options(hints={"group": {"policy": "affinity", "hosts": 5}}),
                               "hint group.hosts must be a list of host names, got 5"),
    "group hosts a string": (options(hints={"group": {"policy": "affinity", "hosts": "h"}}),
                             "hint group.hosts must be a list of host names"),
    "hw_maxphysaddr_bits not a number": (
        options({"supported_instances": [["x86_64", "qemu", "hvm"]], "cpu_info": {"maxphysaddr": {"bits": 46}}},
                image={"properties": {"hw_architecture": "x86_64", "hw_maxphysaddr_bits": "lots"}}),
        "image property hw_maxphysaddr_bits must be a whole number, got 'lots'"),
    "host maxphysaddr bits not a number": (options({"cpu_info": {"maxphysaddr": {"bits": "many"}}}),
                                           "host h: cpu_info.maxphysaddr.bits must be a number"),
    "host maxphysaddr not a dict": (options({"cpu_info": {"maxphysaddr": 46}}), "host h: cpu_info.maxphysaddr must be a dict"),
    "cpu_info not a dict": (options({"cpu_info": "x"}), "host h: cpu_info must be a dict"),
    "numa_topology a string": (options({"numa_topology": "x"}, **NUMA), "host h: numa_topology must be {\"cells\""),
    "numa_topology a list": (options({"numa_topology": [1]}, **NUMA), "host h: numa_topology must be"),
    "numa cells not a list": (options({"numa_topology": {"cells": None}}, **NUMA), "host h: numa_topology must be"),
    "numa cell not a dict": (options({"numa_topology": {"cells": ["x"]}}, **NUMA), "host h: numa_topology must be"),
    "numa cell cpus not a number": (options({"numa_topology": {"cells": [{"cpus": "x"}]}}, **NUMA),
                                    "host h: numa_topology cell 0 cpus must be a number"),
    "numa cell cpu ids not ints": (options({"numa_topology": {"cells": [{"cpus": ["a"]}]}}, **NUMA),
                                   "host h: numa_topology cell 0 cpus must be a count or a list of CPU ids"),
    "numa cell memory not a number": (options({"numa_topology": {"cells": [{"cpus": 4, "memory_mb": "big"}]}}, **NUMA),
                                      "host h: numa_topology cell 0 memory_mb must be a number"),
    "multiplier nan": (options(weight_multipliers={"RAMWeigher": float("nan")}),
                       "weight multiplier RAMWeigher must be a finite number, got nan"),
    "multiplier inf": (options(weight_multipliers={"ram_weight_multiplier": float("inf")}),
                       "weight multiplier ram_weight_multiplier must be a finite number"),
    "multiplier -inf string": (options(weight_multipliers={"CPUWeigher": "-inf"}),
                               "weight multiplier CPUWeigher must be a finite number"),
    "service_down_time not a number": (options(service_down_time="x"), "service_down_time must be a number"),
    "service_down_time negative": (options(service_down_time=-1), "service_down_time must not be negative"),
    "negative hypervisor_version": (
        options({"hypervisor_version": -5, "supported_instances": [["x86_64", "qemu", "hvm"]]},
                image={"properties": {"hw_architecture": "x86_64", "img_hv_requested_version": ">= 1"}}),
        "host h: hypervisor_version must not be negative"),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("opts", "message"), list(CASES.values()), ids=list(CASES))
def test_malformed_input_is_a_clear_lookup_error(opts, message):
    with pytest.raises(AnsibleLookupError) as info:
        schedule(opts, {})
    text = str(info.value)
    assert text.startswith("nimbus.compute.schedule: ")
    assert message in text
    assert "unexpected error" not in text  # refused by validation, not by the last-resort catch


def test_an_unexpected_error_is_still_a_lookup_error_naming_the_step(monkeypatch):
    def broken(self, hosts, spec, explain=False):
        raise KeyError("free_ram_mb")

    monkeypatch.setattr(engine.Scheduler, "schedule", broken)
    with pytest.raises(AnsibleLookupError, match=r"unexpected error while scheduling: KeyError: 'free_ram_mb'"):
        schedule(options(), {})


def test_valid_input_still_schedules():
    opts = options({"metrics": {"m": "2"}}, metrics_weight_setting={"m": "1.0"}, weight_multipliers={"RAMWeigher": "2"})
    opts["hosts"][1] = dict(TWIN, metrics={"m": 1})
    assert [p["host"] for p in schedule(opts, {})] == ["h"]  # numeric strings are numbers, as everywhere else
