"""Validation and planning without running qemu-img or xorriso (those are in tests/integration)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._instance import disks
from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import GIB, MIB, validate_flavor

UUID = "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
FLAVOR = {"name": "m1", "vcpus": 1, "memory_mb": 64, "root_gb": 1, "ephemeral_gb": 2, "swap": 32}


def _ensure(host, **kw):
    root, base = host
    kw.setdefault("flavor", FLAVOR)
    kw.setdefault("base_path", base)
    return disks.ensure(UUID, str(root), kw.pop("flavor"), kw.pop("base_path"), **kw)


def test_plan_is_in_nova_order_with_sizes(host):
    root, base = host
    content = {"openstack/latest/meta_data.json": b"{}"}
    planned = disks.plan(str(root / UUID), validate_flavor(FLAVOR), base, 10 * MIB, content=content)
    assert [(d.name, d.format, d.size) for d in planned] == [
        ("disk", "qcow2", GIB), ("disk.local", "qcow2", 2 * GIB), ("disk.swap", "qcow2", 32 * MIB), ("disk.config", "raw", 0),
    ]
    assert planned[0].backing_file == base and planned[2].mkfs == "swap"


def test_root_gb_zero_means_image_size_and_smaller_is_an_error():
    assert disks.root_size(validate_flavor(dict(FLAVOR, root_gb=0)), 123392) == 123392
    assert disks.root_size(validate_flavor(dict(FLAVOR, root_gb=0)), 10000) == 10240, "whole sectors, as qemu-img"
    with pytest.raises(ValidationError, match="smaller than the image's virtual size"):
        disks.root_size(validate_flavor(FLAVOR), 2 * GIB)


def test_check_mode_plans_without_touching_anything(host):
    root, _unused = host
    result = _ensure(host, config_drive_enabled=True, check_mode=True)
    assert result["changed"] is True
    assert result["created"] == ["disk", "disk.local", "disk.swap", "disk.config"]
    assert result["diff"]["before"] == "" and result["diff"]["after"].splitlines()[0] == "disk"
    assert result["domain_disks"][0]["path"] == str(root / UUID / "disk")
    assert sorted(os.listdir(root)) == ["_base"]


def test_only_root_disk_for_plain_flavor(host):
    result = _ensure(host, flavor=dict(FLAVOR, ephemeral_gb=0, swap=0), check_mode=True)
    assert [d["name"] for d in result["domain_disks"]] == ["disk"]
    assert result["domain_disks"][0]["device"] == "disk"


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"base_path": "/etc/passwd"}, "is not inside"),
        ({"base_path": "relative"}, "absolute path"),
        ({"base_path": None}, "absolute path"),
        ({"base_path": "BASE_DIR"}, "is not inside"),
        ({"base_path": "BASE_DIR/missing"}, "does not exist"),
        ({"base_path": "BASE_DIR/../escape"}, "is not inside"),
        ({"flavor": dict(FLAVOR, memory_mb=0)}, "memory_mb is 0"),
        ({"flavor": dict(FLAVOR, root_gb=0.5)}, "root_gb must be an integer"),
        ({"ephemeral_format": "ext4; rm -rf /"}, "is not one of btrfs, ext2"),
        ({"ephemeral_format": "ext4\n"}, "is not one of"),
        # mkfs.minix has no -L: refused here, not by a failing mkfs after the claim.
        ({"ephemeral_format": "minix"}, "is not one of"),
        ({"base_path": "BASE_DIR/img\0x"}, "absolute path"),
        ({"flavor": dict(FLAVOR, swap=10 ** 30)}, "must be at most"),
        ({"user_data": "#!/bin/sh"}, "need config_drive: true"),
        ({"config_drive_enabled": True, "meta_data": {"hostname": {"a": 1}}}, "meta_data hostname must be a string"),
        ({"config_drive_enabled": True, "user_data": "\u00e9" * 40000}, "user_data is larger than 65535 bytes"),
    ],
)
def test_bad_input_fails_before_any_change(host, kw, message):
    root, _unused = host
    if isinstance(kw.get("base_path"), str):
        kw["base_path"] = kw["base_path"].replace("BASE_DIR", str(root / "_base"))
    with pytest.raises(ValidationError, match=message):
        _ensure(host, **kw)
    assert sorted(os.listdir(root)) == ["_base"]


def test_base_symlink_escaping_base_dir_is_refused(host):
    root, _unused = host
    os.symlink("/etc/hostname", root / "_base" / "link")
    with pytest.raises(ValidationError, match="is not inside"):
        _ensure(host, base_path=str(root / "_base" / "link"))


def test_empty_base_is_refused(host):
    root, _unused = host
    (root / "_base" / "empty").write_bytes(b"")
    with pytest.raises(ValidationError, match="is empty"):
        _ensure(host, base_path=str(root / "_base" / "empty"))


def test_invalid_uuid(host):
    root, base = host
    with pytest.raises(ValidationError, match="not a valid UUID"):
        disks.ensure("nope", str(root), FLAVOR, base)


def test_remove_without_dir_is_a_no_op(host):
    root, _unused = host
    assert disks.remove(UUID, str(root))["changed"] is False


def _journaled_disks(root, names):
    """An instance dir whose journal says instance_disks created ``names`` (stand-in files, no qemu-img)."""
    inst = root / UUID
    inst.mkdir(mode=0o700)
    for name in names:
        (inst / name).write_bytes(b"x")
    Journal(str(inst)).record("instance_disks", created=[str(inst / n) for n in names])
    return inst


def test_remove_only_named_files_keeps_the_older_ones(host):
    root, _unused = host
    inst = _journaled_disks(root, ["disk", "disk.config"])
    result = disks.remove(UUID, str(root), files=["disk.config"])
    assert result["removed"] == ["disk.config"] and result["changed"] is True
    assert sorted(os.listdir(inst)) == ["disk", "instance.json"], "the older root disk stays"
    assert Journal(str(inst)).created("instance_disks") == [str(inst / "disk")], "the journal still lists the disk"
    assert disks.remove(UUID, str(root), files=["disk.config"])["changed"] is False, "already gone"
    assert disks.remove(UUID, str(root), files=[])["changed"] is False
    assert disks.remove(UUID, str(root), files=["disk"], check_mode=True)["removed"] == ["disk"]
    assert os.path.exists(inst / "disk")
    # Without files: everything the step created, then the dir (no claim holds it here).
    assert disks.remove(UUID, str(root))["removed"] == ["disk"]
    assert not os.path.exists(inst)


def test_remove_refuses_unknown_file_names(host):
    root, _unused = host
    inst = _journaled_disks(root, ["disk"])
    with pytest.raises(ValidationError, match="unknown disk names"):
        disks.remove(UUID, str(root), files=["../instance.json"])
    assert sorted(os.listdir(inst)) == ["disk", "instance.json"]
