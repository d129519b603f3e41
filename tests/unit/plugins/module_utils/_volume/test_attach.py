"""The attach/detach flow against a small in-memory libvirt (libvirt's test driver has no secrets and no
attachDeviceFlags): order of effects, rollback on failure, libvirt.xml and journal kept in step."""

from __future__ import annotations

import json
import os

import libvirt
import pytest
from lxml import etree

from ansible_collections.nimbus.compute.plugins.module_utils._common import journal as journal_module
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._domain.compare import parse
from ansible_collections.nimbus.compute.plugins.module_utils._volume import attach, common, iscsi, secrets
from ansible_collections.nimbus.compute.plugins.module_utils._volume import xml as volume_xml
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import VolumeError

UUID = "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
OTHER = "0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e"
PASSWORD = "Chap-Pa55-word"
LIBVIRT_XML = """<domain type="qemu">
  <name>instance-%s</name>
  <uuid>%s</uuid>
  <os>
    <type arch="x86_64">hvm</type>
  </os>
  <devices>
    <disk type="file" device="disk">
      <source file="/x/disk"/>
      <target dev="vda" bus="virtio"/>
    </disk>
  </devices>
</domain>
"""


class FakeError(libvirt.libvirtError):
    def __init__(self, msg, code=libvirt.VIR_ERR_INTERNAL_ERROR):
        super().__init__(msg)  # libvirtError takes the process's last libvirt error as its text: keep ours apart
        self.message = msg
        self.code = code

    def __str__(self):
        return self.message

    def get_error_code(self):
        return self.code

    def get_error_message(self):
        return self.message


class FakeSecret:
    def __init__(self, conn, uuid):
        self.conn, self.uuid, self.value = conn, uuid, None

    def setValue(self, value):
        self.value = value

    def undefine(self):
        del self.conn.secrets[self.uuid]


class FakeDomain:
    def __init__(self, uuid, active=False):
        self.uuid = uuid
        self.config = parse(LIBVIRT_XML % (uuid, uuid))
        self.active = active
        self.fail_attach = None
        self.calls = []

    def name(self):
        return "instance-" + self.uuid

    def UUIDString(self):
        return self.uuid

    def isActive(self):
        return self.active

    def XMLDesc(self, flags=0):
        return etree.tostring(self.config, encoding="unicode")

    def attachDeviceFlags(self, xml, flags):
        self.calls.append(("attach", xml, flags))
        if self.fail_attach:
            raise FakeError(self.fail_attach)
        volume_xml.insert_disk(self.config, etree.fromstring(xml))

    def detachDeviceFlags(self, xml, flags):
        self.calls.append(("detach", xml, flags))
        dev = etree.fromstring(xml).find("target").get("dev")
        for disk in self.config.iterfind("devices/disk"):
            if disk.find("target").get("dev") == dev:
                disk.getparent().remove(disk)


class FakeConn:
    def __init__(self, *domains):
        self.domains = {d.uuid: d for d in domains}
        self.secrets = {}

    def lookupByUUIDString(self, uuid):
        if uuid not in self.domains:
            raise FakeError("no domain", libvirt.VIR_ERR_NO_DOMAIN)
        return self.domains[uuid]

    def listAllDomains(self, flags=0):
        return list(self.domains.values())

    def secretLookupByUUIDString(self, uuid):
        if uuid not in self.secrets:
            raise FakeError("no secret", libvirt.VIR_ERR_NO_SECRET)
        return self.secrets[uuid]

    def secretDefineXML(self, xml):
        uuid = etree.fromstring(xml).findtext("uuid")
        self.secrets[uuid] = FakeSecret(self, uuid)
        return self.secrets[uuid]


@pytest.fixture
def host(tmp_path, monkeypatch):
    """One stopped server with libvirt.xml on disk; the network probes are switched off."""
    monkeypatch.setattr(common, "check_reachable", lambda *a, **k: True)
    probes = []
    monkeypatch.setattr(attach, "probe", lambda conn, uri, disk, arch, timeout: probes.append(disk))
    instance_dir = tmp_path / UUID
    instance_dir.mkdir()
    (instance_dir / "libvirt.xml").write_text(LIBVIRT_XML % (UUID, UUID))
    conn = FakeConn(FakeDomain(UUID), FakeDomain(OTHER))
    conn.probes = probes
    conn.path = str(instance_dir / "libvirt.xml")
    return conn, str(tmp_path)


def req(instances_path, **extra):
    params = {"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": instances_path,
              "connection_info": {"driver_volume_type": "iscsi", "data": {
                  "target_portal": "127.0.0.1:3260", "target_iqn": "iqn.2026-11.compute.nimbus:t", "target_lun": 1,
                  "auth_method": "CHAP", "auth_username": "nova", "auth_password": PASSWORD}}}
    params.update(extra)
    return attach.validate(params)


def test_build_time_attach_stores_the_secret_probes_and_updates_libvirt_xml(host):
    conn, path = host
    dom = conn.domains[UUID]
    result = attach.attach(conn, req(path), check_mode=False)
    assert result["changed"] and result["device"] == "vdb" and result["iscsi_initiator"] == "qemu"
    assert conn.secrets[result["secret_uuid"]].value == PASSWORD.encode()
    assert len(conn.probes) == 1
    (kind, xml, flags), = dom.calls
    assert kind == "attach" and flags == attach.VIR_DOMAIN_AFFECT_CONFIG and PASSWORD not in xml
    saved = open(conn.path).read()
    assert "ua-volume-vol-1" in saved and PASSWORD not in saved
    journal = json.load(open(os.path.join(path, UUID, "instance.json")))["steps"]["volume_attach"]
    assert journal["created"] == ["volume:vol-1", "secret:%s" % result["secret_uuid"]]
    assert journal["volumes"]["vol-1"]["device"] == "vdb" and PASSWORD not in json.dumps(journal)

    again = attach.attach(conn, req(path), check_mode=False)
    assert again["changed"] is False and len(dom.calls) == 1


def test_failed_attach_undoes_the_secret_and_leaves_the_xml(host):
    conn, path = host
    dom = conn.domains[UUID]
    dom.active = True
    dom.fail_attach = ("unable to execute QEMU command 'blockdev-add': -blockdev {\"driver\":\"iscsi\"}: "
                       "iSCSI: Failed to connect to LUN : Failed to log in to target. Status: Authentication failure(513)")
    before = open(conn.path).read()
    with pytest.raises(VolumeError, match=r"Status: Authentication failure\(513\)$"):
        attach.attach(conn, req(path), check_mode=False)
    assert conn.secrets == {} and open(conn.path).read() == before
    assert dom.calls[0][2] == attach.VIR_DOMAIN_AFFECT_CONFIG | attach.VIR_DOMAIN_AFFECT_LIVE
    assert len(conn.probes) == 1  # probed before the hot attach too
    assert not os.path.exists(os.path.join(path, UUID, "instance.json"))


def test_check_mode_changes_nothing(host):
    conn, path = host
    result = attach.attach(conn, req(path), check_mode=True)
    assert result["changed"] is True and "ua-volume-vol-1" in result["diff"]["after"]
    assert conn.secrets == {} and conn.domains[UUID].calls == [] and "ua-volume" not in open(conn.path).read()


def test_refused_when_another_server_holds_the_volume_or_its_source(host):
    conn, path = host
    other = conn.domains[OTHER]
    attach.attach(conn, req(path, instance_uuid=OTHER), check_mode=False)
    assert "ua-volume-vol-1" in other.XMLDesc()
    with pytest.raises(VolumeError, match="already attached to domain instance-%s" % OTHER):
        attach.attach(conn, req(path), check_mode=False)
    with pytest.raises(VolumeError, match="already attached to domain instance-%s" % OTHER):
        attach.attach(conn, req(path, volume_id="vol-2"), check_mode=False)
    assert conn.domains[UUID].calls == []


def test_device_and_boot_index_rules(host):
    conn, path = host
    with pytest.raises(ValidationError, match="vda is already used"):
        attach.attach(conn, req(path, device="vda"), check_mode=False)
    with pytest.raises(ValidationError, match="vda is already used"):
        attach.attach(conn, req(path, boot_index=0), check_mode=False)
    assert attach.attach(conn, req(path, device="vdf"), check_mode=False)["device"] == "vdf"
    with pytest.raises(VolumeError, match="already attached as vdf, not vdg"):
        attach.attach(conn, req(path, device="vdg"), check_mode=False)


def test_detach_removes_disk_xml_secret_and_journal_entry(host):
    conn, path = host
    before = open(conn.path).read()
    attached = attach.attach(conn, req(path), check_mode=False)
    absent = attach.validate({"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": path, "state": "absent"})
    planned = attach.detach(conn, absent, check_mode=True)
    assert planned["changed"] is True and attached["secret_uuid"] in conn.secrets
    result = attach.detach(conn, absent, check_mode=False)
    assert result["changed"] and result["device"] == "vdb" and result["live"] is False
    assert conn.secrets == {} and open(conn.path).read() == before
    assert conn.domains[UUID].calls[-1][2] == attach.VIR_DOMAIN_AFFECT_CONFIG
    journal = json.load(open(os.path.join(path, UUID, "instance.json")))["steps"]["volume_attach"]
    assert journal["created"] == [] and journal["volumes"] == {}
    assert attach.detach(conn, absent, check_mode=False)["changed"] is False


def test_attach_needs_a_defined_domain(host):
    conn, path = host
    del conn.domains[UUID]
    with pytest.raises(VolumeError, match=r"is not defined: run nimbus\.compute\.domain state=defined first"):
        attach.attach(conn, req(path), check_mode=False)


def test_secret_xml_is_private_and_persistent():
    root = etree.fromstring(secrets.secret_xml(secrets.secret_uuid("vol-1"), "iscsi", "vol-1"))
    assert root.get("private") == "yes" and root.get("ephemeral") == "no"
    assert root.findtext("usage/target") == "nimbus-volume-vol-1"
    assert secrets.secret_uuid("vol-1") == secrets.secret_uuid("vol-1") != secrets.secret_uuid("vol-2")


def test_rerun_repairs_a_libvirt_xml_that_lost_the_disk(host):
    conn, path = host
    dom = conn.domains[UUID]
    attach.attach(conn, req(path), check_mode=False)
    with_volume = open(conn.path).read()
    # libvirt formats more than we set; that is still the same disk.
    dom.config.find("devices/disk[alias]/source").set("index", "2")
    assert attach.attach(conn, req(path), check_mode=False)["changed"] is False
    open(conn.path, "w").write(LIBVIRT_XML % (UUID, UUID))  # e.g. domain_xml ran again
    repaired = attach.attach(conn, req(path), check_mode=False)
    assert repaired["changed"] is True and repaired["libvirt_xml_updated"] is True
    assert open(conn.path).read() == with_volume and len(dom.calls) == 1


# ---------------------------------------------------------------------------------------------
# A journal or libvirt.xml that cannot be read or written: checked before the domain changes, rolled back after


def _journal_path(path):
    return os.path.join(path, UUID, "instance.json")


def _absent(path):
    return attach.validate({"instance_uuid": UUID, "volume_id": "vol-1", "instances_path": path, "state": "absent"})


@pytest.mark.parametrize("content", [b"{truncated", b"\xff\xfe", b"[]", b'{"steps": []}',
                                     b'{"steps": {"volume_attach": {"volumes": []}}}'])
def test_unreadable_journal_fails_attach_before_the_domain_changes(host, content):
    conn, path = host
    dom = conn.domains[UUID]
    open(_journal_path(path), "wb").write(content)
    before = open(conn.path).read()
    with pytest.raises(NimbusError, match=r"instance\.json") as err:
        attach.attach(conn, req(path), check_mode=False)
    assert err.value.step == "volume_attach" and isinstance(err.value, NimbusError)
    assert dom.calls == [] and conn.secrets == {} and conn.probes == []
    assert open(conn.path).read() == before and open(_journal_path(path), "rb").read() == content


def test_unreadable_journal_fails_detach_before_the_domain_changes(host):
    conn, path = host
    dom = conn.domains[UUID]
    attach.attach(conn, req(path), check_mode=False)
    open(_journal_path(path), "w").write('{"steps": {')
    calls, saved = list(dom.calls), open(conn.path).read()
    with pytest.raises(NimbusError, match=r"instance\.json cannot be read \(not JSON"):
        attach.detach(conn, _absent(path), check_mode=False)
    assert dom.calls == calls and "ua-volume-vol-1" in dom.XMLDesc() and open(conn.path).read() == saved
    assert len(conn.secrets) == 1


def test_unparsable_libvirt_xml_fails_before_the_domain_changes(host):
    conn, path = host
    open(conn.path, "w").write("<domain><devices>")
    with pytest.raises(NimbusError):
        attach.attach(conn, req(path), check_mode=False)
    assert conn.domains[UUID].calls == [] and conn.secrets == {}


def _assert_nothing_left(conn, path, before):
    dom = conn.domains[UUID]
    assert conn.secrets == {} and "ua-volume" not in dom.XMLDesc()
    assert open(conn.path).read() == before and not os.path.exists(_journal_path(path))


@pytest.mark.parametrize("errno_, cause", [(28, "No space left on device"), (30, "Read-only file system")])
def test_disk_error_writing_libvirt_xml_after_the_attach_rolls_back(host, monkeypatch, errno_, cause):
    conn, path = host
    dom = conn.domains[UUID]
    dom.active = True
    before = open(conn.path).read()
    real = attach.write_atomic

    def write_atomic(target, data, mode=0o600):
        if target.endswith("libvirt.xml"):
            raise OSError(errno_, cause, target)
        return real(target, data, mode=mode)

    monkeypatch.setattr(attach, "write_atomic", write_atomic)
    with pytest.raises(VolumeError, match=r"updating .*libvirt\.xml after attaching volume vol-1 failed: %s: .*"
                       r"rolled back" % cause):
        attach.attach(conn, req(path), check_mode=False)
    assert [c[0] for c in dom.calls] == ["attach", "detach"]
    assert dom.calls[1][2] == attach.VIR_DOMAIN_AFFECT_CONFIG | attach.VIR_DOMAIN_AFFECT_LIVE
    _assert_nothing_left(conn, path, before)


def test_disk_error_writing_the_journal_fails_before_the_attach(host, monkeypatch):
    conn, path = host
    before = open(conn.path).read()

    def write_atomic(target, data, mode=0o600):
        raise OSError(30, "Read-only file system", target)

    monkeypatch.setattr(journal_module, "write_atomic", write_atomic)
    with pytest.raises(VolumeError, match=r"recording volume vol-1 in .*instance\.json failed: Read-only file system"):
        attach.attach(conn, req(path), check_mode=False)
    assert conn.domains[UUID].calls == []
    _assert_nothing_left(conn, path, before)


def test_a_journal_written_before_is_restored_byte_for_byte(host, monkeypatch):
    conn, path = host
    journal_module.Journal(os.path.join(path, UUID)).record("instance_disks", created=["disk"])
    old = open(_journal_path(path), "rb").read()
    conn.domains[UUID].fail_attach = "no"
    with pytest.raises(VolumeError, match="attaching volume vol-1 as vdb failed: no"):
        attach.attach(conn, req(path), check_mode=False)
    assert open(_journal_path(path), "rb").read() == old


def test_any_failure_after_the_attach_rolls_back(host, monkeypatch):
    conn, path = host
    before = open(conn.path).read()
    real = attach.edit_libvirt_xml

    def edit_libvirt_xml(request, edit, check_mode):
        if not check_mode:
            raise KeyError("target")  # not a NimbusError, not a libvirtError
        return real(request, edit, check_mode)

    monkeypatch.setattr(attach, "edit_libvirt_xml", edit_libvirt_xml)
    with pytest.raises(VolumeError, match=r"failed: KeyError: 'target'; rolled back"):
        attach.attach(conn, req(path), check_mode=False)
    assert [c[0] for c in conn.domains[UUID].calls] == ["attach", "detach"]
    _assert_nothing_left(conn, path, before)


def test_an_undo_that_fails_is_named_in_the_error(host, monkeypatch):
    conn, path = host
    dom = conn.domains[UUID]

    def edit_libvirt_xml(request, edit, check_mode):
        if check_mode:
            return False, "", ""
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(attach, "edit_libvirt_xml", edit_libvirt_xml)

    def refuse(xml, flags):
        raise FakeError("domain is locked")

    dom.detachDeviceFlags = refuse
    with pytest.raises(VolumeError, match=r"No space left on device; rollback incomplete, left behind: disk vdb of "
                                          r"domain instance-%s \(domain is locked\)" % UUID):
        attach.attach(conn, req(path), check_mode=False)
    assert conn.secrets == {}


def test_detach_reports_a_disk_error_after_the_domain_changed_and_a_rerun_finishes(host, monkeypatch):
    conn, path = host
    before = open(conn.path).read()
    attach.attach(conn, req(path), check_mode=False)
    real = attach.write_atomic

    def full(target, data, mode=0o600):
        raise OSError(28, "No space left on device", target)

    monkeypatch.setattr(attach, "write_atomic", full)
    with pytest.raises(VolumeError, match=r"vol-1 is detached from the domain, but updating .*libvirt\.xml failed: "
                                          r"No space left on device; run state=absent again"):
        attach.detach(conn, _absent(path), check_mode=False)
    monkeypatch.setattr(attach, "write_atomic", real)
    assert attach.detach(conn, _absent(path), check_mode=False)["changed"] is True
    assert conn.secrets == {} and open(conn.path).read() == before
    assert json.load(open(_journal_path(path)))["steps"]["volume_attach"]["volumes"] == {}


# ---------------------------------------------------------------------------------------------
# _wait_detached when the domain goes away


class VanishingDomain:
    def __init__(self, code):
        self.code = code

    def isActive(self):
        return True

    def XMLDesc(self, flags=0):
        raise FakeError("Domain not found: no domain with matching uuid", self.code)


@pytest.mark.parametrize("code, message", [
    (libvirt.VIR_ERR_NO_DOMAIN, "the domain went away while waiting for the guest to release volume vol-1: Domain not"),
    (libvirt.VIR_ERR_INTERNAL_ERROR, "reading the live domain XML failed while waiting"),
])
def test_wait_detached_turns_a_vanished_domain_into_a_clean_error(code, message):
    with pytest.raises(VolumeError, match=message) as err:
        attach._wait_detached(VanishingDomain(code), "vol-1", timeout=1)
    assert "run state=absent again" in err.value.msg and err.value.step == "volume_attach"


# ---------------------------------------------------------------------------------------------
# host-side iSCSI login (iscsiadm), through attach() and detach()


class FakeIscsiadm:
    def __init__(self):
        self.calls = []

    def run(self, args, check=True, timeout=None):
        self.calls.append(list(args))
        return type("Result", (), {"rc": 0, "stdout": "", "stderr": ""})()


@pytest.fixture
def host_initiator(host, monkeypatch):
    runner = FakeIscsiadm()
    monkeypatch.setattr(iscsi, "ISCSIADM", runner)
    monkeypatch.setattr(iscsi, "initiator_for", lambda spec, wanted="auto", supported=None: ("host", "test kernel"))
    real_login = iscsi.login
    monkeypatch.setattr(iscsi, "login", lambda spec, timeout: real_login(spec, timeout, exists=lambda _p: True,
                                                                         sleep=lambda _s: None))
    return host, runner


def no_chap(path, **extra):
    return req(path, connection_info={"driver_volume_type": "iscsi", "data": {
        "target_portal": "127.0.0.1:3260", "target_iqn": "iqn.2026-11.compute.nimbus:t", "target_lun": 1}}, **extra)


def test_host_side_login_attaches_a_block_disk_and_detach_logs_out(host_initiator):
    (conn, path), runner = host_initiator
    dom = conn.domains[UUID]
    dev = "/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.2026-11.compute.nimbus:t-lun-1"
    node = ["-m", "node", "-T", "iqn.2026-11.compute.nimbus:t", "-p", "127.0.0.1:3260"]
    result = attach.attach(conn, no_chap(path), check_mode=False)
    assert result["iscsi_initiator"] == "host" and result["initiator_reason"] == "test kernel"
    assert runner.calls == [[*node, "-o", "new"], [*node, "--login"]]
    disk = etree.fromstring(dom.calls[0][1])
    assert disk.get("type") == "block" and disk.find("source").attrib == {"dev": dev}
    assert disk.find("driver").get("io") == "native" and disk.find("source/host") is None
    assert conn.probes[0].find("source").get("dev") == dev  # the probe opens the same block device
    assert dev in open(conn.path).read() and conn.secrets == {}
    entry = json.load(open(_journal_path(path)))["steps"]["volume_attach"]
    session = "iqn.2026-11.compute.nimbus:t,127.0.0.1:3260"
    assert entry["created"] == ["volume:vol-1", "iscsi-session:" + session]
    assert entry["volumes"]["vol-1"] == {"driver": "iscsi", "device": "vdb", "initiator": "host", "secret_uuid": None,
                                         "session": session, "iqn": "iqn.2026-11.compute.nimbus:t",
                                         "portal": "127.0.0.1:3260", "lun": 1}

    assert attach.attach(conn, no_chap(path), check_mode=False)["changed"] is False
    assert len(runner.calls) == 2  # an attached volume is not logged in again

    result = attach.detach(conn, _absent(path), check_mode=False)
    assert result["changed"] is True and runner.calls[2:] == [[*node, "--logout"], [*node, "-o", "delete"]]
    assert dom.calls[-1][0] == "detach" and dev not in open(conn.path).read()
    entry = json.load(open(_journal_path(path)))["steps"]["volume_attach"]
    assert entry == dict(entry, created=[], volumes={})
    assert attach.detach(conn, _absent(path), check_mode=False)["changed"] is False and len(runner.calls) == 4


def test_host_side_login_is_logged_out_when_the_attach_fails(host_initiator):
    (conn, path), runner = host_initiator
    conn.domains[UUID].fail_attach = "Could not open '/dev/disk/by-path/...': Permission denied"
    with pytest.raises(VolumeError, match="Permission denied"):
        attach.attach(conn, no_chap(path), check_mode=False)
    assert [c[-1] for c in runner.calls] == ["new", "--login", "--logout", "delete"]
    assert not os.path.exists(_journal_path(path))
