from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._domain import compare
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import DomainError

OURS = """<domain type='qemu'><name>instance-a</name><memory unit='KiB'>65536</memory>
<devices>
  <disk type='file' device='disk'><source file='/i/disk'/><target dev='vda' bus='virtio'/></disk>
  <serial type='file'><source path='/i/console.log'/><target port='0'/></serial>
</devices></domain>"""

# What libvirt gives back: defaults, addresses, other order, extra controllers.
THEIRS = """<domain type='qemu' id='3'>
  <name>instance-a</name><uuid>x</uuid>
  <memory unit='KiB'>65536</memory><currentMemory unit='KiB'>65536</currentMemory>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='/i/console.log'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target></serial>
    <disk type='file' device='disk'><driver name='qemu'/><source file='/i/disk'/><target dev='vda' bus='virtio'/>
      <address type='pci' slot='0x04'/></disk>
    <controller type='usb' index='0'/>
  </devices>
</domain>"""


def test_libvirt_defaults_and_order_do_not_count():
    same, before, after = compare.compare(THEIRS, OURS)
    assert same, before + after


def test_changed_value_is_a_difference_with_readable_diff():
    same, before, after = compare.compare(THEIRS.replace("65536</memory>", "98304</memory>"), OURS)
    assert not same and "98304" in before and "65536" in after and "address" not in before


def test_extra_or_missing_owned_device_is_a_difference():
    extra_disk = THEIRS.replace("<controller", "<disk type='file' device='disk'><source file='/i/disk.local'/></disk><controller")
    assert compare.compare(extra_disk, OURS)[0] is False
    nic = THEIRS.replace("<controller", "<interface type='bridge'><source bridge='br0'/></interface><controller")
    assert compare.compare(nic, OURS)[0] is False, "a NIC we no longer ask for is a change"
    no_serial = OURS.replace("<serial type='file'><source path='/i/console.log'/><target port='0'/></serial>", "")
    assert compare.compare(no_serial, OURS)[0] is False


def test_disk_order_matters():
    two = OURS.replace("<serial", "<disk type='file' device='disk'><source file='/i/disk.local'/></disk><serial")
    swapped = two.replace("/i/disk'", "/i/TMP'").replace("/i/disk.local'", "/i/disk'").replace("/i/TMP'", "/i/disk.local'")
    assert compare.compare(two, two)[0] is True
    assert compare.compare(swapped, two)[0] is False


def test_parse_does_not_expand_entities_or_fetch():
    xxe = """<?xml version="1.0"?><!DOCTYPE domain [<!ENTITY x SYSTEM "file:///etc/hostname">]>
<domain><name>&x;</name></domain>"""
    root = compare.parse(xxe)
    assert (root.findtext("name") or "") == ""


@pytest.mark.parametrize("text", ["<domain>", "<network/>", "not xml"])
def test_parse_errors_are_domain_errors(text):
    with pytest.raises(DomainError):
        compare.parse(text)
