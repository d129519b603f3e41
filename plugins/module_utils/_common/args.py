# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Argument specs repeated across modules, mirrored by doc fragment ``nimbus.compute.connection``."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.paths import DEFAULT_INSTANCES_PATH

LIBVIRT_URI_DEFAULT = "qemu:///system"

CONNECTION_ARGS = dict(
    libvirt_uri=dict(type="str", default=LIBVIRT_URI_DEFAULT),
)

INSTANCES_PATH_ARGS = dict(
    instances_path=dict(type="path", default=DEFAULT_INSTANCES_PATH),
)


def spec(*parts, **extra):
    """Merge shared argument dicts with a module's own options."""
    merged = {}
    for part in parts:
        merged.update(part)
    merged.update(extra)
    return merged


def given(params, key, default):
    """The option's value; its default only when it is missing (None), not when it is empty: an empty
    libvirt_uri is libvirt's own default connection and an empty instances_path is a relative path."""
    value = params.get(key)
    return default if value is None else value
