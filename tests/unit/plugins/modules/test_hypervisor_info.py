# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""hypervisor_info as a module against test:///default: facts, check mode, clear failures."""

from __future__ import annotations

import pytest
from moduletools import run_module

from ansible_collections.nimbus.compute.plugins.modules import hypervisor_info

pytest.importorskip("libvirt")


def run(args, capsys):
    return run_module(hypervisor_info, args, capsys)


def test_returns_the_fact_unchanged_in_check_mode(tmp_path, capsys):
    args = {"libvirt_uri": "test:///default", "instances_path": str(tmp_path), "cpu_allocation_ratio": 8.0,
            "aggregates": [{"name": "a", "metadata": {"k": "v"}}], "_ansible_check_mode": True}
    result = run(args, capsys)
    assert result["rc"] == 0 and result["changed"] is False
    fact = result["ansible_facts"]["nimbus_hypervisor"]
    assert fact["cpu_allocation_ratio"] == 8.0 and fact["vcpus_total"] == 16
    assert fact["aggregates"] == [{"name": "a", "metadata": {"k": "v"}}]
    assert fact["free_ram_mb"] == 3072 - 512 - 8192  # Nova's default reserved_host_memory_mb


def test_failures_are_reported_not_raised(tmp_path, capsys):
    result = run({"libvirt_uri": "test:///default", "instances_path": str(tmp_path), "reserved_host_cpus": -2}, capsys)
    assert result["rc"] == 1 and result["failed_step"] == "hypervisor_info"
    assert "reserved_host_cpus must not be negative" in result["msg"]
    result = run({"libvirt_uri": "test:///" + str(tmp_path / "nope.xml"), "instances_path": str(tmp_path)}, capsys)
    assert result["rc"] == 1 and "cannot connect to libvirt" in result["msg"] and result["reschedule"] is True
