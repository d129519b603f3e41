from __future__ import annotations

import gzip
import importlib.util
import lzma
import os
import shutil
import struct
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = importlib.util.spec_from_file_location("guest_image", os.path.join(HERE, "..", "..", "lab", "guest_image.py"))
guest_image = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(guest_image)


@pytest.mark.skipif(not shutil.which("cpio"), reason="cpio not installed")
def test_cpio_newc_is_readable_by_gnu_cpio(tmp_path):
    archive = guest_image.cpio_newc([("bin", 0o40755, None), ("bin/x", 0o100755, b"abc"), ("init", 0o100755, b"#!/bin/sh\n")])
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=archive, capture_output=True, check=True).stdout.decode()
    assert listing.split() == ["bin", "bin/x", "init"]
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "bin" / "x").read_bytes() == b"abc"
    assert os.access(tmp_path / "init", os.X_OK)


def test_init_loads_virtio_ring_before_virtio():
    # virtio.ko needs virtio_ring's symbols: the wrong order leaves the guest without disks.
    names = [os.path.basename(m) for m in guest_image.MODULES]
    assert names.index("virtio_ring.ko") < names.index("virtio.ko") < names.index("virtio_pci.ko") < names.index("virtio_blk.ko")


def test_records_link_kernel_and_ramdisk(tmp_path):
    paths = {}
    for name in ("vmlinuz", "initrd.img", "root.qcow2"):
        paths[name] = str(tmp_path / name)
        (tmp_path / name).write_bytes(name.encode())
    guest_image.OUT = str(tmp_path)
    result = guest_image.records(paths, "abc", "linux-image-x")
    root = result["nimbus_guest_image"]
    assert root["disk_format"] == "qcow2"
    assert root["properties"]["kernel_id"] == result["nimbus_guest_kernel"]["id"]
    assert root["properties"]["ramdisk_id"] == result["nimbus_guest_ramdisk"]["id"]
    assert result["nimbus_guest_kernel"]["checksum"].startswith("sha256:")
    assert (tmp_path / "images.json").exists()


def test_a_cached_build_is_kept_when_apt_knows_a_newer_kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(guest_image, "OUT", str(tmp_path))
    for name in ("vmlinuz", "initrd.img", "root.qcow2"):
        (tmp_path / name).write_bytes(name.encode())
    package = "linux-image-6.1.0-50-amd64"
    (tmp_path / "build-id").write_text("%s %s\n" % (guest_image._build_id(package), package))

    def newer_kernel_in_apt():
        raise AssertionError("a complete cached build must not ask apt")

    monkeypatch.setattr(guest_image, "kernel_package", newer_kernel_in_apt)
    result = guest_image.build()
    assert result["nimbus_guest_build"] == {"id": guest_image._build_id(package), "kernel_package": package}
    assert (tmp_path / "vmlinuz").read_bytes() == b"vmlinuz", "nothing rebuilt"

    (tmp_path / "initrd.img").unlink()  # an incomplete cache is rebuilt, asking apt which kernel
    with pytest.raises(AssertionError, match="must not ask apt"):
        guest_image.build()


def _elf_with_notes(notes):
    """A minimal ELF64 (little-endian) whose one PT_NOTE segment holds (name, type, desc) notes."""
    body = b""
    for name, note_type, desc in notes:
        named = name + b"\0"
        body += struct.pack("<III", len(named), len(desc), note_type)
        body += named.ljust((len(named) + 3) // 4 * 4, b"\0") + desc.ljust((len(desc) + 3) // 4 * 4, b"\0")
    phoff, notes_at = 64, 64 + 56
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, phoff, 0, 0,
                                                              64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", guest_image.PT_NOTE, 4, notes_at, 0, 0, len(body), len(body), 4)
    return header + phdr + body


def _bzimage(payload, setup_sects=1):
    """The boot-protocol fields pvh_kernel reads, around a compressed payload."""
    setup = bytearray(512 * (setup_sects + 1))
    setup[guest_image.SETUP_SECTS_AT] = setup_sects
    setup[guest_image.HEADER_MAGIC_AT:guest_image.HEADER_MAGIC_AT + 4] = guest_image.HEADER_MAGIC
    struct.pack_into("<II", setup, guest_image.PAYLOAD_AT, 16, len(payload))
    return bytes(setup) + b"\0" * 16 + payload + b"tail"


PVH_NOTE = (b"Xen", guest_image.XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<I", 0x1000000))


@pytest.mark.parametrize("compress", [lzma.compress, gzip.compress], ids=["xz", "gzip"])
def test_pvh_kernel_is_the_decompressed_elf(compress):
    elf = _elf_with_notes([(b"Xen", 6, b"linux"), PVH_NOTE])
    assert guest_image.pvh_kernel(_bzimage(compress(elf))) == elf


def test_a_kernel_without_the_pvh_note_keeps_its_bzimage():
    elf = _elf_with_notes([(b"Xen", 6, b"linux"), (b"GNU", guest_image.XEN_ELFNOTE_PHYS32_ENTRY, b"x" * 8)])
    assert not guest_image.has_pvh_note(elf)
    assert guest_image.pvh_kernel(_bzimage(lzma.compress(elf))) is None


@pytest.mark.parametrize("image", [b"", b"MZ" + b"\0" * 1024, _bzimage(b"\x28\xb5\x2f\xfd" + b"\0" * 64),
                                   _bzimage(b"\xfd7zXZ\x00broken")], ids=["empty", "no-header", "zstd", "corrupt-xz"])
def test_pvh_kernel_gives_up_on_what_it_cannot_read(image):
    assert guest_image.pvh_kernel(image) is None


def test_records_boot_the_pvh_kernel_under_its_own_id(tmp_path, monkeypatch):
    monkeypatch.setattr(guest_image, "OUT", str(tmp_path))
    paths = {}
    for name in ("vmlinuz", "initrd.img", "root.qcow2", "vmlinux"):
        paths[name] = str(tmp_path / name)
        (tmp_path / name).write_bytes(name.encode())
    with_pvh = guest_image.records(paths, "abc", "linux-image-x")["nimbus_guest_kernel"]
    del paths["vmlinux"]
    without = guest_image.records(paths, "abc", "linux-image-x")["nimbus_guest_kernel"]
    assert with_pvh["src"].endswith("/vmlinux") and without["src"].endswith("/vmlinuz")
    assert with_pvh["id"] != without["id"], "a _base cached from one kernel file must not serve the other"
