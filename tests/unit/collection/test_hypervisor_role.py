"""The hypervisor role's defaults and its argument spec say the same thing, and the packages volumes need are in."""

from __future__ import annotations

import os

import yaml

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "hypervisor")


def _load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return yaml.safe_load(handle)


def test_defaults_match_the_argument_spec():
    defaults = _load("defaults", "main.yml")
    options = _load("meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options)
    for name, value in defaults.items():
        assert options[name].get("default") == value, name


def test_volume_packages_are_installed():
    # QEMU's iSCSI/RBD block drivers and iscsiadm (volume_attach).
    assert {"qemu-block-extra", "open-iscsi"} <= set(_load("defaults", "main.yml")["hypervisor_packages"])
