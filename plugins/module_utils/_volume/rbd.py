# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""RBD (Ceph) volumes: QEMU's librbd connects to the monitors with a cephx user whose key is a libvirt
``ceph`` secret already defined on the host (Nova's ``rbd_secret_uuid``). Not exercised against a live
Ceph cluster here: the XML is checked against libvirt's schema and by ``defineXML``."""

from __future__ import annotations

import re

from ansible_collections.nimbus.compute.plugins.module_utils._common.paths import validate_uuid
from ansible_collections.nimbus.compute.plugins.module_utils._volume import common
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import STEP

DEFAULT_PORT = 6789
NAME_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
CEPH_USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


def _list(data, key):
    value = data.get(key) or []
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, list):
        raise common.invalid("connection_info.data.%s must be a list" % key)
    return value


def validate(data):
    """Nova's RBD ``connection_info.data`` (``name`` pool/image, ``hosts``, ``ports``, ``auth_username``,
    ``secret_uuid``) -> source spec."""
    name = common.require_str(data, "name", "pool/image")
    parts = name.split("/")
    if len(parts) not in (2, 3) or not all(NAME_PART_RE.match(p) for p in parts):
        raise common.invalid("RBD name %r is not pool/image (or pool/namespace/image)" % name)
    hosts = _list(data, "hosts")
    ports = _list(data, "ports")
    if not hosts:
        raise common.invalid("connection_info.data.hosts (Ceph monitors) is required")
    if ports and len(ports) != len(hosts):
        raise common.invalid("connection_info.data.ports must have one port per monitor host")
    monitors = [(common.host(h, "Ceph monitor"), common.port(ports[i] if ports else None, "Ceph monitor port", DEFAULT_PORT))
                for i, h in enumerate(hosts)]
    username = data.get("auth_username") or None
    enabled = data.get("auth_enabled")
    enabled = bool(username) if enabled is None else bool(enabled)
    secret_uuid = None
    # ``keyring`` (Cinder's rbd_keyring_conf) and ``cluster_name`` are ignored, as Nova's libvirt driver does:
    # QEMU reaches the monitors in ``hosts`` with the key from the libvirt secret, and a key never goes to a
    # file or a command line here.
    if enabled:
        if not username or not CEPH_USER_RE.match(str(username)):
            raise common.invalid("RBD auth needs auth_username (a cephx user such as cinder)")
        if data.get("secret_type") not in (None, "ceph"):
            raise common.invalid("RBD secret_type must be ceph")
        if not data.get("secret_uuid"):
            raise common.invalid("RBD auth needs secret_uuid, the UUID of the host's libvirt ceph secret holding the "
                                 "cephx key%s" % ("; the keyring in connection_info is not used (a key is never put "
                                                  "on disk or on a command line)" if data.get("keyring") else ""))
        secret_uuid = validate_uuid(data.get("secret_uuid"), what="RBD secret_uuid", step=STEP)
    return {
        "driver": "rbd",
        "protocol": "rbd",
        "name": name,
        "hosts": monitors,
        "auth_username": str(username) if enabled else None,
        "secret_type": "ceph" if enabled else None,
        "secret_uuid": secret_uuid,
    }
