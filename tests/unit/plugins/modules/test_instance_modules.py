"""instance_claim, instance_disks and instance_prepare as Ansible runs them: argument checks, fail_json shape, check mode."""

from __future__ import annotations

import json
import os

import pytest
from moduletools import run_module

from ansible_collections.nimbus.compute.plugins.modules import instance_claim, instance_disks, instance_prepare

UUID = "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
FLAVOR = {"name": "m1", "vcpus": 1, "memory_mb": 64, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}
TOTALS = {"total_memory_mb": 1024, "total_disk_gb": 10, "total_vcpus": 1}


run = run_module


def test_claim_then_reclaim_unchanged(tmp_path, capsys):
    args = dict(TOTALS, instance_uuid=UUID, flavor=FLAVOR, instances_path=str(tmp_path))
    first = run(instance_claim, args, capsys)
    assert first["changed"] is True and first["reschedule"] is False
    assert first["resources"]["memory_mb"]["free"] == 512  # 1024 - 512 reserved
    assert 0 <= first["elapsed"] < 10  # the step's own time, for the server role's timings
    assert run(instance_claim, args, capsys)["changed"] is False


def test_refused_claim_fails_with_reschedule(tmp_path, capsys):
    args = dict(TOTALS, instance_uuid=UUID, flavor=dict(FLAVOR, memory_mb=600), instances_path=str(tmp_path))
    result = run(instance_claim, args, capsys)
    assert result["failed"] is True and result["reschedule"] is True
    assert result["failed_step"] == "instance_claim"
    assert result["resources"]["memory_mb"]["fits"] is False
    assert isinstance(result["elapsed"], float)  # a failure reports its time too
    assert "Traceback" not in json.dumps(result)


@pytest.mark.parametrize(
    "module, extra, message",
    [
        (instance_claim, {"flavor": dict(FLAVOR, memory_mb=0)}, "memory_mb is 0"),
        (instance_claim, {"instance_uuid": "../../etc"}, "not a valid UUID"),
        (instance_claim, {"flavor": None}, "state is present but all of the following are missing: flavor"),
        (instance_disks, {"base_path": "/etc/passwd"}, "is not inside"),
        (instance_disks, {"flavor": dict(FLAVOR, vcpus=0)}, "vcpus is 0"),
    ],
)
def test_bad_input_is_a_clear_failure(tmp_path, capsys, module, extra, message):
    args = dict(instance_uuid=UUID, flavor=FLAVOR, instances_path=str(tmp_path))
    if module is instance_claim:
        args.update(TOTALS)
    else:
        args["base_path"] = str(tmp_path / "_base" / "x")
    args.update(extra)
    args = {k: v for k, v in args.items() if v is not None}
    result = run(module, args, capsys)
    assert result["failed"] is True
    assert message in result["msg"]
    assert os.listdir(tmp_path) == []


def test_disks_check_mode_with_diff(tmp_path, capsys):
    (tmp_path / "_base").mkdir()
    base = tmp_path / "_base" / "abc"
    base.write_bytes(b"\0" * 4096)
    args = dict(instance_uuid=UUID, flavor=dict(FLAVOR, swap=16), instances_path=str(tmp_path), base_path=str(base),
                config_drive=True, user_data="secret-user-data", _ansible_check_mode=True, _ansible_diff=True)
    result = run(instance_disks, args, capsys)
    assert result["changed"] is True
    assert result["diff"]["after"] == "disk\ndisk.swap\ndisk.config\n"
    assert [d["name"] for d in result["domain_disks"]] == ["disk", "disk.swap", "disk.config"]
    # no_log: not in the result, and not in the invocation Ansible echoes with -v or in callbacks either.
    assert "secret-user-data" not in json.dumps(result)
    assert result["invocation"]["module_args"]["user_data"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert sorted(os.listdir(tmp_path)) == ["_base"]


def test_disks_without_diff_mode_has_no_diff(tmp_path, capsys):
    (tmp_path / "_base").mkdir()
    (tmp_path / "_base" / "abc").write_bytes(b"\0" * 4096)
    args = dict(instance_uuid=UUID, flavor=FLAVOR, instances_path=str(tmp_path),
                base_path=str(tmp_path / "_base" / "abc"), _ansible_check_mode=True)
    assert "diff" not in run(instance_disks, args, capsys)


def test_prepare_check_mode_reports_each_server_with_diff(tmp_path, capsys):
    (tmp_path / "_base").mkdir()
    base = str(tmp_path / "_base" / "abc")
    (tmp_path / "_base" / "abc").write_bytes(b"\0" * 4096)
    other = "0b7c51e4-8d2f-4b0e-9a61-3c5d7e9f1a2b"
    server = {"instance_uuid": UUID, "flavor": FLAVOR, "base_path": base, "config_drive": True,
              "user_data": "secret-user-data"}
    # 512 MiB left after the 512 reserved: the first 400 MiB server fits, the second no longer does.
    big = dict(FLAVOR, memory_mb=400)
    args = dict(TOTALS, instances_path=str(tmp_path), _ansible_check_mode=True, _ansible_diff=True,
                instances=[dict(server, flavor=big), dict(server, instance_uuid=other, flavor=big)])
    result = run(instance_prepare, args, capsys)
    assert result["rc"] == 0 and result["changed"] is True and result["failed_instances"] == [other]
    first, second = result["instances"]
    assert first["claim"]["created"] is True and first["disks"]["created"] == ["disk", "disk.config"]
    assert "diff" not in first["disks"] and "warnings" not in first["disks"]
    assert [d["after"] for d in result["diff"]] == ["disk\ndisk.config\n"]
    assert second["failed_step"] == "instance_claim" and second["reschedule"] is True
    assert "secret-user-data" not in json.dumps(result)
    assert sorted(os.listdir(tmp_path)) == ["_base"]


def test_prepare_bad_server_is_one_clear_failure(tmp_path, capsys):
    args = dict(TOTALS, instances_path=str(tmp_path),
                instances=[{"instance_uuid": UUID, "flavor": dict(FLAVOR, vcpus=0), "base_path": str(tmp_path / "x")}])
    result = run(instance_prepare, args, capsys)
    assert result["failed"] is True and result["failed_step"] == "instance_claim"
    assert result["msg"].startswith("instance_claim: instances[0] (%s): " % UUID) and "vcpus is 0" in result["msg"]
    assert os.listdir(tmp_path) == []
