# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""NBD volumes: QEMU connects itself (``<source protocol='nbd' name='<export>'>``); nothing runs on the host."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._volume import common

DEFAULT_PORT = 10809
MAX_EXPORT = 4096  # NBD protocol limit on export names


def validate(data):
    """``{host, port, export}`` -> source spec (no credentials: NBD has none)."""
    host = common.host(common.require_str(data, "host", "the NBD server"), "NBD host")
    portnum = common.port(data.get("port"), "NBD port", DEFAULT_PORT)
    export = data.get("export")
    if export is not None and not isinstance(export, str):
        raise common.invalid("NBD export must be a string")
    export = (export or "").strip() or None
    if export is not None and (len(export) > MAX_EXPORT or not export.isprintable()):
        raise common.invalid("NBD export name must be printable and at most %d characters" % MAX_EXPORT)
    return {
        "driver": "nbd",
        "protocol": "nbd",
        "name": export,
        "hosts": [(host, portnum)],
        "auth_username": None,
        "secret_type": None,
    }
