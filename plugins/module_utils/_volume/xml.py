# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The ``<disk>`` element of a volume and the edits of a domain's ``<devices>`` that attach/detach uses.

Every volume disk carries the user alias ``ua-volume-<volume id>`` and ``<serial>`` = volume id (Nova's
serial), so detach and the "attached elsewhere" check find it in any domain. Disks are inserted where
libvirt itself inserts them (``virDomainDiskInsert``: by bus, then target index), so the copy in
``libvirt.xml`` lists disks in libvirt's order and the domain step's comparison stays equal.
"""

from __future__ import annotations

import re

from ansible_collections.nimbus.compute.plugins.module_utils._domain.compare import _etree
from ansible_collections.nimbus.compute.plugins.module_utils._domain.xml_builder import DISK_BUS_PREFIX
from ansible_collections.nimbus.compute.plugins.module_utils._volume import common

ALIAS_PREFIX = "ua-volume-"
BUSES = ("virtio", "scsi", "sata")
DEV_RE = re.compile(r"^(vd|sd|hd|xvd)([a-z]{1,3})\Z")


def alias(volume_id):
    return ALIAS_PREFIX + volume_id


def _sub(parent, tag, text=None, **attrs):
    element = _etree().SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        element.text = str(text)
    return element


def disk_element(connection_info, target_dev, bus, serial, boot_order=None):
    """The ``<disk>`` for a validated source spec (from iscsi/nbd/rbd.validate, plus ``secret_uuid``,
    ``device_path`` for a host-side iSCSI LUN, ``read_only``, ``discard``). Credentials appear only as
    a secret's UUID."""
    spec = connection_info
    if bus not in BUSES:
        raise common.invalid("bus %r is not one of %s" % (bus, ", ".join(BUSES)))
    block = bool(spec.get("device_path"))
    disk = _etree().Element("disk", type="block" if block else "network", device="disk")
    _sub(disk, "driver", name="qemu", type="raw", cache="none", io="native" if block else None,
         discard="unmap" if spec.get("discard") else None)
    if block:
        _sub(disk, "source", dev=spec["device_path"])
    else:
        source = _sub(disk, "source", protocol=spec["protocol"], name=spec.get("name"))
        for host, portnum in spec["hosts"]:
            _sub(source, "host", name=host, port=portnum)
        if spec.get("auth_username"):
            auth = _sub(source, "auth", username=spec["auth_username"])
            _sub(auth, "secret", type=spec["secret_type"], uuid=spec["secret_uuid"])
    _sub(disk, "target", dev=target_dev, bus=bus)
    if boot_order is not None:
        _sub(disk, "boot", order=boot_order)
    if spec.get("read_only"):
        _sub(disk, "readonly")
    _sub(disk, "serial", serial)
    _sub(disk, "alias", name=alias(serial))
    return disk


def is_volume(disk, volume_id):
    element = disk.find("alias")
    if element is not None and element.get("name") == alias(volume_id):
        return True
    return (disk.findtext("serial") or "").strip() == volume_id


def volume_disks(domain, volume_id):
    """The disks of ``domain`` (a parsed ``<domain>``) that belong to the volume (alias or serial)."""
    if domain is None:
        return []
    return [disk for disk in domain.iterfind("devices/disk") if is_volume(disk, volume_id)]


def source_key(disk):
    """What a disk connects to, comparable across domains: (protocol, name, hosts) or ("block", dev)."""
    source = disk.find("source")
    if source is None:
        return None
    if disk.get("type") == "network":
        hosts = tuple(sorted((h.get("name", ""), h.get("port", "")) for h in source.iterfind("host")))
        return (source.get("protocol"), source.get("name"), hosts)
    path = source.get("dev") or source.get("file")
    return ("block", path) if path else None


def dev_index(dev):
    """libvirt's virDiskNameToIndex: vda -> 0, vdz -> 25, vdaa -> 26."""
    match = DEV_RE.match(dev or "")
    if not match:
        return -1
    index = 0
    for char in match.group(2):
        index = index * 26 + (ord(char) - ord("a") + 1)
    return index - 1


def dev_name(prefix, index):
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def used_devs(*domains):
    return {t.get("dev") for d in domains if d is not None for t in d.iterfind("devices/disk/target")}


def check_device(device, bus):
    match = DEV_RE.match(device or "")
    if not match or match.group(1) != DISK_BUS_PREFIX[bus]:
        raise common.invalid("device %r is not a %sX name for bus %s" % (device, DISK_BUS_PREFIX[bus], bus))
    return device


def next_free(used, bus):
    """Nova's blockinfo.find_disk_dev_for_disk_bus: the first free name on the bus's prefix."""
    prefix = DISK_BUS_PREFIX[bus]
    for index in range(26 * 27):
        name = dev_name(prefix, index)
        if name not in used:
            return name
    raise common.invalid("no free device name left on bus %s" % bus)


def insert_disk(domain, disk):
    """Insert ``disk`` into ``<devices>`` where libvirt's virDomainDiskInsert puts it."""
    devices = domain.find("devices")
    if devices is None:
        devices = _sub(domain, "devices")
    disks = list(devices.iterfind("disk"))
    bus = disk.find("target").get("bus")
    index = dev_index(disk.find("target").get("dev"))
    insert_at = -1
    for pos in range(len(disks) - 1, -1, -1):
        target = disks[pos].find("target")
        same_bus = target is not None and target.get("bus") == bus
        if same_bus and dev_index(target.get("dev")) > index:
            insert_at = pos
        elif same_bus and insert_at == -1:
            insert_at = pos + 1
    if insert_at == -1 or insert_at >= len(disks):
        anchor = disks[-1] if disks else devices.find("emulator")
        if anchor is None:
            devices.insert(0, disk)
        else:
            anchor.addnext(disk)
    else:
        disks[insert_at].addprevious(disk)
    return disk


def remove_volume(domain, volume_id):
    """Remove the volume's disks from a parsed domain; returns how many were removed."""
    found = volume_disks(domain, volume_id)
    for disk in found:
        disk.getparent().remove(disk)
    return len(found)
