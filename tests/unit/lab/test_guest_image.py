from __future__ import annotations

import importlib.util
import os
import shutil
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
