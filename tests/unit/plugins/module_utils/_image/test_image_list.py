"""image_cache's images option: several images of one build checked first, then cached in order."""

from __future__ import annotations

import os

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._image import image_list


@pytest.fixture
def files(tmp_path):
    """A kernel and a ramdisk (stored byte for byte) and where they go."""
    kernel, ramdisk = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"MZ" + os.urandom(3000))
    ramdisk.write_bytes(b"\x1f\x8b" + os.urandom(2000))
    return {"kernel": kernel, "ramdisk": ramdisk, "instances": str(tmp_path / "instances")}


def images(files, **extra):
    return [dict({"id": "kernel-1", "src": "file://%s" % files["kernel"], "disk_format": "aki",
                  "properties": {"hw_disk_bus": "virtio"}, "name": "kernel"}, **extra),
            {"id": "ramdisk-1", "src": "file://%s" % files["ramdisk"], "disk_format": "ari"}]


def test_each_image_cached_in_order_then_unchanged(files):
    requests = image_list.requests_for(images(files), instances_path=files["instances"])
    first = image_list.ensure_all_cached(requests)
    assert first["changed"] is True
    assert [r["image_id"] for r in first["images"]] == ["kernel-1", "ramdisk-1"]
    wanted = [paths.base_path(files["instances"], image_id) for image_id in ("kernel-1", "ramdisk-1")]
    assert [r["base_path"] for r in first["images"]] == wanted
    assert open(first["images"][0]["base_path"], "rb").read() == files["kernel"].read_bytes()
    again = image_list.ensure_all_cached(image_list.requests_for(images(files), instances_path=files["instances"]))
    assert again["changed"] is False and all(r["changed"] is False for r in again["images"])


@pytest.mark.parametrize(
    "bad, words",
    [
        ([], "non-empty list"),
        ("kernel", "non-empty list"),
        (["kernel"], "images[0] must be a dict"),
        ([{"id": "k", "src": "file:///x", "disk_format": "aki", "chksum": "sha256:00"}], "unknown keys chksum"),
        ([{"id": "k", "src": "file:///x", "disk_format": "aki", 1: "x", "size": 2}], "unknown keys 1, size"),
        ([{"id": ["k"], "src": "file:///x", "disk_format": "aki"}], "image_id must be a non-empty string, got list"),
        ([{"id": "k", "src": "file:///x", "disk_format": "vhd9"}], "disk_format 'vhd9' is not one of"),
        ([{"id": "k", "disk_format": "aki"}], "images[0] needs src"),
        ([{"id": "k", "src": "ftp://host/x", "disk_format": "aki"}], "images[0] (k): src"),
        ([{"id": "k", "src": "file:///x", "disk_format": "aki"}, {"id": "k", "src": "file:///y", "disk_format": "ari"}],
         "image k is listed twice"),
    ],
)
def test_every_image_is_checked_before_any_is_fetched(files, bad, words):
    with pytest.raises(ValidationError) as caught:
        image_list.requests_for(bad, instances_path=files["instances"])
    assert words in caught.value.msg
    assert not os.path.exists(files["instances"])


def test_a_later_bad_image_fails_before_the_first_is_fetched(files):
    listed = [*images(files), {"id": "evil", "src": "file:///etc/passwd", "disk_format": "raw"}]
    with pytest.raises(ValidationError, match="outside file_src_dirs"):
        image_list.requests_for(listed, instances_path=files["instances"], file_src_dirs=[str(files["kernel"].parent)])
    assert not os.path.exists(files["instances"])


def test_a_failing_image_reports_the_ones_cached_before_it(files):
    listed = images(files)
    listed[1]["checksum"] = "sha256:" + "0" * 64
    with pytest.raises(image_list.ListFailed) as caught:
        image_list.ensure_all_cached(image_list.requests_for(listed, instances_path=files["instances"]))
    assert "checksum-mismatch" in str(caught.value.error) and "ramdisk-1" in str(caught.value.error)
    assert [r["image_id"] for r in caught.value.done] == ["kernel-1"]
    assert os.path.exists(caught.value.done[0]["base_path"]), "the cache is shared: what was cached stays"
    assert not os.path.exists(paths.base_path(files["instances"], "ramdisk-1"))
