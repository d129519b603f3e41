"""instance_prepare's planning: every server checked before anything changes, and in check mode each
claim counts the ones before it (the real runs, with qemu-img and xorriso, are in tests/integration)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._domain import xml_builder
from ansible_collections.nimbus.compute.plugins.module_utils._instance import prepare

FLAVOR = {"name": "m1", "vcpus": 1, "memory_mb": 256, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}
# 512 MiB kept for the host: two 256 MiB servers fit, a third does not.
TOTALS = {"memory_mb": 1024, "disk_gb": 100, "vcpus": 8}
UUIDS = ["6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5%d" % i for i in range(4)]


def servers(base, count, **extra):
    return [dict({"instance_uuid": UUIDS[i], "flavor": FLAVOR, "base_path": base}, **extra) for i in range(count)]


def test_check_mode_counts_each_claim_before_the_next(host):
    root, base = host
    result = prepare.prepare(servers(base, 3, config_drive=True, name="web"), str(root), totals=TOTALS, check_mode=True)
    first, second, third = result["instances"]
    assert not first["failed"] and not second["failed"] and first["changed"] and result["changed"]
    assert first["disks"]["created"] == ["disk", "disk.config"]
    assert third["failed"] and third["failed_step"] == "instance_claim" and third["reschedule"] is True
    assert "requested 256, free 0" in third["msg"]
    assert result["failed_instances"] == [UUIDS[2]]
    assert sorted(os.listdir(root)) == ["_base"], "check mode changes nothing"


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"instance_uuid": "not-a-uuid"}, "instances[1] (not-a-uuid): "),
        ({"instance_uuid": UUIDS[0]}, "the same server is listed twice"),
        ({"flavor": dict(FLAVOR, memory_mb=0)}, "instances[1] (%s): " % UUIDS[1]),
        ({"base_path": "/etc/passwd"}, "is not inside"),
        ({"meta_data": {"k": "v"}}, "need config_drive: true"),
        ({"ephemeral_format": "ext9"}, "ephemeral_format 'ext9'"),
    ],
)
def test_one_bad_server_fails_them_all_before_any_change(host, bad, words):
    root, base = host
    listed = servers(base, 2)
    listed[1].update(bad)
    with pytest.raises(ValidationError) as info:
        prepare.prepare(listed, str(root), totals=TOTALS)
    assert words in info.value.msg
    assert sorted(os.listdir(root)) == ["_base"], "not even the first server's claim"


def test_instances_must_be_a_list_of_dicts(host):
    root, _unused = host
    with pytest.raises(ValidationError, match="instances must be a list"):
        prepare.check({"instance_uuid": UUIDS[0]}, str(root))
    with pytest.raises(ValidationError, match=r"instances\[0\] must be a dict"):
        prepare.check(["x"], str(root))


def test_bad_capacity_rules_fail_before_any_change(host):
    root, base = host
    with pytest.raises(ValidationError, match="allocation ratio"):
        prepare.prepare(servers(base, 1), str(root), totals=TOTALS, ratios={"memory_mb": 0})
    assert sorted(os.listdir(root)) == ["_base"]


def test_a_bad_xml_request_fails_them_all_before_any_change(host):
    root, base = host
    listed = servers(base, 2, domain={"image": {"id": "img", "properties": {}}})
    listed[1]["domain"] = {"image": {"id": "img", "properties": {"hw_disk_bus": "floppy"}}}
    with pytest.raises(ValidationError) as info:
        prepare.prepare(listed, str(root), totals=TOTALS)
    assert info.value.step == "domain_xml" and "instances[1] (%s): " % UUIDS[1] in info.value.msg
    assert "hw_disk_bus" in info.value.msg
    assert sorted(os.listdir(root)) == ["_base"]


def test_the_xml_request_gets_the_servers_flavor_name_and_disks(host):
    root, base = host
    [checked] = prepare.check(servers(base, 1, name="web-1", domain={"image": {"id": "img"}, "virt_type": "qemu"}),
                              str(root))
    req = checked.domain.req
    assert (req.name, req.flavor["memory_mb"], req.virt_type) == ("web-1", 256, "qemu")
    assert [d["name"] for d in req.disks] == ["disk"] and req.interfaces == []
    assert [d["path"] for d in req.disks] == [os.path.join(str(root), UUIDS[0], "disk")]


def test_no_servers_changes_nothing_and_asks_no_libvirt(host):
    root, _unused = host
    # No totals given and an URI nothing answers: reading the host's totals would fail.
    result = prepare.prepare([], str(root), libvirt_uri="qemu+unix:///system?socket=/nonexistent/sock")
    assert result == {"changed": False, "instances": [], "failed_instances": []}
    with pytest.raises(ValidationError, match="allocation ratio"):
        prepare.prepare([], str(root), ratios={"vcpus": -1})


@pytest.mark.parametrize(
    "options, words",
    [
        ({"domain_state": "rebooted"}, "domain_state 'rebooted' is not one of"),
        ({"domain_state": "running", "start_timeout": 0}, "start_timeout"),
    ],
)
def test_bad_domain_options_fail_before_any_change(host, options, words):
    root, base = host
    with pytest.raises(ValidationError, match=words):
        prepare.prepare(servers(base, 1, domain={"image": {"id": "img"}}), str(root), totals=TOTALS, **options)
    assert sorted(os.listdir(root)) == ["_base"]


def test_a_domain_state_needs_every_servers_xml(host):
    root, base = host
    listed = servers(base, 2, domain={"image": {"id": "img"}})
    del listed[1]["domain"]
    with pytest.raises(ValidationError) as info:
        prepare.prepare(listed, str(root), totals=TOTALS, domain_state="running")
    assert "instances[1] (%s): domain_state running needs the server's domain" % UUIDS[1] in info.value.msg
    assert sorted(os.listdir(root)) == ["_base"]


def test_check_mode_reports_each_domain_it_would_define_and_start(host, monkeypatch):
    root, base = host
    # libvirt's test driver has no domain capabilities to probe; the domain steps ask it for real.
    monkeypatch.setattr(xml_builder, "probe_for", lambda checked, check_mode: xml_builder.HostInfo(machine="pc-i440fx-7.2"))
    result = prepare.prepare(servers(base, 3, domain={"image": {"id": "img"}, "virt_type": "qemu"}), str(root),
                             libvirt_uri="test:///default", totals=TOTALS, check_mode=True, domain_state="running")
    first, second, third = result["instances"]
    for entry in (first, second):
        assert entry["domain"]["actions"] == ["define", "start"] and entry["domain"]["state"] == "running", entry
        assert entry["domain"]["diff"]["before"] == "" and "<domain" in entry["domain"]["diff"]["after"]
    assert third["failed_step"] == "instance_claim" and "domain" not in third
    assert sorted(os.listdir(root)) == ["_base"], "check mode changes nothing"


def test_a_rollback_step_that_fails_is_named_as_in_the_server_role(tmp_path, monkeypatch):
    class Server:
        instance_uuid = UUIDS[0]

    def refuse(uuid, instances_path, **_kwargs):
        raise OSError(13, "Permission denied", os.path.join(instances_path, uuid))

    monkeypatch.setattr(prepare.disks, "remove", refuse)
    monkeypatch.setattr(prepare.claim, "release", refuse)
    failed = {}
    prepare._undo(Server(), str(tmp_path), {"created": True}, ["disk"], False, None, failed)
    assert [entry["step"] for entry in failed["rollback_failed"]] == ["instance_disks", "instance_claim"]
    assert all("Permission denied" in entry["msg"] for entry in failed["rollback_failed"])
