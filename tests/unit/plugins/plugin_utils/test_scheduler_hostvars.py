from __future__ import annotations

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.nimbus.compute.plugins.plugin_utils._scheduler import hosts_from_inventory


def variables(**hostvars):
    return {"groups": {"hypervisors": sorted(hostvars)}, "hostvars": hostvars}


def test_host_variable_outranks_the_gathered_fact():
    gathered = {"free_ram_mb": 4096}
    override = {"free_ram_mb": 512}
    found = hosts_from_inventory(variables(hv1={"ansible_facts": {"nimbus_hypervisor": gathered},
                                                "nimbus_hypervisor": override}), "hypervisors")
    assert found == [{"free_ram_mb": 512, "hostname": "hv1"}]


def test_gathered_fact_is_used_without_an_override():
    found = hosts_from_inventory(variables(hv1={"ansible_facts": {"nimbus_hypervisor": {"free_ram_mb": 1}}}), "hypervisors")
    assert found[0]["free_ram_mb"] == 1 and found[0]["hostname"] == "hv1"


def test_unknown_group_is_a_clear_error():
    with pytest.raises(AnsibleLookupError, match="inventory group 'nope' does not exist"):
        hosts_from_inventory(variables(hv1={}), "nope")
