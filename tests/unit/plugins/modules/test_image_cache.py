"""The image_cache and image_cache_cleanup modules' main(): argument handling, check mode,
idempotence and failures reported through fail_json (never a traceback). Kernel images need no
qemu-img, so these run anywhere."""

from __future__ import annotations

import json
import os
import struct
import time

import pytest
from moduletools import run_module

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.modules import image_cache, image_cache_cleanup

run = run_module


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"MZ" + os.urandom(4000))
    return path


def args(tmp_path, kernel, **extra):
    return dict(src="file://%s" % kernel, image_id="kernel-1", disk_format="aki",
                instances_path=str(tmp_path / "instances"), **extra)


def test_check_mode_then_fetch_then_idempotent(tmp_path, kernel, capsys):
    checked = run(image_cache, args(tmp_path, kernel, _ansible_check_mode=True), capsys)
    assert checked["changed"] is True and checked["rc"] == 0
    assert not os.path.exists(tmp_path / "instances")
    first = run(image_cache, args(tmp_path, kernel), capsys)
    assert first["changed"] is True
    assert first["base_path"] == paths.base_path(str(tmp_path / "instances"), "kernel-1")
    assert first["virtual_size"] == 4002
    assert first["image_id"] == "kernel-1"
    second = run(image_cache, args(tmp_path, kernel), capsys)
    assert second["changed"] is False
    assert second["detected_format"] == "raw"


def test_refusal_is_a_clean_failure_with_the_rule(tmp_path, kernel, capsys):
    kernel.write_bytes(b"QFI\xfb" + struct.pack(">IQIIQI", 2, 0, 0, 16, 1 << 20, 0) + bytes(200))  # a qcow2 v2
    result = run(image_cache, args(tmp_path, kernel), capsys)
    assert result["rc"] == 1 and result["failed"] is True
    assert result["rule"] == "format-mismatch"
    assert result["failed_step"] == "image_cache"
    assert result["reschedule"] is False
    assert "kernel-1" in result["msg"]


def test_bad_scheme_fails_before_anything(tmp_path, kernel, capsys):
    result = run(image_cache, dict(args(tmp_path, kernel), src="scp://host/x"), capsys)
    assert result["failed"] is True
    assert "scheme 'scp'" in result["msg"]
    assert not os.path.exists(tmp_path / "instances")


def test_password_is_not_logged(tmp_path, kernel, capsys):
    result = run(image_cache, args(tmp_path, kernel, url_username="u", url_password="hunter2-secret"), capsys)
    assert "hunter2-secret" not in json.dumps(result)


def test_cleanup_module_check_mode_and_removal(tmp_path, kernel, capsys):
    run(image_cache, args(tmp_path, kernel), capsys)
    base = paths.base_path(str(tmp_path / "instances"), "kernel-1")
    old = time.time() - 2 * 86400
    os.utime(base, (old, old))
    cleanup_args = dict(instances_path=str(tmp_path / "instances"))
    checked = run(image_cache_cleanup, dict(cleanup_args, _ansible_check_mode=True), capsys)
    assert checked["changed"] is True and checked["removed"] == [base]
    assert os.path.exists(base)
    removed = run(image_cache_cleanup, cleanup_args, capsys)
    assert removed["removed"] == [base] and not os.path.exists(base)
    assert run(image_cache_cleanup, cleanup_args, capsys)["changed"] is False


def test_cleanup_module_rejects_negative_age(tmp_path, capsys):
    result = run(image_cache_cleanup, dict(instances_path=str(tmp_path), min_age=-1), capsys)
    assert result["failed"] is True and "min_age" in result["msg"]


def everything_under(root):
    return sorted(os.path.relpath(os.path.join(top, name), str(root))
                  for top, dirs, files in os.walk(str(root)) for name in dirs + files)


@pytest.mark.parametrize(
    "extra, words",
    [
        (dict(src="http://127.0.0.1:1/x", timeout=1e30), "timeout (seconds) is"),
        (dict(src="http://127.0.0.1:1/x", timeout=10**30), "timeout (seconds) is"),
        (dict(download_timeout=10**30), "download_timeout (seconds) is"),
        (dict(lock_timeout=0), "lock_timeout (seconds) must be greater than 0"),
        (dict(image_id="kernel\x001"), "control character"),
        (dict(image_id=["kernel-1"]), "image_id must be a non-empty string, got list"),
        (dict(image_id={"id": "kernel-1"}), "image_id must be a non-empty string, got dict"),
    ],
)
def test_bad_input_fails_cleanly_before_anything(tmp_path, kernel, capsys, extra, words):
    """Found by fuzzing: an OverflowError traceback (timeouts), ids with NUL or of the wrong type accepted."""
    result = run(image_cache, dict(args(tmp_path, kernel), **extra), capsys)
    assert result["rc"] == 1 and result["failed"] is True
    assert words in result["msg"] and result["failed_step"] == "image_cache"
    assert not os.path.exists(tmp_path / "instances")


def test_a_number_as_image_id_is_its_text(tmp_path, kernel, capsys):
    result = run(image_cache, dict(args(tmp_path, kernel), image_id=42), capsys)
    assert result["rc"] == 0 and result["image_id"] == "42"
    assert result["base_path"] == paths.base_path(str(tmp_path / "instances"), "42")


@pytest.mark.parametrize("src", ["file:///nonexistent/x", "http://127.0.0.1:1/x"])
def test_failed_fetch_leaves_nothing(tmp_path, kernel, capsys, src):
    result = run(image_cache, dict(args(tmp_path, kernel), src=src), capsys)
    assert result["rc"] == 1 and "fetch of" in result["msg"]
    assert not os.path.exists(tmp_path / "instances"), everything_under(tmp_path / "instances")


def test_failed_fetch_in_a_used_cache_leaves_it_as_it_was(tmp_path, kernel, capsys):
    run(image_cache, args(tmp_path, kernel), capsys)
    before = everything_under(tmp_path / "instances")
    result = run(image_cache, dict(args(tmp_path, kernel), image_id="kernel-2", checksum="sha256:" + "0" * 64), capsys)
    assert result["rule"] == "checksum-mismatch"
    assert everything_under(tmp_path / "instances") == before


@pytest.mark.parametrize(
    "extra, words",
    [
        (dict(lock_timeout=0), "lock_timeout (seconds) must be greater than 0"),
        (dict(lock_timeout=-1), "lock_timeout (seconds) must be greater than 0"),
        (dict(part_min_age=-1), "part_min_age (seconds) must not be negative"),
        (dict(min_age=10**30), "min_age (seconds) is"),
    ],
)
def test_cleanup_module_refuses_bad_numbers(tmp_path, capsys, extra, words):
    result = run(image_cache_cleanup, dict(instances_path=str(tmp_path), **extra), capsys)
    assert result["rc"] == 1 and words in result["msg"]
    assert result["failed_step"] == "image_cache_cleanup"


def test_cleanup_module_refuses_a_file_as_instances_path(capsys):
    result = run(image_cache_cleanup, dict(instances_path="/dev/null"), capsys)
    assert result["rc"] == 1
    assert "instances_path /dev/null is not a directory" in result["msg"]


def test_cleanup_module_missing_instances_path_is_ok(tmp_path, capsys):
    result = run(image_cache_cleanup, dict(instances_path=str(tmp_path / "missing")), capsys)
    assert result["rc"] == 0 and result["changed"] is False


def test_file_src_outside_file_src_dirs_is_refused_before_anything(tmp_path, kernel, capsys):
    """An AWX survey's file:///etc/shadow as a raw image would become a 0644 base a guest can read."""
    allowed = tmp_path / "images"
    allowed.mkdir()
    result = run(image_cache, args(tmp_path, kernel, file_src_dirs=[str(allowed)]), capsys)
    assert result["rc"] == 1 and result["failed_step"] == "image_cache"
    assert "outside file_src_dirs" in result["msg"] and str(kernel) in result["msg"]
    assert not os.path.exists(tmp_path / "instances")
    os.rename(kernel, allowed / "vmlinuz")
    fetched = run(image_cache, dict(args(tmp_path, kernel, file_src_dirs=[str(allowed)]),
                                    src="file://%s/vmlinuz" % allowed), capsys)
    assert fetched["rc"] == 0 and fetched["changed"] is True


def test_images_option_caches_each_and_excludes_the_single_image_options(tmp_path, kernel, capsys):
    ramdisk = tmp_path / "initrd.img"
    ramdisk.write_bytes(b"\x1f\x8b" + os.urandom(1000))
    listed = [{"id": "kernel-1", "src": "file://%s" % kernel, "disk_format": "aki", "properties": {}},
              {"id": "ramdisk-1", "src": "file://%s" % ramdisk, "disk_format": "ari"}]
    instances = str(tmp_path / "instances")
    checked = run(image_cache, dict(images=listed, instances_path=instances, _ansible_check_mode=True), capsys)
    assert checked["changed"] is True and [i["changed"] for i in checked["images"]] == [True, True]
    assert not os.path.exists(instances)
    done = run(image_cache, dict(images=listed, instances_path=instances), capsys)
    assert done["rc"] == 0 and [i["base_path"] for i in done["images"]] == [
        paths.base_path(instances, "kernel-1"), paths.base_path(instances, "ramdisk-1")]
    assert "base_path" not in done
    both = run(image_cache, dict(images=listed, src="file://%s" % kernel, instances_path=instances), capsys)
    assert both["failed"] is True and "mutually exclusive" in both["msg"]
    neither = run(image_cache, dict(instances_path=instances), capsys)
    assert neither["failed"] is True and "one of the following is required: src, images" in neither["msg"]
    listed[1]["checksum"] = "sha256:" + "0" * 64
    failed = run(image_cache, dict(images=[listed[0], dict(listed[1], id="ramdisk-2")], instances_path=instances), capsys)
    assert failed["failed"] is True and failed["rule"] == "checksum-mismatch" and failed["failed_step"] == "image_cache"
    assert [i["image_id"] for i in failed["images"]] == ["kernel-1"]
