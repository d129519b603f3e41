"""The pure-Python inspector on images built byte by byte: what it detects and what it refuses."""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._image import format_inspector as fi

sys.path.insert(0, os.path.dirname(__file__))
import image_crafted as crafted

MIB = crafted.MIB
DELTA_LINK = 'parentCID=1234abcd\nparentFileNameHint="/etc/shadow"'


def rule_of(data, declared, max_virtual_size=None):
    problem = fi.refusal(fi.inspect_bytes(data), declared, max_virtual_size)
    return problem.rule if problem else None


@pytest.mark.parametrize(
    "data, declared, size",
    [
        (crafted.qcow2(size=64 * MIB), "qcow2", 64 * MIB),
        (crafted.qcow2(size=8 * MIB, version=2), "qcow2", 8 * MIB),
        (crafted.qcow2(incompatible=0x1), "qcow2", 64 * MIB),  # dirty bit: known, harmless
        (crafted.vmdk_sparse(crafted.vmdk_descriptor()), "vmdk", 32 * MIB),
        (crafted.vmdk_sparse(crafted.vmdk_descriptor("streamOptimized")), "vmdk", 32 * MIB),
        (crafted.vdi(size=16 * MIB), "vdi", 16 * MIB),
        (crafted.vhd_footer(size=16 * MIB) + b"\0" * 1024 + crafted.vhd_footer(size=16 * MIB), "vhd", 16 * MIB),
        (b"\0" * 4096 + crafted.vhd_footer(size=4608, disk_type=2), "vhd", 4608),  # fixed: footer only at the end
        (crafted.vhdx(size=16 * MIB), "vhdx", 16 * MIB),
        (crafted.iso(), "iso", 64 * 1024),
        (b"\x7fELF" + b"\1" * 5000, "raw", 5004),
    ],
)
def test_good_images_are_detected_with_their_size(data, declared, size):
    found = fi.inspect_bytes(data)
    assert found.problems == []
    assert found.format == declared
    assert found.size_of() == size
    assert fi.refusal(found, declared) is None


@pytest.mark.parametrize(
    "data, declared, rule",
    [
        (crafted.qcow2(backing="/etc/shadow"), "qcow2", "qcow2-backing-file"),
        (crafted.qcow2(version=2, backing="base.img"), "qcow2", "qcow2-backing-file"),
        (crafted.qcow2(incompatible=1 << 2), "qcow2", "qcow2-data-file"),
        (crafted.qcow2(extensions=[(fi.QCOW2_EXT_DATA_FILE, b"/dev/sda")]), "qcow2", "qcow2-data-file"),
        (crafted.qcow2(incompatible=1 << 9), "qcow2", "qcow2-unknown-incompatible-features"),
        (crafted.qcow2(incompatible=1 << 1), "qcow2", "qcow2-corrupt"),
        (crafted.qcow2(crypt=1), "qcow2", "qcow2-encrypted"),
        (crafted.qcow2(length=40), "qcow2", "qcow2-bad-header"),
        (crafted.qcow2(length=90), "qcow2", "qcow2-bad-header"),
        (crafted.qcow2(cluster_bits=40), "qcow2", "qcow2-bad-header"),
        (crafted.qcow2(version=7), "qcow2", "qcow2-bad-header"),
        (fi.QED_MAGIC + b"\0" * 508, "raw", "qed-refused"),
        (crafted.vmdk_descriptor("monolithicFlat", ['RW 2048 FLAT "/etc/shadow" 0']).encode(), "vmdk", "vmdk-create-type"),
        (crafted.vmdk_sparse(crafted.vmdk_descriptor("vmfs")), "vmdk", "vmdk-create-type"),
        (crafted.vmdk_sparse(crafted.vmdk_descriptor(extents=['RW 2048 FLAT "/etc/shadow" 0'])), "vmdk", "vmdk-extent-outside"),
        (crafted.vmdk_sparse(crafted.vmdk_descriptor(extents=['RW 2048 SPARSE "../other.vmdk"'])), "vmdk", "vmdk-extent-outside"),
        (crafted.vmdk_sparse(crafted.vmdk_descriptor(extents=['RW 1 SPARSE "a.vmdk"', 'RW 1 SPARSE "b.vmdk"'])), "vmdk",
         "vmdk-extent-outside"),
        (crafted.vmdk_sparse(crafted.vmdk_descriptor())[:512], "vmdk", "vmdk-extent-outside"),  # descriptor past the end
        (fi.VMDK_MAGIC + b"\0" * 20, "vmdk", "vmdk-bad-header"),
        (crafted.vmdk_sparse(crafted.vmdk_descriptor().replace("parentCID=ffffffff", DELTA_LINK)), "vmdk", "vmdk-parent"),
        (crafted.vmdk_sparse(crafted.vmdk_descriptor().replace("parentCID=ffffffff", "parentCID=00000001")), "vmdk",
         "vmdk-parent"),
        (crafted.vdi(image_type=4), "vdi", "vdi-differencing"),
        (crafted.vdi()[:0x100], "vdi", "vdi-bad-header"),
        (crafted.vhd_footer(disk_type=4) + b"\0" * 512, "vhd", "vhd-differencing"),
        (crafted.vhdx(parent=True), "vhdx", "vhdx-differencing"),
        (fi.VHDX_SIGNATURE + b"\0" * 100, "vhdx", "vhdx-bad-header"),
        (crafted.iso(prefix=crafted.qcow2(length=512)), "iso", "multiple-formats"),
        (crafted.iso(prefix=crafted.vmdk_sparse(crafted.vmdk_descriptor())[:2048]), "vmdk", "multiple-formats"),
        (crafted.qcow2(length=4096) + crafted.vhd_footer(), "qcow2", "multiple-formats"),
        (fi.LUKS_MAGIC + b"\0" * 1000, "raw", "format-mismatch"),
        (crafted.qcow2(), "raw", "format-mismatch"),
        (crafted.qcow2(), "aki", "format-mismatch"),
        (crafted.vdi(), "ari", "format-mismatch"),
        (crafted.iso(), "raw", "format-mismatch"),
        (b"plain bytes", "qcow2", "format-mismatch"),
        # A bare descriptor of a safe type with one plain-named extent: the data is still elsewhere.
        (crafted.vmdk_descriptor("monolithicSparse", ['RW 2048 SPARSE "other.vmdk"']).encode(), "vmdk",
         "vmdk-extent-outside"),
        (b"", "raw", "empty-image"),
        (b"", "aki", "empty-image"),
        (crafted.qcow2(size=0), "qcow2", "empty-image"),
    ],
)
def test_hostile_images_are_refused_by_their_rule(data, declared, rule):
    assert rule_of(data, declared) == rule


def test_refusal_names_the_value():
    problem = fi.refusal(fi.inspect_bytes(crafted.qcow2(backing="/etc/shadow")), "qcow2")
    assert "'/etc/shadow'" in problem.detail
    problem = fi.refusal(fi.inspect_bytes(crafted.qcow2(incompatible=1 << 9)), "qcow2")
    assert "0x200" in problem.detail


def test_virtual_size_limit_uses_the_header_not_the_file_size():
    absurd = crafted.qcow2(size=1 << 62)
    assert len(absurd) < 1 << 20
    assert rule_of(absurd, "qcow2", max_virtual_size=1 << 30) == "virtual-size"
    assert rule_of(crafted.qcow2(size=1 << 30), "qcow2", max_virtual_size=1 << 30) is None
    assert rule_of(b"x" * 2000, "aki", max_virtual_size=1000) == "virtual-size"


def test_kernel_images_must_not_be_disk_images():
    assert rule_of(b"MZ" + b"\0" * 600 + b"HdrS", "aki") is None
    assert rule_of(b"\x1f\x8b\x08" + b"\0" * 100, "ari") is None


def test_backing_file_name_is_reported_for_cleanup():
    assert fi.inspect_bytes(crafted.qcow2(backing="../_base/abc")).backing_file == "../_base/abc"
    assert fi.inspect_bytes(crafted.qcow2()).backing_file is None


def test_inspect_file_reads_only_headers(tmp_path):
    path = tmp_path / "big.qcow2"
    with open(path, "wb") as handle:
        handle.write(crafted.qcow2(size=10 << 30))
        handle.truncate(10 << 30)  # sparse: reading it all would take seconds
    found = fi.inspect_file(str(path))
    assert found.format == "qcow2"
    assert found.size_of() == 10 << 30


@pytest.mark.parametrize("name,guid", [
    ("VHDX_METADATA_REGION", "8b7ca206-4790-4b9a-b8fe-575f050f886e"),
    ("VHDX_VIRTUAL_DISK_SIZE", "2fa54224-cd1b-4876-b211-5dbed83bf4b8"),
    ("VHDX_FILE_PARAMETERS", "caa16737-fa36-4d43-b3b6-33f0aa44e76b"),
    ("VHDX_PARENT_LOCATOR", "a8d35f2d-b30b-454d-abf7-d3d84834ab0c"),
])
def test_vhdx_guids_are_the_uuid_modules_little_endian_bytes(name, guid):
    import uuid

    assert getattr(fi, name) == uuid.UUID(guid).bytes_le
