# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Flavor sanity (RELIABILITY.md): vcpus >= 1, RAM >= 16 MiB, disks >= 0, each at most Nova's MAX_INT, a name.

Checked before anything changes, by both the claim and the disk step.
"""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import MAX_INT

MIN_MEMORY_MB = 16
# field -> smallest accepted value
LIMITS = {"vcpus": 1, "memory_mb": MIN_MEMORY_MB, "root_gb": 0, "ephemeral_gb": 0, "swap": 0}
MIB = 1 << 20
GIB = 1 << 30


def _integer(value, field, step):
    # bool is an int in Python; a flavor never means True vCPUs.
    if isinstance(value, bool):
        raise ValidationError("flavor %s must be an integer, not %r" % (field, value), step=step)
    if isinstance(value, int):
        return value
    # isdigit() also takes "²" and other digits that int() refuses: ASCII digits only.
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit():
        return int(text)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValidationError("flavor %s must be an integer, not %r" % (field, value), step=step)


def validate_flavor(flavor, step="validate"):
    """Return a normalised copy ``{name, vcpus, memory_mb, root_gb, ephemeral_gb, swap, extra_specs}``."""
    if not isinstance(flavor, dict):
        raise ValidationError("flavor must be a dictionary", step=step)
    name = flavor.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise ValidationError("flavor name must be a non-empty string of at most 255 characters", step=step)
    normalised = {"name": name}
    for field, minimum in LIMITS.items():
        if field in ("vcpus", "memory_mb") and field not in flavor:
            raise ValidationError("flavor %s is required" % field, step=step)
        value = _integer(flavor.get(field, 0) or 0, field, step)
        unit = " MiB" if field in ("memory_mb", "swap") else " GiB" if field.endswith("_gb") else ""
        if value < minimum:
            raise ValidationError("flavor %s is %d, must be at least %d%s" % (field, value, minimum, unit), step=step)
        # Nova's own bound on flavor fields; beyond it sizes overflow file and libvirt calls.
        if value > MAX_INT:
            raise ValidationError("flavor %s is %d, must be at most %d%s" % (field, value, MAX_INT, unit), step=step)
        normalised[field] = value
    extra_specs = flavor.get("extra_specs") or {}
    if not isinstance(extra_specs, dict):
        raise ValidationError("flavor extra_specs must be a dictionary", step=step)
    normalised["extra_specs"] = extra_specs
    return normalised


def requested_disk_mb(flavor):
    """Nova's DiskFilter request: root and ephemeral in GiB plus swap in MiB."""
    return 1024 * (flavor["root_gb"] + flavor["ephemeral_gb"]) + flavor["swap"]
