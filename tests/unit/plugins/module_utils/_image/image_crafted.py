"""Image headers built byte by byte (no qemu-img), shared by the inspector, fuzz and cleanup tests."""

from __future__ import annotations

import struct
import uuid

from ansible_collections.nimbus.compute.plugins.module_utils._image import format_inspector as fi

MIB = 1 << 20


def qcow2(size=64 * MIB, version=3, backing=None, incompatible=0, crypt=0, cluster_bits=16, extensions=(), length=None):
    """A qcow2 header (first cluster only) with optional backing file name and header extensions."""
    header_length = 104 if version == 3 else 72
    ext = b""
    for ext_type, data in extensions:
        ext += struct.pack(">II", ext_type, len(data)) + data + b"\0" * (-len(data) % 8)
    ext += struct.pack(">II", 0, 0)
    backing_bytes = backing.encode() if backing else b""
    backing_offset = header_length + len(ext) if backing else 0
    head = fi.QCOW2_MAGIC + struct.pack(">IQIIQI", version, backing_offset, len(backing_bytes), cluster_bits, size, crypt)
    head += b"\0" * (72 - len(head))
    if version == 3:
        head += struct.pack(">QQQII", incompatible, 0, 0, 4, header_length)
    data = head + ext + backing_bytes
    data += b"\0" * (65536 - len(data))
    return data[:length] if length is not None else data


def vmdk_sparse(descriptor, capacity_sectors=65536):
    """A monolithicSparse-style header with ``descriptor`` embedded at sector 1."""
    text = descriptor.encode()
    sectors = (len(text) + 511) // 512
    head = fi.VMDK_MAGIC + struct.pack("<IIQQQQ", 1, 3, capacity_sectors, 128, 1, sectors)
    head += b"\0" * (512 - len(head))
    return head + text + b"\0" * (sectors * 512 - len(text)) + b"\0" * 4096


def vmdk_descriptor(create_type="monolithicSparse", extents=('RW 65536 SPARSE "disk.vmdk"',)):
    lines = ["# Disk DescriptorFile", "version=1", "CID=fffffffe", "parentCID=ffffffff",
             'createType="%s"' % create_type, "", "# Extent description", *extents, ""]
    return "\n".join(lines)


def vdi(size=16 * MIB, image_type=1):
    head = bytearray(1024)
    head[0:40] = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
    struct.pack_into("<III I", head, 0x40, fi.VDI_SIGNATURE, 0x00010001, 400, image_type)
    struct.pack_into("<Q", head, 0x170, size)
    return bytes(head)


def vhd_footer(size=16 * MIB, disk_type=3):
    footer = bytearray(512)
    footer[0:8] = fi.VHD_COOKIE
    struct.pack_into(">QQ", footer, 40, size, size)
    struct.pack_into(">I", footer, 60, disk_type)
    return bytes(footer)


def vhdx(size=16 * MIB, parent=False):
    """Signature, one region table pointing at a metadata table with the virtual disk size."""
    data = bytearray(fi.VHDX_REGION_TABLE + 64 * 1024 + 4096)
    data[0:8] = fi.VHDX_SIGNATURE
    metadata_at = fi.VHDX_REGION_TABLE + 64 * 1024
    table = fi.VHDX_REGION_TABLE
    data[table:table + 4] = b"regi"
    struct.pack_into("<I", data, table + 8, 1)
    struct.pack_into("<16sQI", data, table + 16, fi.VHDX_METADATA_REGION, metadata_at, 4096)
    data[metadata_at:metadata_at + 8] = b"metadata"
    items = [(fi.VHDX_VIRTUAL_DISK_SIZE, struct.pack("<Q", size))]
    if parent:
        items.append((fi.VHDX_PARENT_LOCATOR, uuid.uuid4().bytes))
    struct.pack_into("<H", data, metadata_at + 10, len(items))
    value_at = 1024
    for index, (guid, value) in enumerate(items):
        struct.pack_into("<16sII", data, metadata_at + 32 + 32 * index, guid, value_at, len(value))
        data[metadata_at + value_at:metadata_at + value_at + len(value)] = value
        value_at += 64
    return bytes(data)


def iso(prefix=b""):
    """ISO 9660 primary volume descriptor at 32 KiB; the system area before it may hold anything."""
    data = bytearray(64 * 1024)
    data[:len(prefix)] = prefix
    data[0x8000:0x8006] = b"\x01CD001"
    return bytes(data)
