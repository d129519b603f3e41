"""The image cache against a corpus built here with qemu-img: good images of every format convert
to the same guest bytes; each hostile one is refused by its rule and leaves _base as it was."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest
from labtools import unavailable

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._disk import qemu_img
from ansible_collections.nimbus.compute.plugins.module_utils._image import cache
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import ImageRefused

sys.path.insert(0, os.path.dirname(__file__))
import image_corpus

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_IMAGES = os.path.join(ROOT, ".cache", "guest", "images.json")
RULES = {
    "qcow2-backing-file", "qcow2-data-file", "qcow2-unknown-incompatible-features", "qcow2-corrupt", "qcow2-encrypted",
    "qcow2-bad-header", "qed-refused", "vmdk-create-type", "vmdk-extent-outside", "vmdk-parent", "vhd-differencing",
    "multiple-formats", "format-mismatch", "virtual-size", "checksum-mismatch", "qemu-img-disagrees", "qemu-img-rejects",
    "empty-image",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("qemu-img") is None or shutil.which("xorriso") is None:
        unavailable("qemu-img and xorriso come with the lab (bash tests/lab/install.sh)")
    return image_corpus.build(str(tmp_path_factory.mktemp("corpus")))


GOOD = ("raw", "qcow2", "qcow2-v2", "qcow2-compressed", "vmdk", "vmdk-stream", "vdi", "vhd", "vhd-fixed", "vhdx", "iso",
        "aki", "ari")


def by_name(cases, name):
    return next(case for case in cases if case.name == name)


def request(case, instances_path, **extra):
    options = dict(case.options, **extra)
    return cache.ImageRequest("corpus-" + case.name, "file://" + case.path, case.disk_format,
                              instances_path=str(instances_path), **options)


def listing(instances_path):
    return sorted(os.listdir(paths.base_dir(str(instances_path))))


@pytest.mark.parametrize("name", GOOD)
def test_good_image_converts_to_the_guest_bytes(corpus, tmp_path, name):
    case = by_name(corpus[0], name)
    req = request(case, tmp_path)
    first = cache.ensure_cached(req)
    assert first["changed"] is True
    assert first["detected_format"] == ("raw" if case.disk_format in ("aki", "ari") else case.disk_format)
    with open(first["base_path"], "rb") as handle:
        stored = handle.read()
    # vhd rounds the size up to its CHS geometry: the guest bytes, then zeros.
    assert stored[: len(case.raw)] == case.raw
    assert stored[len(case.raw):].count(0) == len(stored) - len(case.raw)
    assert first["virtual_size"] == len(stored)
    info = json.loads(subprocess.run(["qemu-img", "info", "-f", "raw", "--output=json", first["base_path"]],
                                     capture_output=True, check=True).stdout)
    assert info["virtual-size"] == -(-first["virtual_size"] // 512) * 512  # qemu counts whole sectors
    assert listing(tmp_path) == [os.path.basename(first["base_path"])], "no .part or .converting left"
    second = cache.ensure_cached(req)
    assert second["changed"] is False
    assert second["virtual_size"] == first["virtual_size"]


def test_corpus_covers_every_rule(corpus):
    hostile = corpus[1]
    assert len(hostile) >= 20
    assert {case.rule for case in hostile} == RULES


def test_every_hostile_image_is_refused_by_its_rule(corpus, tmp_path):
    good, hostile = corpus
    cache.ensure_cached(request(by_name(good, "qcow2"), tmp_path))
    before = listing(tmp_path)
    outcomes = {}
    for case in hostile:
        try:
            cache.ensure_cached(request(case, tmp_path))
            outcomes[case.name] = "accepted"
        except ImageRefused as err:
            assert "corpus-" + case.name in str(err)
            outcomes[case.name] = err.rule
        assert listing(tmp_path) == before, "%s left something in _base" % case.name
    assert outcomes == {case.name: case.rule for case in hostile}


@pytest.mark.skipif(not os.path.exists(GUEST_IMAGES), reason="the embedded guest image is built by `make image`")
def test_embedded_guest_images(tmp_path):
    with open(GUEST_IMAGES) as handle:
        records = json.load(handle)
    for key in ("nimbus_guest_image", "nimbus_guest_kernel", "nimbus_guest_ramdisk"):
        image = records[key]
        req = cache.ImageRequest(image["id"], image["src"], image["disk_format"], checksum=image["checksum"],
                                 instances_path=str(tmp_path), max_virtual_size_gb=1)
        assert cache.ensure_cached(req)["changed"] is True
        assert cache.ensure_cached(req)["changed"] is False
    assert len(listing(tmp_path)) == 3


def test_qemu_user_reads_the_base_through_an_overlay(corpus):
    """0644 in a 0755 _base is enough for QEMU's user: through a -F raw overlay it sees exactly
    the guest bytes of the original qcow2."""
    try:
        qemu_user = pwd.getpwnam("libvirt-qemu").pw_name
    except KeyError:
        unavailable("no libvirt-qemu user (libvirt is installed by tests/lab/install.sh)")
    case = by_name(corpus[0], "qcow2")
    instances = tempfile.mkdtemp(prefix="nimbus-image-test-", dir="/var/tmp")  # /tmp/pytest-of-root is 0700
    try:
        os.chmod(instances, 0o755)
        base = cache.ensure_cached(request(case, instances))["base_path"]
        assert oct(os.stat(base).st_mode & 0o777) == "0o644"
        instance = os.path.join(instances, "55555555-5555-5555-5555-555555555555")
        os.makedirs(instance, mode=0o755)
        overlay = os.path.join(instance, "disk")
        qemu_img.create(overlay, None, fmt="qcow2", backing_file=base, backing_fmt="raw")
        original = os.path.join(instances, "original.qcow2")  # the corpus dir is not QEMU's to read
        shutil.copy(case.path, original)
        for path in (overlay, original):
            os.chmod(path, 0o644)
        proc = subprocess.run(["runuser", "-u", qemu_user, "--", "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
                               overlay, original], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Images are identical" in proc.stdout
    finally:
        shutil.rmtree(instances)
