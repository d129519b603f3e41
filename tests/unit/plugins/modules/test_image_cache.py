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
