"""volume_attach as Ansible runs it: the CHAP password never reaches the output, bad input fails before
anything is touched, and DOCUMENTATION says exactly what the argument spec accepts."""

from __future__ import annotations

import json

import pytest
import yaml
from moduletools import run_module

from ansible_collections.nimbus.compute.plugins.modules import volume_attach

UUID = "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
PASSWORD = "Very-Secret-Chap-77"


def run(args, capsys, check_mode=False):
    return run_module(volume_attach, args, capsys, check_mode=check_mode)


def iscsi(**data):
    base = {"target_portal": "127.0.0.1:3260", "target_iqn": "iqn.2026-11.compute.nimbus:t", "target_lun": 1,
            "auth_method": "CHAP", "auth_username": "nova", "auth_password": PASSWORD}
    base.update(data)
    return {"driver_volume_type": "iscsi", "data": base}


@pytest.mark.parametrize("args, message", [
    ({"connection_info": iscsi(target_lun=99999)}, "target_lun 99999 is out of range"),
    ({"connection_info": iscsi(target_iqn="not an iqn")}, "is not an iSCSI name"),
    ({"connection_info": iscsi(), "device": "sdb"}, "not a vdX name"),
    ({"connection_info": {"driver_volume_type": "fc", "data": {}}}, "driver_volume_type must be one of"),
    ({}, "state is present but all of the following are missing: connection_info"),
])
def test_bad_input_fails_cleanly_without_the_password(tmp_path, capsys, args, message):
    result = run(dict({"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": str(tmp_path),
                       "libvirt_uri": "test:///default"}, **args), capsys)
    text = json.dumps(result)
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert PASSWORD not in text and "Traceback" not in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("state", ["present", "absent"])
@pytest.mark.parametrize("args, message", [
    ({"instances_path": "rel"}, "instances_path must be an absolute path, got 'rel'"),
    ({"instances_path": ""}, "instances_path must be an absolute path, got ''"),
    ({"instances_path": "/srv/x\u0000"}, "instances_path must be an absolute path"),
    ({"libvirt_uri": "test:///default\u0000"}, "libvirt_uri must be a non-empty URI without control characters"),
    ({"libvirt_uri": ""}, "libvirt_uri must be a non-empty URI without control characters, got ''"),
    ({"connect_timeout": 10 ** 30}, "connect_timeout (seconds) is %d, must be at most 604800" % 10 ** 30),
    ({"connect_timeout": 0}, "connect_timeout (seconds) must be greater than 0"),
    ({"detach_timeout": -1}, "detach_timeout (seconds) must be greater than 0, got -1"),
    ({"detach_timeout": 604801}, "detach_timeout (seconds) is 604801, must be at most 604800"),
])
def test_bad_path_uri_or_timeout_fails_before_anything(tmp_path, capsys, monkeypatch, state, args, message):
    monkeypatch.chdir(tmp_path)
    base = {"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": str(tmp_path), "state": state,
            "libvirt_uri": "test:///default", "connection_info": iscsi()}
    result = run(dict(base, **args), capsys)
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert result["msg"].startswith("volume_attach: ") and result["failed_step"] == "volume_attach"
    assert "exception" not in result and "Traceback" not in json.dumps(result)
    assert list(tmp_path.iterdir()) == [], "nothing created, not even relative to the working directory"


def test_a_missing_uri_or_instances_path_takes_the_default():
    from ansible_collections.nimbus.compute.plugins.module_utils._volume import attach

    req = attach.validate({"instance_uuid": UUID, "volume_id": "vol-1", "state": "absent", "libvirt_uri": None,
                           "instances_path": None})
    assert req.libvirt_uri == "qemu:///system" and req.instances_path == "/var/lib/nimbus/instances"
    assert req.connect_timeout == 10 and req.detach_timeout == 30


@pytest.mark.parametrize("locks", [True, False], ids=["locks-dir", "no-locks-dir"])
@pytest.mark.parametrize("state", ["present", "absent"])
def test_check_mode_creates_no_lock(tmp_path, capsys, state, locks):
    if locks:
        (tmp_path / "locks").mkdir()
    args = {"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": str(tmp_path), "state": state,
            "libvirt_uri": "test:///default"}
    if state == "present":
        args["connection_info"] = iscsi()
    result = run(args, capsys, check_mode=True)
    if state == "present":  # the test driver has no such domain: the check stops there, having made nothing
        assert "domain instance-%s is not defined" % UUID in result["msg"], result
    else:
        assert result["rc"] == 0 and result["changed"] is False, result
    assert sorted(p.name for p in tmp_path.iterdir()) == (["locks"] if locks else [])
    assert not locks or list((tmp_path / "locks").iterdir()) == []


def test_module_failure_names_the_step(tmp_path, capsys):
    result = run({"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": str(tmp_path),
                  "libvirt_uri": "test:///default", "connection_info": iscsi()}, capsys)
    assert result["failed"] is True and result["failed_step"] == "volume_attach" and result["reschedule"] is False
    assert "domain instance-%s is not defined" % UUID in result["msg"] and PASSWORD not in json.dumps(result)


# What Cinder's initialize_connection returns (os-brick's keys), passed through as it is.
CINDER_RBD = {"driver_volume_type": "rbd", "data": {
    "name": "volumes/volume-0e6f2a3c", "hosts": ["192.0.2.1", "192.0.2.2"], "ports": ["6789", "6789"],
    "cluster_name": "ceph", "auth_enabled": True, "auth_username": "cinder", "secret_type": "ceph",
    "secret_uuid": "457eb676-33da-42ec-9a8c-9293d545c337", "keyring": "[client.cinder]\n\tkey = AQBKeyring77==",
    "volume_id": "0e6f2a3c", "discard": True, "qos_specs": None, "access_mode": "rw", "encrypted": False}}
CINDER_ISCSI = {"driver_volume_type": "iscsi", "data": {
    "target_discovered": False, "target_portal": "192.0.2.10:3260", "target_iqn": "iqn.2010-10.org.openstack:v-1",
    "target_lun": 0, "target_portals": ["192.0.2.10:3260", "192.0.2.11:3260"],
    "target_iqns": ["iqn.2010-10.org.openstack:v-1", "iqn.2010-10.org.openstack:v-1"], "target_luns": [0, 0],
    "volume_id": "0e6f2a3c", "auth_method": "CHAP", "auth_username": "nova", "auth_password": PASSWORD,
    "encrypted": False, "qos_specs": {"total_iops_sec": "100"}, "access_mode": "rw", "discard": False,
    "cacheable": False}}


@pytest.mark.parametrize("info", [CINDER_RBD, CINDER_ISCSI], ids=["rbd", "iscsi"])
def test_cinder_connection_info_is_accepted_as_it_comes(tmp_path, capsys, info):
    result = run({"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": str(tmp_path),
                  "libvirt_uri": "test:///default", "connection_info": info}, capsys)
    text = json.dumps(result)
    # Past the argument spec and the validators: it stops only because the test driver has no such domain.
    assert "domain instance-%s is not defined" % UUID in result["msg"], result["msg"]
    assert "AQBKeyring77" not in text and PASSWORD not in text


def test_detach_of_a_volume_that_is_not_attached_is_unchanged(tmp_path, capsys):
    result = run({"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": str(tmp_path), "state": "absent",
                  "libvirt_uri": "test:///default"}, capsys)
    assert result["changed"] is False and result["device"] is None and "diff" not in result


def _compare(doc_options, spec, where):
    assert sorted(doc_options) == sorted(spec), where
    for name, rule in spec.items():
        doc = doc_options[name]
        for key in ("type", "required", "default", "choices", "elements"):
            expected = rule.get(key, False if key == "required" else None)
            assert doc.get(key, False if key == "required" else None) == expected, "%s.%s %s" % (where, name, key)
        if "options" in rule:
            _compare(doc["suboptions"], rule["options"], "%s.%s" % (where, name))


def test_documentation_matches_the_argument_spec():
    doc = yaml.safe_load(volume_attach.DOCUMENTATION)
    own = {k: v for k, v in volume_attach.ARGUMENT_SPEC.items() if k not in ("libvirt_uri", "instances_path")}
    _compare(doc["options"], own, "options")
    assert volume_attach.DATA_OPTIONS["auth_password"]["no_log"] is True
    assert volume_attach.DATA_OPTIONS["keyring"]["no_log"] is True
    assert doc["version_added"] == "0.1.0" and doc["author"] == "nimbus.compute developers (@nimbus)"
