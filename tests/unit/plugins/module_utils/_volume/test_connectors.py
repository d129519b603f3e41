"""Validation of Nova's connection_info per driver, the iSCSI initiator choice and the host-side iscsiadm calls."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._volume import attach, iscsi, nbd, rbd
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import VolumeError

IQN = "iqn.2010-10.org.openstack:volume-0e6f2a3c"
UUID = "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"


def iscsi_data(**extra):
    data = {"target_portal": "192.0.2.10:3260", "target_iqn": IQN, "target_lun": 1}
    data.update(extra)
    return data


@pytest.mark.parametrize("portal, expected", [
    ("192.0.2.10:3261", ("192.0.2.10", 3261)),
    ("192.0.2.10", ("192.0.2.10", 3260)),
    ("192.0.2.10:3260,1", ("192.0.2.10", 3260)),  # Nova's ",tpgt" suffix
    ("[2001:db8::1]:3260", ("2001:db8::1", 3260)),
    ("storage.example.net:3260", ("storage.example.net", 3260)),
])
def test_portal_forms(portal, expected):
    assert iscsi.parse_portal(portal) == expected


@pytest.mark.parametrize("data, message", [
    (iscsi_data(target_portal=None), "target_portal is required"),
    (iscsi_data(target_portal="host:99999"), "out of range"),
    (iscsi_data(target_portal="[::1"), r"not \[IPv6\]:port \(unclosed bracket"),
    (iscsi_data(target_portal="[::1:3260"), "unclosed bracket"),
    (iscsi_data(target_portal="[::1]3260"), "text after it"),
    (iscsi_data(target_portal="[]:3260"), "not an IP address or host name"),
    (iscsi_data(target_portal=None, target_portals=[]), "target_portals must be a non-empty list"),
    (iscsi_data(target_portal=None, target_portals="192.0.2.10:3260"), "target_portals must be a non-empty list"),
    (iscsi_data(target_portals=["a:1", "b:1"], target_iqns=[IQN]), "one entry per path"),
    (iscsi_data(target_portal="a b;rm -rf /:3260"), "not an IP address or host name"),
    (iscsi_data(target_iqn=None), "target_iqn"),
    (iscsi_data(target_iqn="iqn.2010-10.org.openstack:vol/../1"), "is not an iSCSI name"),
    (iscsi_data(target_iqn="volume-1"), "is not an iSCSI name"),
    (iscsi_data(target_lun=16384), "target_lun 16384 is out of range"),
    (iscsi_data(target_lun=-1), "is not a LUN number"),
    (iscsi_data(target_lun=True), "is not a LUN number"),
    (iscsi_data(auth_method="kerberos"), "auth_method 'kerberos' is not supported"),
    (iscsi_data(auth_method="CHAP", auth_username="u"), "auth_password"),
    (iscsi_data(auth_method="CHAP", auth_password="p"), "auth_username"),
])
def test_bad_iscsi_data(data, message):
    with pytest.raises(ValidationError, match=message):
        iscsi.validate(data)


def test_multipath_lists_use_the_first_path_when_the_singular_key_is_missing():
    paths = {"target_portals": ["192.0.2.11:3260", "192.0.2.12:3260"], "target_iqns": [IQN, IQN + "-b"],
             "target_luns": [3, 4]}
    spec, _password = iscsi.validate(paths)
    assert spec["hosts"] == [("192.0.2.11", 3260)] and spec["iqn"] == IQN and spec["lun"] == 3
    # Cinder sends both: the singular keys win, and target_luns [0] is not mistaken for "missing".
    spec, _password = iscsi.validate(dict(paths, target_portal="192.0.2.10:3260", target_iqn=IQN, target_lun=0))
    assert spec["hosts"] == [("192.0.2.10", 3260)] and spec["lun"] == 0
    spec, _password = iscsi.validate(iscsi_data(target_lun=None, target_luns=[7]))
    assert spec["lun"] == 7


def test_rbd_ignores_cluster_name_and_keyring():
    data = {"name": "volumes/volume-1", "hosts": ["192.0.2.1"], "ports": ["6789"], "auth_enabled": True,
            "auth_username": "cinder", "secret_type": "ceph", "secret_uuid": UUID, "cluster_name": "ceph",
            "keyring": "[client.cinder]\n\tkey = AQBsecretsecretsecret==\n"}
    spec = rbd.validate(data)
    assert "AQBsecret" not in repr(spec) and spec["secret_uuid"] == UUID
    with pytest.raises(ValidationError, match=r"needs secret_uuid.*keyring in connection_info is not used") as err:
        rbd.validate(dict(data, secret_uuid=None))
    assert "AQBsecret" not in str(err.value)


def test_iscsi_spec_keeps_the_password_apart():
    spec, password = iscsi.validate(iscsi_data(auth_method="chap", auth_username="nova", auth_password="s3cret"))
    assert password == "s3cret" and "s3cret" not in repr(spec)
    assert spec["name"] == IQN + "/1" and spec["hosts"] == [("192.0.2.10", 3260)] and spec["secret_type"] == "iscsi"
    spec, password = iscsi.validate(iscsi_data(auth_method="None", target_lun="0"))
    assert password is None and spec["auth_username"] is None and spec["lun"] == 0


def test_nbd_and_rbd_specs():
    spec = nbd.validate({"host": "127.0.0.1", "port": 10810, "export": "vol"})
    assert spec["protocol"] == "nbd" and spec["name"] == "vol" and spec["hosts"] == [("127.0.0.1", 10810)]
    assert nbd.validate({"host": "::1"})["hosts"] == [("::1", 10809)]
    spec = rbd.validate({"name": "volumes/volume-1", "hosts": ["192.0.2.1", "192.0.2.2"], "ports": ["6789", "3300"],
                         "auth_username": "cinder", "secret_uuid": UUID})
    assert spec["hosts"] == [("192.0.2.1", 6789), ("192.0.2.2", 3300)] and spec["secret_type"] == "ceph"
    assert rbd.validate({"name": "p/i", "hosts": "192.0.2.1"})["auth_username"] is None


@pytest.mark.parametrize("module, data, message", [
    (nbd, {}, "data.host"),
    (nbd, {"host": "127.0.0.1", "export": "a\nb"}, "printable"),
    (rbd, {"name": "noslash", "hosts": ["h"]}, "pool/image"),
    (rbd, {"name": "p/i"}, "hosts"),
    (rbd, {"name": "p/i", "hosts": ["a", "b"], "ports": ["1"]}, "one port per monitor"),
    (rbd, {"name": "p/i", "hosts": ["a"], "auth_username": "cinder"}, "secret_uuid"),
    (rbd, {"name": "p/i", "hosts": ["a"], "auth_username": "cinder", "secret_uuid": UUID, "secret_type": "x"}, "ceph"),
])
def test_bad_nbd_and_rbd_data(module, data, message):
    with pytest.raises(ValidationError, match=message):
        module.validate(data)


def params(**extra):
    base = {"instance_uuid": UUID, "volume_id": "vol-1",
            "connection_info": {"driver_volume_type": "iscsi", "data": iscsi_data()}}
    base.update(extra)
    return base


@pytest.mark.parametrize("extra, message", [
    ({"connection_info": {"driver_volume_type": "fibre_channel", "data": {}}}, "unknown driver_volume_type 'fibre_channel'"),
    ({"connection_info": None}, "connection_info must be a dict"),
    ({"connection_info": {"driver_volume_type": "iscsi", "data": iscsi_data(encrypted=True)}}, "encrypted"),
    ({"connection_info": {"driver_volume_type": "iscsi", "data": iscsi_data(access_mode="rwx")}}, "access_mode"),
    ({"volume_id": "../etc"}, "volume_id"),
    ({"volume_id": "a" * 65}, "volume_id"),
    ({"instance_uuid": "not-a-uuid"}, "not a valid UUID"),
    ({"bus": "ide"}, "bus 'ide'"),
    ({"device": "sdb"}, "not a vdX name"),
    ({"device": "vd1"}, "not a vdX name"),
    ({"boot_index": -1}, "boot_index"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"iscsi_initiator": "kernel"}, "iscsi_initiator"),
    ({"state": "attached"}, "state 'attached'"),
])
def test_request_validation_happens_first(extra, message):
    with pytest.raises(ValidationError, match=message) as err:
        attach.validate(params(**extra))
    assert err.value.step == "volume_attach"


def test_absent_needs_no_connection_info():
    req = attach.validate(params(state="absent", connection_info=None))
    assert req.state == "absent" and req.spec is None


def test_request_repr_hides_the_password():
    data = iscsi_data(auth_method="CHAP", auth_username="nova", auth_password="pa55-word")
    req = attach.validate(params(connection_info={"driver_volume_type": "iscsi", "data": data}))
    assert req.password == "pa55-word" and "pa55-word" not in repr(req)


@pytest.mark.parametrize("chap, wanted, supported, expected", [
    (False, "auto", (True, "ok"), "host"),
    (False, "auto", (False, "no iscsi_tcp"), "qemu"),
    (True, "auto", (True, "ok"), "qemu"),  # CHAP never goes through iscsiadm's command line
    (False, "qemu", (True, "ok"), "qemu"),
    (False, "host", (True, "ok"), "host"),
])
def test_initiator_choice(chap, wanted, supported, expected):
    data = iscsi_data(auth_method="CHAP", auth_username="u", auth_password="p") if chap else iscsi_data()
    spec, _password = iscsi.validate(data)
    assert iscsi.initiator_for(spec, wanted, supported)[0] == expected


def test_forced_host_initiator_fails_clearly():
    spec, _password = iscsi.validate(iscsi_data())
    with pytest.raises(VolumeError, match="host-side iSCSI login is not possible here: no iscsi_tcp"):
        iscsi.initiator_for(spec, "host", (False, "no iscsi_tcp"))
    chap, _password = iscsi.validate(iscsi_data(auth_method="CHAP", auth_username="u", auth_password="p"))
    with pytest.raises(ValidationError, match="command line"):
        iscsi.initiator_for(chap, "host", (True, "ok"))


class FakeRunner:
    """Records iscsiadm argument lists; answers with the exit codes a test gives."""

    def __init__(self, codes=None):
        self.calls = []
        self.codes = codes or {}

    def run(self, args, check=True, timeout=None):
        self.calls.append(list(args))
        rc = self.codes.get(args[-1], 0)

        class Result:
            pass

        result = Result()
        result.rc, result.stdout, result.stderr = rc, "", "iscsiadm: login failed" if rc else ""
        return result


def test_host_login_waits_for_the_device_and_logs_out_again():
    spec, _password = iscsi.validate(iscsi_data())
    runner = FakeRunner()
    seen = iter([False, False, True])
    path = iscsi.login(spec, timeout=5, runner=runner, exists=lambda _p: next(seen), sleep=lambda _s: None)
    assert path == "/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-%s-lun-1" % IQN
    node = ["-m", "node", "-T", IQN, "-p", "192.0.2.10:3260"]
    assert runner.calls == [[*node, "-o", "new"], [*node, "--login"]]
    iscsi.logout(spec, runner=runner)
    assert runner.calls[-2:] == [[*node, "--logout"], [*node, "-o", "delete"]]


def test_host_login_failure_and_missing_device_clean_up():
    spec, _password = iscsi.validate(iscsi_data())
    runner = FakeRunner(codes={"--login": 24})
    with pytest.raises(VolumeError, match=r"iSCSI login .* failed: iscsiadm: login failed"):
        iscsi.login(spec, timeout=1, runner=runner)
    assert runner.calls[-1][-2:] == ["-o", "delete"]
    runner = FakeRunner()
    with pytest.raises(VolumeError, match="did not appear"):
        iscsi.login(spec, timeout=0.01, runner=runner, exists=lambda _p: False, sleep=lambda _s: None)
    assert ["--logout"] == runner.calls[-2][-1:]
