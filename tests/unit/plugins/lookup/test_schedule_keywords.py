# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The lookup plugin's own checks: keywords Ansible would ignore or coerce, and inventory facts of the wrong shape."""

from __future__ import annotations

import pytest
from ansible import constants as C
from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.yaml import yaml_load

from ansible_collections.nimbus.compute.plugins.lookup import schedule as schedule_lookup

BASE = {"hostname": "h", "total_usable_ram_mb": 4096, "total_usable_disk_gb": 100, "vcpus_total": 4}
FLAVOR = {"vcpus": 1, "memory_mb": 512, "root_gb": 1}


@pytest.fixture(scope="module")
def lookup():
    # The collection is imported from .collections as a plain package here, so the plugin loader cannot load
    # it: register the documented options as the loader would and run the plugin class itself.
    plugin = schedule_lookup.LookupModule()
    plugin._load_name = "nimbus.compute.schedule"
    options = yaml_load(schedule_lookup.DOCUMENTATION)["options"]
    C.config.initialize_plugin_configuration_definitions("lookup", plugin._load_name, options)
    return plugin


def run(lookup, variables=None, **kwargs):
    with pytest.raises(AnsibleLookupError) as err:
        lookup.run([], variables or {}, **kwargs)
    assert "unexpected error" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("kwargs", [{"cont": 3}, {"hint": {"group": {"policy": "anti-affinity"}}}])
def test_unknown_lookup_options_are_refused(lookup, kwargs):
    name = next(iter(kwargs))
    msg = run(lookup, flavor=FLAVOR, hosts=[BASE], **kwargs)
    assert "unknown option(s) %s; known: availability_zone, count" % name in msg


@pytest.mark.parametrize("name", ["explain", "metrics_required"])
def test_bool_options_refuse_words_that_are_not_booleans(lookup, name):
    msg = run(lookup, flavor=FLAVOR, hosts=[BASE], **{name: "maybe"})
    assert "%s must be true or false, got 'maybe'" % name in msg


def test_bool_options_still_take_ansible_boolean_words(lookup):
    placements = lookup.run([], {}, flavor=FLAVOR, hosts=[BASE], explain="yes", metrics_required="no")
    assert "explain" in placements[0]


@pytest.mark.parametrize("fact", ["oops", [1, 2]])
def test_a_nimbus_hypervisor_fact_that_is_not_a_dict_is_named(lookup, fact):
    variables = {"groups": {"hypervisors": ["hv1", "hv2"]},
                 "hostvars": {"hv1": {"nimbus_hypervisor": BASE}, "hv2": {"nimbus_hypervisor": fact}}}
    msg = run(lookup, variables, flavor=FLAVOR)
    assert "host hv2: nimbus_hypervisor must be a dict of host-state fields, got %s" % type(fact).__name__ in msg
