"""image cache logic that needs no qemu-img: validation, kernel/ramdisk images (stored byte for
byte), checksums, check mode, reuse and cleanup of failed runs. qemu-img paths are in
tests/integration/test_image_cache*.py."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import (
    CommandError,
    LockTimeout,
    NimbusError,
    ValidationError,
)
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
        # Found by fuzzing: 10**30 overflowed in sock.settimeout after _base and the lock were created.
        (("img", "http://127.0.0.1:1/x", "raw"), {"timeout": 10**30}, "timeout (seconds) is 1"),
        (("img", "http://127.0.0.1:1/x", "raw"), {"timeout": 1e30}, "timeout (seconds) is 1"),
        (("img", "file:///x", "raw"), {"timeout": float("nan")}, "timeout (seconds) must be a finite"),
        (("img", "file:///x", "raw"), {"download_timeout": 10**30}, "download_timeout (seconds)"),
        (("img", "file:///x", "raw"), {"lock_timeout": 10**30}, "lock_timeout (seconds)"),
        (("img", "file:///x", "raw"), {"lock_timeout": 0}, "lock_timeout (seconds) must be greater than 0"),
        (("img", "file:///x", "raw"), {"lock_timeout": None}, "lock_timeout (seconds) must be a number"),
        (("img", "file:///x", "raw"), {"max_virtual_size_gb": float("nan")}, "max_virtual_size_gb must be a finite"),
        (("img\0x", "file:///x", "raw"), {}, "control character '\\x00'"),
        (("img\nx", "file:///x", "raw"), {}, "control character '\\n'"),
        (("img\x9b", "file:///x", "raw"), {}, "control character"),
        (("img\udcff", "file:///x", "raw"), {}, "not valid Unicode"),
        ((["img"], "file:///x", "raw"), {}, "image_id must be a non-empty string, got list"),
        (({"id": "img"}, "file:///x", "raw"), {}, "image_id must be a non-empty string, got dict"),
        ((True, "file:///x", "raw"), {}, "image_id must be a non-empty string, got bool"),
        ((None, "file:///x", "raw"), {}, "image_id must be a non-empty string, got NoneType"),
        ((" ", "file:///x", "raw"), {}, "image_id must not be empty"),
    ],
)
def test_bad_options_fail_before_anything(args, options, words):
    with pytest.raises(ValidationError) as info:
        cache.ImageRequest(*args, **options)
    assert words in str(info.value)


def test_a_numeric_image_id_is_its_text():
    assert cache.ImageRequest(42, "file:///x", "raw").image_id == "42"


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
    os.makedirs(os.path.dirname(req.base_path))
    with open(req.base_path + ".part", "wb") as handle:
        handle.write(b"half a download")
    assert cache.ensure_cached(req)["changed"] is True
    assert base_listing(host) == [os.path.basename(req.base_path)]


def test_unsound_cached_base_is_an_error_not_reused(host):
    req = request(host, "vmlinuz", KERNEL)
    os.makedirs(os.path.dirname(req.base_path))
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


def everything_under(root):
    return sorted(os.path.relpath(os.path.join(top, name), str(root))
                  for top, dirs, files in os.walk(str(root)) for name in dirs + files)


FAILED_FETCHES = [
    pytest.param("file:///nonexistent/image", "aki", {}, "No such file", id="missing-file"),
    pytest.param(KERNEL, "aki", {"checksum": "sha256:" + "0" * 64}, "checksum-mismatch", id="checksum-mismatch"),
    pytest.param(crafted.qcow2(), "raw", {}, "format-mismatch", id="format-mismatch"),
    pytest.param("http://127.0.0.1:1/image", "aki", {}, "fetch of http://127.0.0.1:1/image failed", id="refused"),
]


def failing_request(host, src, disk_format, options):
    if isinstance(src, bytes):  # the image's bytes, served from a file
        (host["src"] / "image").write_bytes(src)
        src = "file://%s" % (host["src"] / "image")
    return cache.ImageRequest("img-fail", src, disk_format, instances_path=host["instances_path"], **options)


@pytest.mark.parametrize("src, disk_format, options, words", FAILED_FETCHES)
def test_failed_fetch_on_a_fresh_host_leaves_nothing(host, src, disk_format, options, words):
    """Found by fuzzing: every failed fetch left _base/ and locks/image-<sha>.lock behind."""
    req = failing_request(host, src, disk_format, options)
    with pytest.raises(NimbusError, match=words):
        cache.ensure_cached(req)
    assert not os.path.exists(host["instances_path"]), everything_under(host["instances_path"])


def test_failed_fetch_removes_only_what_it_created(host):
    instances = host["instances_path"]
    cache.ensure_cached(request(host, "good", KERNEL))  # _base, locks and the good image's lock now exist
    before = everything_under(instances)
    with pytest.raises(ImageRefused):
        cache.ensure_cached(request(host, "bad", KERNEL, checksum="sha256:" + "0" * 64))
    assert everything_under(instances) == before


def test_failed_fetch_keeps_a_lock_file_it_did_not_create(host):
    req = cache.ImageRequest("img", "file:///nonexistent/image", "aki", instances_path=host["instances_path"])
    lock_path = cache.image_lock(host["instances_path"], paths.base_name("img"), 1).path
    os.makedirs(os.path.dirname(lock_path))
    open(lock_path, "w").close()
    with pytest.raises(ImageError):
        cache.ensure_cached(req)
    assert everything_under(host["instances_path"]) == ["locks", "locks/" + os.path.basename(lock_path)]


def test_failed_fetch_keeps_base_dir_while_another_run_holds_a_lock(host):
    """Another image's run holds its lock: it may be about to download into the _base this run made
    (an unheld lock file does not keep it: test_failed_fetch_keeps_a_lock_file_it_did_not_create)."""
    instances = host["instances_path"]
    other = cache.image_lock(instances, "f" * 40, 1)
    os.makedirs(os.path.dirname(other.path))
    with other:
        with pytest.raises(ImageError):
            cache.ensure_cached(cache.ImageRequest("img", "file:///nonexistent", "aki", instances_path=instances))
        assert everything_under(instances) == ["_base", "locks", "locks/image-%s.lock" % ("f" * 40)]


def test_lock_timeout_leaves_the_holders_lock_file(host):
    instances = host["instances_path"]
    req = request(host, "vmlinuz", KERNEL, lock_timeout=0.2)
    holder = cache.image_lock(instances, paths.base_name(req.image_id), 1)
    os.makedirs(os.path.dirname(holder.path))
    with holder, pytest.raises(LockTimeout):
        cache.ensure_cached(req)
    assert os.path.exists(holder.path)


def wait_for_waiter(lock_path):
    """Until a second file descriptor of this process (the waiting thread's) is open on the lock file."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        opened = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                opened += os.readlink("/proc/self/fd/" + fd) == lock_path
            except OSError:
                continue
        if opened >= 2:
            time.sleep(0.1)  # and in its poll loop
            return
        time.sleep(0.01)
    raise AssertionError("the waiter never opened %s" % lock_path)


@pytest.mark.parametrize("remove_dir", [False, True])
def test_waiter_on_an_unlinked_lock_file_locks_the_new_one(host, remove_dir):
    """A failed run unlinks its lock file while holding it (and may remove the empty locks/): a run that
    waited on the old file must not hold a lock that a third run can take at the same time."""
    instances = host["instances_path"]
    first = cache.image_lock(instances, "a" * 40, 5)
    os.makedirs(os.path.dirname(first.path))
    first.acquire()
    got = {}
    second = cache.image_lock(instances, "a" * 40, 5)
    worker = threading.Thread(target=lambda: got.update(lock=second.acquire()))
    worker.start()
    wait_for_waiter(first.path)
    os.unlink(first.path)
    if remove_dir:
        os.rmdir(os.path.dirname(first.path))
    first.release()
    worker.join(5)
    assert got["lock"] is second
    assert second.created is True, "the file it holds is new: its failure would unlink it"
    assert os.path.samestat(os.fstat(second._fd), os.stat(second.path)), "the waiter holds the file at the path"
    with pytest.raises(LockTimeout):
        cache.image_lock(instances, "a" * 40, 0.1).acquire()
    second.release()
