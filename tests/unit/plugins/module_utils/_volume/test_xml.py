"""The volume <disk> element and the <devices> edits (libvirt's insertion order, lookup by alias/serial)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from ansible_collections.nimbus.compute.plugins.module_utils._domain.compare import parse
from ansible_collections.nimbus.compute.plugins.module_utils._volume import iscsi, nbd
from ansible_collections.nimbus.compute.plugins.module_utils._volume import xml as volume_xml

SECRET = "738ef598-ed72-556d-8f7e-dc51e2816b61"


def chap_spec():
    spec, password = iscsi.validate({"target_portal": "127.0.0.1:3260", "target_iqn": "iqn.2026-11.compute.nimbus:t",
                                     "target_lun": 2, "auth_method": "CHAP", "auth_username": "nova",
                                     "auth_password": "Top-Secret-1"})
    return dict(spec, secret_uuid=SECRET), password


def test_iscsi_disk_names_the_secret_never_the_password():
    spec, password = chap_spec()
    disk = volume_xml.disk_element(spec, "vdb", "virtio", "vol-1")
    text = etree.tostring(disk, encoding="unicode")
    assert password not in text
    assert disk.get("type") == "network" and disk.find("driver").get("cache") == "none"
    source = disk.find("source")
    assert (source.get("protocol"), source.get("name")) == ("iscsi", "iqn.2026-11.compute.nimbus:t/2")
    assert source.find("host").attrib == {"name": "127.0.0.1", "port": "3260"}
    assert source.find("auth").get("username") == "nova"
    assert source.find("auth/secret").attrib == {"type": "iscsi", "uuid": SECRET}
    assert disk.findtext("serial") == "vol-1" and disk.find("alias").get("name") == "ua-volume-vol-1"
    assert disk.find("boot") is None and disk.find("readonly") is None


def test_host_side_block_disk_read_only_with_discard_and_boot_order():
    spec, _password = iscsi.validate({"target_portal": "127.0.0.1", "target_iqn": "iqn.2026-11.compute.nimbus:t"})
    spec.update(device_path=iscsi.device_path(spec), read_only=True, discard=True)
    disk = volume_xml.disk_element(spec, "sda", "scsi", "vol-2", boot_order=1)
    assert disk.get("type") == "block"
    assert disk.find("source").get("dev") == "/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.2026-11.compute.nimbus:t-lun-0"
    assert disk.find("driver").get("io") == "native" and disk.find("driver").get("discard") == "unmap"
    assert disk.find("readonly") is not None and disk.find("boot").get("order") == "1"


def test_nbd_disk_without_export_name():
    disk = volume_xml.disk_element(nbd.validate({"host": "127.0.0.1", "port": 10809}), "vdc", "virtio", "vol-3")
    assert disk.find("source").get("protocol") == "nbd" and "name" not in disk.find("source").attrib
    assert disk.find("source/auth") is None


@given(st.integers(min_value=0, max_value=26 * 27 - 1))
def test_device_names_round_trip(index):
    assert volume_xml.dev_index(volume_xml.dev_name("vd", index)) == index


def test_device_names_follow_libvirt():
    assert [volume_xml.dev_index(d) for d in ("vda", "vdz", "vdaa", "sdb", "bogus")] == [0, 25, 26, 1, -1]
    assert volume_xml.next_free({"vda", "vdb", "vdd", "sda"}, "virtio") == "vdc"
    assert volume_xml.next_free({"vda"}, "scsi") == "sda"


DOMAIN = """<domain type='qemu'><name>x</name><devices><emulator>/usr/bin/qemu</emulator>
<disk type='file' device='disk'><source file='/a'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='cdrom'><source file='/c'/><target dev='hda' bus='ide'/></disk>
<disk type='file' device='disk'><source file='/b'/><target dev='vdc' bus='virtio'/></disk>
<interface type='bridge'/></devices></domain>"""


def disk(dev, bus="virtio", volume_id=None):
    spec = nbd.validate({"host": "127.0.0.1", "export": dev})
    return volume_xml.disk_element(spec, dev, bus, volume_id or "vol-" + dev)


def order(root):
    return [t.get("dev") for t in root.iterfind("devices/disk/target")]


def test_insert_where_libvirt_inserts():
    root = parse(DOMAIN)
    volume_xml.insert_disk(root, disk("vdb"))
    assert order(root) == ["vda", "hda", "vdb", "vdc"]  # before the first same-bus disk with a higher index
    volume_xml.insert_disk(root, disk("vdd"))
    assert order(root) == ["vda", "hda", "vdb", "vdc", "vdd"]
    volume_xml.insert_disk(root, disk("sda", bus="scsi"))
    assert order(root) == ["vda", "hda", "vdb", "vdc", "vdd", "sda"]
    assert root.find("devices")[-1].tag == "interface"  # disks stay together, before the NICs


def test_insert_into_a_domain_without_disks():
    root = parse("<domain><name>x</name><devices><emulator>/q</emulator><serial type='pty'/></devices></domain>")
    volume_xml.insert_disk(root, disk("vda"))
    assert [c.tag for c in root.find("devices")] == ["emulator", "disk", "serial"]
    root = parse("<domain><name>x</name></domain>")
    volume_xml.insert_disk(root, disk("vda"))
    assert order(root) == ["vda"]


def test_find_and_remove_by_alias_or_serial():
    root = parse(DOMAIN)
    volume_xml.insert_disk(root, disk("vdb", volume_id="vol-9"))
    by_serial = etree.fromstring("<disk type='file'><source file='/s'/><target dev='vde' bus='virtio'/>"
                                 "<serial>vol-8</serial></disk>")
    volume_xml.insert_disk(root, by_serial)
    assert [d.find("target").get("dev") for d in volume_xml.volume_disks(root, "vol-9")] == ["vdb"]
    assert volume_xml.volume_disks(root, "vol-8") == [by_serial]
    assert volume_xml.remove_volume(root, "vol-9") == 1 and volume_xml.remove_volume(root, "vol-9") == 0
    assert order(root) == ["vda", "hda", "vdc", "vde"]
    assert volume_xml.volume_disks(None, "vol-8") == []


def test_source_key_matches_libvirt_formatting():
    ours = disk("vdb")
    theirs = parse("<domain><name>x</name><devices><disk type='network' device='disk'>"
                   "<source protocol='nbd' name='vdb' index='2'><host name='127.0.0.1' port='10809'/></source>"
                   "<target dev='vdq' bus='virtio'/></disk></devices></domain>").find("devices/disk")
    assert volume_xml.source_key(ours) == volume_xml.source_key(theirs)
    assert volume_xml.source_key(parse(DOMAIN).find("devices/disk")) == ("block", "/a")
