"""image cache logic that needs no qemu-img: validation, kernel/ramdisk images (stored byte for
byte), checksums, check mode, reuse and cleanup of failed runs. qemu-img paths are in
tests/integration/test_image_cache*.py."""

from __future__ import annotations

import hashlib
import os
import sys
import time

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._image import cache
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import ImageError, ImageRefused

sys.path.insert(0, os.path.dirname(__file__))
import image_crafted as crafted

KERNEL = b"MZ" + os.urandom(300) + b"HdrS" + os.urandom(5000)


@pytest.fixture
def host(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return {"src": src, "instances_path": str(tmp_path / "instances")}


def request(host, name, data, disk_format="aki", **options):
    path = host["src"] / name
    path.write_bytes(data)
    return cache.ImageRequest("img-" + name, "file://%s" % path, disk_format, instances_path=host["instances_path"], **options)


def base_listing(host):
    base_dir = paths.base_dir(host["instances_path"])
    return sorted(os.listdir(base_dir)) if os.path.isdir(base_dir) else []


@pytest.mark.parametrize(
    "args, options, words",
    [
        (("img", "ftp://host/x", "raw"), {}, "scheme 'ftp'"),
        (("img", "/etc/passwd", "raw"), {}, "scheme ''"),
        (("img", "file://remote/x", "raw"), {}, "absolute local path"),
        (("img", "http:///x", "raw"), {}, "no host"),
        (("img", "http://[::1/x", "raw"), {}, "not a valid URL"),
        (("img", "http://u:p@host:abc/x", "raw"), {}, "not a valid URL"),
        (("img", "file:///x", "qed"), {}, "disk_format 'qed'"),
        (("", "file:///x", "raw"), {}, "image_id"),
        (("img", "file:///x", "raw"), {"checksum": "md5:abc"}, "checksum"),
        (("img", "file:///x", "raw"), {"checksum": "sha256:abc"}, "checksum"),
        (("img", "file:///x", "raw"), {"max_virtual_size_gb": -1}, "max_virtual_size_gb"),
        (("img", "file:///x", "raw"), {"timeout": 0}, "timeout"),
        (("img", "file:///x", "raw"), {"instances_path": "relative"}, "absolute"),
        (("img", "file:///x", "raw"), {"instances_path": "/var/lib/nimbus\0/x"}, "absolute"),
        (("img", "file:///x", "raw"), {"url_password": "secret"}, "url_username"),
    ],
)
def test_bad_options_fail_before_anything(args, options, words):
    with pytest.raises(ValidationError) as info:
        cache.ImageRequest(*args, **options)
    assert words in str(info.value)


def test_zero_root_disk_means_no_limit():
    assert cache.ImageRequest("img", "file:///x", "raw", max_virtual_size_gb=0).max_virtual_size is None
    assert cache.ImageRequest("img", "file:///x", "raw", max_virtual_size_gb=2).max_virtual_size == 2 << 30


def test_credentials_never_in_the_message():
    for src in ("gopher://user:s3cret@host/x", "http://user:s3cret@host:port/x", "http://user:s3cret@[::1/x"):
        with pytest.raises(ValidationError) as info:
            cache.ImageRequest("img", src, "raw")
        assert "s3cret" not in str(info.value)


def test_kernel_is_stored_byte_for_byte_and_reused(host):
    digest = hashlib.sha512(KERNEL).hexdigest()
    req = request(host, "vmlinuz", KERNEL, checksum="sha512:" + digest)
    first = cache.ensure_cached(req)
    assert first["changed"] is True
    assert first["base_path"] == paths.base_path(host["instances_path"], "img-vmlinuz")
    assert first["virtual_size"] == len(KERNEL)
    with open(first["base_path"], "rb") as handle:
        assert handle.read() == KERNEL
    assert oct(os.stat(first["base_path"]).st_mode & 0o777) == "0o644"
    assert oct(os.stat(paths.base_dir(host["instances_path"])).st_mode & 0o777) == "0o755"
    os.utime(first["base_path"], (1, 1))
    os.unlink(host["src"] / "vmlinuz")  # a second run must not read the source again
    started = time.monotonic()
    second = cache.ensure_cached(req)
    assert time.monotonic() - started < 0.5
    assert second["changed"] is False
    assert second["virtual_size"] == len(KERNEL)
    assert os.stat(first["base_path"]).st_mtime > 1, "a used base image is touched for cleanup"
    assert base_listing(host) == [os.path.basename(first["base_path"])]


def test_check_mode_changes_nothing(host):
    req = request(host, "initrd", b"\x1f\x8b\x08" + os.urandom(1000), disk_format="ari")
    result = cache.ensure_cached(req, check_mode=True)
    assert result["changed"] is True
    assert "would fetch" in result["msg"]
    assert not os.path.exists(host["instances_path"])
    cache.ensure_cached(req)
    assert cache.ensure_cached(req, check_mode=True)["changed"] is False


@pytest.mark.parametrize(
    "data, disk_format, options, rule",
    [
        (KERNEL, "aki", {"checksum": "sha256:" + "0" * 64}, "checksum-mismatch"),
        (crafted.qcow2(), "aki", {}, "format-mismatch"),
        (crafted.qcow2(backing="/etc/shadow"), "ari", {}, "qcow2-backing-file"),
        (b"\1" * (2 << 20), "aki", {"max_virtual_size_gb": 1e-6}, "virtual-size"),
    ],
)
def test_refused_kernel_leaves_base_as_it_was(host, data, disk_format, options, rule):
    cache.ensure_cached(request(host, "good", KERNEL))
    before = base_listing(host)
    with pytest.raises(ImageRefused) as info:
        cache.ensure_cached(request(host, "bad", data, disk_format=disk_format, **options))
    assert info.value.rule == rule
    assert "img-bad" in str(info.value)
    assert info.value.result()["rule"] == rule
    assert base_listing(host) == before


def test_leftovers_of_a_killed_run_are_replaced(host):
    req = request(host, "vmlinuz", KERNEL)
    cache._make_dirs(host["instances_path"])
    with open(req.base_path + ".part", "wb") as handle:
        handle.write(b"half a download")
    assert cache.ensure_cached(req)["changed"] is True
    assert base_listing(host) == [os.path.basename(req.base_path)]


def test_unsound_cached_base_is_an_error_not_reused(host):
    req = request(host, "vmlinuz", KERNEL)
    cache._make_dirs(host["instances_path"])
    os.symlink("/etc/passwd", req.base_path)
    with pytest.raises(ImageError, match="not a regular file"):
        cache.ensure_cached(req)
    os.unlink(req.base_path)
    with open(req.base_path, "wb") as handle:
        handle.write(crafted.qcow2(backing="x"))
    with pytest.raises(ImageError, match="no longer raw"):
        cache.ensure_cached(req)


def test_missing_source_is_a_clean_error(host):
    req = cache.ImageRequest("img", "file:///nonexistent/image", "aki", instances_path=host["instances_path"])
    with pytest.raises(ImageError, match="No such file"):
        cache.ensure_cached(req)
    assert base_listing(host) == []


def test_missing_qemu_img_is_a_host_error_not_a_refusal(host, monkeypatch):
    req = request(host, "disk.raw", os.urandom(4096), disk_format="raw")
    monkeypatch.setenv("PATH", str(host["src"]))  # no qemu-img here
    with pytest.raises(CommandError, match="qemu-img is not installed") as info:
        cache.ensure_cached(req)
    assert not isinstance(info.value, ImageRefused)
    assert base_listing(host) == []
