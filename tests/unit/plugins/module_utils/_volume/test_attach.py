"""The attach/detach flow against a small in-memory libvirt (libvirt's test driver has no secrets and no
attachDeviceFlags): order of effects, rollback on failure, libvirt.xml and journal kept in step."""

from __future__ import annotations

import json
import os

import libvirt
import pytest
from lxml import etree

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._domain.compare import parse
from ansible_collections.nimbus.compute.plugins.module_utils._volume import attach, common, secrets
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
