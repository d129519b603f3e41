# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The lookup glue on inventory facts: build failures given as a host variable weigh, stale facts are named."""

from __future__ import annotations

import datetime

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.nimbus.compute.plugins.plugin_utils._scheduler import schedule

FLAVOR = {"vcpus": 1, "memory_mb": 512}
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def fact(ram, **fields):
    return dict({"hostname": "ignored", "total_usable_ram_mb": ram, "total_usable_disk_gb": 100, "vcpus_total": 8}, **fields)


def inventory(**hostvars):
    return {"groups": {"hypervisors": list(hostvars)}, "hostvars": hostvars}


def test_failed_builds_from_a_host_variable_steer_the_build_failure_weigher():
    # hypervisor_info reports failed_builds 0 (nothing records failures yet); a nimbus_hypervisor host
    # variable outranks the gathered fact, so an operator or a test can still give the weigher something.
    variables = inventory(hv1={"ansible_facts": {"nimbus_hypervisor": fact(16384)}},
                          hv2={"ansible_facts": {"nimbus_hypervisor": fact(8192)}})
    options = {"flavor": FLAVOR, "hypervisor_group": "hypervisors"}
    assert schedule(options, variables)[0]["host"] == "hv1"  # more free RAM
    variables["hostvars"]["hv1"]["nimbus_hypervisor"] = fact(16384, failed_builds=1)
    assert schedule(options, variables)[0]["host"] == "hv2"  # -1,000,000 x a failure outweighs RAM


def test_stale_gathered_facts_are_named_with_their_age():
    gathered = {"last_seen_up": NOW.isoformat()}  # what hypervisor_info writes: the gather time
    variables = inventory(hv1={"nimbus_hypervisor": fact(16384, service=gathered)},
                          hv2={"nimbus_hypervisor": fact(8192, service=gathered)})
    options = {"flavor": FLAVOR, "hypervisor_group": "hypervisors", "now": NOW.timestamp() + 90}
    with pytest.raises(AnsibleLookupError, match=r"removed 2 of 2 hosts; 2 of them only because their facts are stale: "
                                                 r"the newest last_seen_up \(host hv1\) is 90 s old, more than "
                                                 r"service_down_time \(60 s\)"):
        schedule(options, variables)
    assert schedule(dict(options, service_down_time=120), variables)[0]["host"] == "hv1"
