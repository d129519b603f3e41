# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""libvirt secrets for volume credentials (iSCSI CHAP), set through the API only.

The secret's value goes from memory to libvirtd with ``secretDefineXML`` + ``setValue``: never on a
command line, in an XML file or in a log. Secrets are ``private`` (libvirt never hands the value back)
and persistent (a domain started after a libvirtd restart still finds them). Each volume has its own
secret, named from the volume id, so detaching one volume removes exactly its secret.
"""

from __future__ import annotations

import uuid as uuidlib

from ansible_collections.nimbus.compute.plugins.module_utils._domain.compare import _etree
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import libvirt_module
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import STEP, VolumeError

# uuid5 namespace of nimbus.compute volume secrets: the same volume always maps to the same secret.
NAMESPACE = uuidlib.UUID("5b0c2f0e-8a51-4c1e-9a3f-6e9c1d0a7b42")
USAGE_PREFIX = "nimbus-volume-"


def secret_uuid(volume_id):
    return str(uuidlib.uuid5(NAMESPACE, "volume:%s" % volume_id))


def usage_name(volume_id):
    return USAGE_PREFIX + volume_id


def secret_xml(uuid, usage_type, volume_id):
    etree = _etree()
    root = etree.Element("secret", ephemeral="no", private="yes")
    etree.SubElement(root, "uuid").text = uuid
    etree.SubElement(root, "description").text = "nimbus.compute volume %s (%s)" % (volume_id, usage_type)
    usage = etree.SubElement(root, "usage", type=usage_type)
    etree.SubElement(usage, "target" if usage_type == "iscsi" else "name").text = usage_name(volume_id)
    return etree.tostring(root, encoding="unicode")


def lookup(conn, uuid):
    """The secret with this UUID, or None."""
    libvirt = libvirt_module(STEP)
    try:
        return conn.secretLookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        # A driver without secrets (test:///default) has none of ours either.
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_ERR_NO_SUPPORT):
            return None
        raise VolumeError("looking up libvirt secret %s failed: %s" % (uuid, exc.get_error_message()))


def define(conn, volume_id, value, usage_type="iscsi"):
    """Define (or refresh) the volume's secret with ``value``; returns (uuid, created)."""
    libvirt = libvirt_module(STEP)
    uuid = secret_uuid(volume_id)
    secret = lookup(conn, uuid)
    created = secret is None
    try:
        if created:
            secret = conn.secretDefineXML(secret_xml(uuid, usage_type, volume_id))
        secret.setValue(value.encode("utf-8"))
    except libvirt.libvirtError as exc:
        if created and secret is not None:
            undefine(conn, uuid)
        # libvirt's message names the secret, never its value.
        raise VolumeError("storing the %s secret of volume %s in libvirt failed: %s" % (usage_type, volume_id,
                                                                                        exc.get_error_message()))
    return uuid, created


def undefine(conn, uuid):
    """Remove the secret; True when there was one."""
    libvirt = libvirt_module(STEP)
    secret = lookup(conn, uuid)
    if secret is None:
        return False
    try:
        secret.undefine()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SECRET:
            return False
        raise VolumeError("removing libvirt secret %s failed: %s" % (uuid, exc.get_error_message()))
    return True
