"""Fault injection for the image cache: a full disk (a small tmpfs) at download and at
conversion, a qemu-img convert that fails, a run killed mid-download. Afterwards nothing is left
in _base and a re-run succeeds."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError
from ansible_collections.nimbus.compute.plugins.module_utils._image import cache
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import ImageError

sys.path.insert(0, os.path.dirname(__file__))
import image_corpus

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIB = image_corpus.MIB


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs as instances_path, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, check=False)
    if proc.returncode:
        pytest.skip("cannot mount a tmpfs here: %s" % proc.stderr.decode().strip())
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def image(tmp_path, name, size, fmt="raw", virtual=None):
    raw = str(tmp_path / (name + ".raw"))
    with open(raw, "wb") as handle:
        handle.write(os.urandom(size))
        if virtual:
            handle.truncate(virtual)
    if fmt == "raw":
        return raw
    path = str(tmp_path / name)
    image_corpus.qemu_img("convert", "-f", "raw", "-O", fmt, raw, path)
    return path


def listing(instances_path):
    # A failed run on a fresh host removes the _base it made.
    base = paths.base_dir(instances_path)
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


def test_full_disk_at_download_is_retryable_and_leaves_nothing(tmp_path, small_disk):
    src = image(tmp_path, "big", 12 * MIB)
    req = cache.ImageRequest("too-big-for-host", "file://" + src, "raw", instances_path=small_disk)
    with pytest.raises(ImageError) as info:
        cache.ensure_cached(req)
    assert "not enough free space" in str(info.value)
    assert info.value.retryable is True, "another host may have room"
    assert listing(small_disk) == []


def test_full_disk_at_conversion_is_retryable_and_leaves_nothing(tmp_path, small_disk):
    src = image(tmp_path, "sparse.qcow2", 1 * MIB, fmt="qcow2", virtual=64 * MIB)  # small file, big disk
    assert os.path.getsize(src) < 2 * MIB
    req = cache.ImageRequest("big-virtual", "file://" + src, "qcow2", instances_path=small_disk)
    with pytest.raises(ImageError) as info:
        cache.ensure_cached(req)
    assert "to convert" in str(info.value) and info.value.retryable is True
    assert listing(small_disk) == []
    small = image(tmp_path, "small.qcow2", 1 * MIB, fmt="qcow2", virtual=2 * MIB)
    ok = cache.ensure_cached(cache.ImageRequest("fits", "file://" + small, "qcow2", instances_path=small_disk))
    assert ok["changed"] is True and listing(small_disk) == [paths.base_name("fits")]


def test_failing_qemu_img_convert_leaves_nothing(tmp_path):
    """An L2 table offset that is not cluster aligned: qemu-img info is happy, convert hits EIO."""
    src = image(tmp_path, "corrupt.qcow2", 2 * MIB, fmt="qcow2")
    with open(src, "r+b") as handle:
        handle.seek(40)
        l1_offset = struct.unpack(">Q", handle.read(8))[0]
        handle.seek(l1_offset)
        entry = struct.unpack(">Q", handle.read(8))[0]
        handle.seek(l1_offset)
        handle.write(struct.pack(">Q", entry + 0x200))
    instances = str(tmp_path / "instances")
    with pytest.raises(NimbusError) as info:
        cache.ensure_cached(cache.ImageRequest("corrupt", "file://" + src, "qcow2", instances_path=instances))
    assert str(info.value).startswith("image_cache: qemu-img convert")
    assert "Input/output error" in str(info.value)
    assert listing(instances) == []


KILLED_WORKER = """
import sys
from ansible_collections.nimbus.compute.plugins.module_utils._image import cache
cache.ensure_cached(cache.ImageRequest("killed", sys.argv[1], "raw", instances_path=sys.argv[2]))
"""


def test_run_killed_mid_download_then_rerun_succeeds(tmp_path):
    src = image(tmp_path, "disk", 4 * MIB)
    instances = str(tmp_path / "instances")
    part = paths.base_path(instances, "killed") + ".part"
    with image_corpus.ImageServer() as server:
        slow = server.add("/slow", "trickle", 30)
        worker = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, slow, instances],
                                  env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".collections")))
        deadline = time.monotonic() + 20
        while not os.path.exists(part) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(part), "the worker never started its download"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert listing(instances) == [os.path.basename(part)]
        good = server.add("/good", "file", (src, 0))
        # The lock died with the worker (flock): the re-run gets it at once and replaces the leftover.
        result = cache.ensure_cached(cache.ImageRequest("killed", good, "raw", instances_path=instances, lock_timeout=5))
    assert result["changed"] is True
    assert listing(instances) == [paths.base_name("killed")]
