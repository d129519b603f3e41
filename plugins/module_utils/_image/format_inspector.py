# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""A pure-Python disk image format inspector: every image is hostile until these checks pass.

It reads only headers (a few KiB at fixed or header-given offsets, each read bounded) and never
runs qemu-img, so it can look at a downloaded file *before* any qemu code parses it. ``inspect``
never raises on bad input: it returns what each format inspector claimed and the safety problems
found, each named by a rule (``qcow2-backing-file`` ...). ``refusal`` turns that into one reason.
"""

from __future__ import annotations

import io
import os
import re
import struct

# Formats a user may declare for a disk image, and the qemu-img driver for each.
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx", "iso")
# Kernel and ramdisk for direct kernel boot (Nova's names): byte-for-byte, must not be a disk image.
KERNEL_FORMATS = ("aki", "ari")
QEMU_DRIVER = {"raw": "raw", "iso": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vdi": "vdi", "vhd": "vpc", "vhdx": "vhdx"}

MAX_READ = 1 << 20  # no single header read is larger than this
SECTOR = 512

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_KNOWN_INCOMPATIBLE = 0x1F  # dirty, corrupt, external data file, compression type, extended L2
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_EXT_DATA_FILE = 0x44415441
QCOW2_EXT_END = 0
QED_MAGIC = b"QED\x00"
VMDK_MAGIC = b"KDMV"
VMDK_DESCRIPTOR_TEXT = b"# Disk DescriptorFile"
VMDK_SAFE_TYPES = ("monolithicSparse", "streamOptimized")
VDI_SIGNATURE = 0xBEDA107F
VDI_DIFFERENCING_TYPES = (3, 4)  # undo, diff: both have a parent image
VHD_COOKIE = b"conectix"
VHD_DIFFERENCING = 4
VHDX_SIGNATURE = b"vhdxfile"
VHDX_REGION_TABLE = 192 * 1024


def _guid_bytes_le(text):
    """A GUID's on-disk bytes, as the uuid module's bytes_le: the first three fields little-endian.
    Without that module, whose import costs several ms of every image_cache run."""
    raw = bytes.fromhex(text.replace("-", ""))
    return raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]


VHDX_METADATA_REGION = _guid_bytes_le("8b7ca206-4790-4b9a-b8fe-575f050f886e")
VHDX_VIRTUAL_DISK_SIZE = _guid_bytes_le("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
VHDX_FILE_PARAMETERS = _guid_bytes_le("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VHDX_PARENT_LOCATOR = _guid_bytes_le("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
ISO_PVD_OFFSET = 0x8000
ISO_ID = b"CD001"
LUKS_MAGIC = b"LUKS\xba\xbe"


class Problem:
    """One safety rule an image breaks: ``rule`` is a stable name, ``detail`` says the value."""

    __slots__ = ("detail", "rule")

    def __init__(self, rule, detail):
        self.rule = rule
        self.detail = detail

    def __repr__(self):
        return "Problem(%r, %r)" % (self.rule, self.detail)

    def __str__(self):
        return "%s (%s)" % (self.rule, self.detail)


class Inspection:
    """What the inspectors found in one file."""

    def __init__(self, size):
        self.size = size
        self.claims = []  # formats whose signature matched, in inspector order
        self.virtual_size = {}  # format -> virtual size in bytes
        self.problems = []
        self.backing_file = None  # qcow2 backing file name, for cache cleanup

    @property
    def format(self):
        """The detected format: the one claimant, ``raw`` when none claimed, None when ambiguous."""
        if not self.claims:
            return "raw"
        return self.claims[0] if len(self.claims) == 1 else None

    def size_of(self, fmt=None):
        fmt = fmt or self.format
        if fmt == "raw":
            return self.size
        return self.virtual_size.get(fmt, 0)

    def add(self, rule, detail):
        self.problems.append(Problem(rule, detail))


class _Reader:
    """Bounded positional reads from a file object; short reads past the end return fewer bytes."""

    def __init__(self, handle, size):
        self.handle = handle
        self.size = size

    def read(self, offset, length):
        if offset < 0 or offset >= self.size or length <= 0:
            return b""
        length = min(length, MAX_READ, self.size - offset)
        self.handle.seek(offset)
        return self.handle.read(length)


def _unpack(fmt, data, offset=0):
    return struct.unpack_from(fmt, data, offset)


def _claim(found, fmt, header, needed):
    """Record that ``fmt`` claims the file; False (a bad-header problem) when its header is short."""
    found.claims.append(fmt)
    if len(header) < needed:
        found.add("%s-bad-header" % fmt, "header truncated at %d bytes" % len(header))
        return False
    return True


def _qcow2(reader, found):
    head = reader.read(0, 4096)
    if not head.startswith(QCOW2_MAGIC) or not _claim(found, "qcow2", head, 72):
        return
    (version, backing_offset, backing_size, cluster_bits, size, crypt_method) = _unpack(">IQIIQI", head, 4)
    found.virtual_size["qcow2"] = size
    if version not in (2, 3):
        found.add("qcow2-bad-header", "version %d" % version)
    if not 9 <= cluster_bits <= 21:
        found.add("qcow2-bad-header", "cluster_bits %d" % cluster_bits)
    if backing_offset:
        name = reader.read(backing_offset, min(backing_size, 1023)).decode("utf-8", "replace")
        found.backing_file = name
        found.add("qcow2-backing-file", "backing file %r" % name)
    if crypt_method:
        found.add("qcow2-encrypted", "crypt_method %d" % crypt_method)
    ext_start = 72
    if version == 3:
        if len(head) < 104:
            found.add("qcow2-bad-header", "version 3 header truncated at %d bytes" % len(head))
            return
        incompatible, header_length = _unpack(">Q", head, 72)[0], _unpack(">I", head, 100)[0]
        if not 104 <= header_length <= len(head):
            found.add("qcow2-bad-header", "header_length %d" % header_length)
        if incompatible & QCOW2_INCOMPAT_DATA_FILE:
            found.add("qcow2-data-file", "incompatible feature bit 2 (external data file) is set")
        if incompatible & QCOW2_INCOMPAT_CORRUPT:
            found.add("qcow2-corrupt", "incompatible feature bit 1 (corrupt) is set")
        if incompatible & ~QCOW2_KNOWN_INCOMPATIBLE:
            found.add("qcow2-unknown-incompatible-features", "bits 0x%x" % (incompatible & ~QCOW2_KNOWN_INCOMPATIBLE))
        ext_start = header_length
    _qcow2_extensions(head, ext_start, found)


def _qcow2_extensions(head, offset, found):
    """Walk header extensions in the first 4 KiB; an external data file name is refused even
    without its feature bit."""
    while offset + 8 <= len(head):
        ext_type, length = _unpack(">II", head, offset)
        if ext_type == QCOW2_EXT_END:
            return
        if ext_type == QCOW2_EXT_DATA_FILE:
            name = head[offset + 8 : offset + 8 + length].decode("utf-8", "replace")
            found.add("qcow2-data-file", "external data file %r" % name)
        offset += 8 + ((length + 7) & ~7)


def _qed(reader, found):
    if reader.read(0, 4) == QED_MAGIC:
        found.claims.append("qed")
        found.add("qed-refused", "QED images are not accepted")


_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?', re.M)
_CREATE_TYPE = re.compile(r'^createType\s*=\s*"([^"]*)"', re.M)
_PARENT_HINT = re.compile(r'^parentFileNameHint\s*=\s*"([^"]*)"', re.M)
_PARENT_CID = re.compile(r"^parentCID\s*=\s*([0-9a-fA-F]+)", re.M)


def _vmdk(reader, found):
    head = reader.read(0, 512)
    if head.startswith(VMDK_DESCRIPTOR_TEXT):
        # A bare text descriptor points at other files: never one self-contained image.
        found.claims.append("vmdk")
        _vmdk_descriptor(reader.read(0, 64 * 1024), found)
        found.add("vmdk-extent-outside", "a bare text descriptor: its data is in other files")
        return
    if not head.startswith(VMDK_MAGIC) or not _claim(found, "vmdk", head, 44):
        return
    capacity, _grain, desc_offset, desc_size = _unpack("<QQQQ", head, 12)
    found.virtual_size["vmdk"] = capacity * SECTOR
    if not desc_offset or not desc_size:
        found.add("vmdk-bad-header", "no embedded descriptor")
        return
    start, length = desc_offset * SECTOR, desc_size * SECTOR
    if length > MAX_READ or start + length > reader.size:
        found.add("vmdk-extent-outside", "descriptor at %d+%d is outside the %d-byte file" % (start, length, reader.size))
        return
    _vmdk_descriptor(reader.read(start, length), found)


def _vmdk_descriptor(raw, found):
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    match = _CREATE_TYPE.search(text)
    create_type = match.group(1) if match else None
    if create_type not in VMDK_SAFE_TYPES:
        found.add("vmdk-create-type", "createType %r (allowed: %s)" % (create_type, ", ".join(VMDK_SAFE_TYPES)))
    # A delta link: qemu opens parentFileNameHint as the backing file.
    hint, parent_cid = _PARENT_HINT.search(text), _PARENT_CID.search(text)
    if hint or (parent_cid and parent_cid.group(1).lower() != "ffffffff"):
        name = hint.group(1) if hint else None
        found.add("vmdk-parent", "parent %r (parentCID %s)" % (name, parent_cid.group(1) if parent_cid else None))
    extents = _EXTENT.findall(text)
    if len(extents) != 1:
        found.add("vmdk-extent-outside", "%d extents (a monolithic image has exactly one)" % len(extents))
    for _access, _sectors, kind, name in extents:
        if kind != "SPARSE" or "/" in name or "\\" in name:
            found.add("vmdk-extent-outside", "extent %s %r is not inside this file" % (kind, name))


def _vdi(reader, found):
    head = reader.read(0, 512)
    if len(head) < 0x48 or _unpack("<I", head, 0x40)[0] != VDI_SIGNATURE or not _claim(found, "vdi", head, 0x178):
        return
    image_type = _unpack("<I", head, 0x4C)[0]
    found.virtual_size["vdi"] = _unpack("<Q", head, 0x170)[0]
    if image_type in VDI_DIFFERENCING_TYPES:
        found.add("vdi-differencing", "image type %d has a parent image" % image_type)


def _vhd(reader, found):
    footer = reader.read(0, 512)
    if not footer.startswith(VHD_COOKIE):
        # A fixed VHD has its footer only at the end.
        footer = reader.read(reader.size - 512, 512) if reader.size >= 512 else b""
        if not footer.startswith(VHD_COOKIE):
            return
    if not _claim(found, "vhd", footer, 64):
        return
    found.virtual_size["vhd"] = _unpack(">Q", footer, 48)[0]
    disk_type = _unpack(">I", footer, 60)[0]
    if disk_type == VHD_DIFFERENCING:
        found.add("vhd-differencing", "disk type 4 (differencing) has a parent image")


def _vhdx(reader, found):
    if reader.read(0, 8) != VHDX_SIGNATURE:
        return
    found.claims.append("vhdx")
    table = reader.read(VHDX_REGION_TABLE, 64 * 1024)
    if len(table) < 16 or table[:4] != b"regi":
        found.add("vhdx-bad-header", "no region table at 192 KiB")
        return
    count = min(_unpack("<I", table, 8)[0], (len(table) - 16) // 32)
    for index in range(count):
        guid, offset, length = _unpack("<16sQI", table, 16 + 32 * index)
        if guid == VHDX_METADATA_REGION:
            _vhdx_metadata(reader, offset, length, found)
            return
    found.add("vhdx-bad-header", "no metadata region")


def _vhdx_metadata(reader, region, length, found):
    meta = reader.read(region, min(length, 64 * 1024))
    if len(meta) < 32 or meta[:8] != b"metadata":
        found.add("vhdx-bad-header", "no metadata table at %d" % region)
        return
    count = min(_unpack("<H", meta, 10)[0], (len(meta) - 32) // 32)
    size = None
    for index in range(count):
        guid, offset, item_length = _unpack("<16sII", meta, 32 + 32 * index)
        if guid == VHDX_PARENT_LOCATOR:
            found.add("vhdx-differencing", "parent locator present")
        elif guid == VHDX_VIRTUAL_DISK_SIZE and item_length >= 8:
            value = reader.read(region + offset, 8)
            size = _unpack("<Q", value)[0] if len(value) == 8 else None
        elif guid == VHDX_FILE_PARAMETERS and item_length >= 8:
            value = reader.read(region + offset, 8)
            if len(value) == 8 and _unpack("<I", value, 4)[0] & 0x2:
                found.add("vhdx-differencing", "file parameters say HasParent")
    if size is None:
        found.add("vhdx-bad-header", "no virtual disk size in the metadata")
    else:
        found.virtual_size["vhdx"] = size


def _iso(reader, found):
    pvd = reader.read(ISO_PVD_OFFSET, 2048)
    if pvd[1:6] != ISO_ID:
        return
    found.claims.append("iso")
    # qemu reads an ISO as raw: its virtual size is the file size.
    found.virtual_size["iso"] = reader.size


def _luks(reader, found):
    if reader.read(0, 6) == LUKS_MAGIC:
        found.claims.append("luks")


INSPECTORS = (_qcow2, _qed, _vmdk, _vdi, _vhd, _vhdx, _iso, _luks)


def inspect_handle(handle, size):
    """Run every inspector over a seekable binary file object of ``size`` bytes."""
    reader = _Reader(handle, size)
    found = Inspection(size)
    for inspector in INSPECTORS:
        inspector(reader, found)
    if len(found.claims) > 1:  # the first reason given: a polyglot's other findings are noise
        found.problems.insert(0, Problem("multiple-formats", "claimed by %s" % " and ".join(found.claims)))
    return found


def inspect_file(path):
    with open(path, "rb") as handle:
        return inspect_handle(handle, os.fstat(handle.fileno()).st_size)


def inspect_bytes(data):
    return inspect_handle(io.BytesIO(data), len(data))


def refusal(found, declared, max_virtual_size=None):
    """The first Problem that refuses this image for the ``declared`` format, or None if it is safe.

    Kernel and ramdisk images (aki/ari) are stored as they are: they must not look like any disk
    image format at all.
    """
    if found.problems:
        return found.problems[0]
    detected = found.format
    expected = "raw" if declared in KERNEL_FORMATS else declared
    if detected != expected:
        return Problem("format-mismatch", "declared %s, detected %s" % (declared, detected))
    size = found.size_of(detected)
    if not size:  # stored, it would fail the cached-base check of every later run
        return Problem("empty-image", "virtual size 0: the image holds no data")
    if max_virtual_size is not None and size > max_virtual_size:
        return Problem("virtual-size", "virtual size %d bytes exceeds the limit of %d bytes" % (size, max_virtual_size))
    return None
