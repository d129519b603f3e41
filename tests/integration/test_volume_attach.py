"""volume_attach on the real lab: libvirtd + QEMU (TCG), a private tgtd (iSCSI, with and without CHAP) and
qemu-nbd on 127.0.0.1, the embedded guest for the three tests that boot (markers, boot from volume,
hot plug). Every test has its own instances_path, volume ids and back ends, removed in teardown."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid as uuidlib

import pytest
from labtools import run_role, unavailable, virsh

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError
from ansible_collections.nimbus.compute.plugins.module_utils._domain import lifecycle, xml_builder
from ansible_collections.nimbus.compute.plugins.module_utils._instance import config_drive
from ansible_collections.nimbus.compute.plugins.module_utils._volume import attach, iscsi, secrets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab"))
from volumes import NbdExport, TgtTarget

pytestmark = pytest.mark.integration
URI = "qemu:///system"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST = os.path.join(ROOT, ".cache", "guest")
CHAP = ("nimbus-chap", "Chap-S3cret-9f2b71")
ROOT_MARKER = b"NIMBUS-ROOT-DISK v1"
BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="module", autouse=True)
def _volume_lab(lab, guest_images):
    if shutil.which("virsh") is None or virsh("version", check=False).returncode != 0:
        unavailable("the lab's libvirtd does not answer on %s (bash tests/lab/start.sh)" % URI)
    for tool in ("tgtd", "tgtadm", "qemu-nbd"):
        if shutil.which(tool) is None:
            unavailable("%s is not installed (apt-get install tgt qemu-utils)" % tool)
    if not all(os.path.exists(os.path.join(GUEST, f)) for f in ("vmlinuz", "initrd.img")):
        unavailable("the embedded guest is not built (python tests/lab/guest_image.py)")


def volume_secrets():
    return [line for line in virsh("secret-list").stdout.splitlines() if secrets.USAGE_PREFIX in line]


def probe_domains():
    return [n for n in virsh("list", "--all", "--name").stdout.split() if n.startswith("nimbus-volume-probe-")]


class Server:
    """A server built the collection's way (domain_xml + domain), booting the embedded guest by direct kernel boot."""

    def __init__(self, tmp):
        self.uuid = str(uuidlib.uuid4())
        self.instances_path = "/var/tmp/nimbus-volume-test-%s" % self.uuid[:8]
        self.dir = paths.instance_dir(self.instances_path, self.uuid)
        self.base = os.path.join(self.instances_path, "_base")
        for directory in (self.instances_path, self.base, self.dir):
            os.makedirs(directory, mode=0o755, exist_ok=True)
            os.chmod(directory, 0o755)  # QEMU runs as another user and must traverse
        for name in ("vmlinuz", "initrd.img"):
            shutil.copy(os.path.join(GUEST, name), self.base)
            os.chmod(os.path.join(self.base, name), 0o644)
        self.name = paths.domain_name(self.uuid)
        self.volume_ids = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def backing(self, name, size=32 << 20, head=b""):
        path = self.path(name)
        with open(path, "wb") as handle:
            handle.write(head)
            handle.truncate(size)
        return path

    def define(self, user_data=None, state="defined"):
        disks = []
        if user_data is not None:
            target = self.path("disk.config")
            config_drive.build(target, config_drive.files(self.uuid, "vol-test", user_data=user_data))
            disks.append({"name": "disk.config", "path": target, "format": "raw", "device": "disk"})
        xml_builder.write_domain_xml({
            "instance_uuid": self.uuid, "instances_path": self.instances_path, "libvirt_uri": URI, "name": "vol-test",
            "virt_type": "qemu", "flavor": {"name": "tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 0},
            "image": {"id": "img", "properties": {}}, "disks": disks,
            "kernel": os.path.join(self.base, "vmlinuz"), "ramdisk": os.path.join(self.base, "initrd.img")})
        return self.domain(state)

    def domain(self, state):
        return lifecycle.run({"uuid": self.uuid, "instances_path": self.instances_path, "libvirt_uri": URI, "state": state,
                              "shutdown_timeout": 2, "start_timeout": 60})

    def volume(self, volume_id, connection_info=None, **extra):
        if volume_id not in self.volume_ids:
            self.volume_ids.append(volume_id)
        params = {"instance_uuid": self.uuid, "volume_id": volume_id, "instances_path": self.instances_path,
                  "libvirt_uri": URI, "connection_info": connection_info, "connect_timeout": 5, "detach_timeout": 60}
        params.update(extra)
        return attach.run(params, check_mode=params.pop("check_mode", False))

    def libvirt_xml(self):
        with open(self.path("libvirt.xml"), "rb") as handle:
            return handle.read()

    def domain_xml(self, inactive=True):
        return virsh("dumpxml", *(["--inactive"] if inactive else []), self.name).stdout

    def console(self):
        try:
            with open(self.path("console.log"), errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def wait_console(self, text, timeout=BOOT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console():
                return self.console()
            time.sleep(0.25)
        raise AssertionError("%r not on the console within %.0f s:\n%s" % (text, timeout, self.console()[-3000:]))

    def cleanup(self):
        virsh("destroy", self.name, check=False)
        virsh("undefine", self.name, "--nvram", check=False)
        for volume_id in self.volume_ids:
            virsh("secret-undefine", secrets.secret_uuid(volume_id), check=False)
        shutil.rmtree(self.instances_path, ignore_errors=True)


@pytest.fixture
def make_server(tmp_path):
    made = []

    def factory():
        made.append(Server(tmp_path))
        return made[-1]

    yield factory
    for server in made:
        server.cleanup()


@pytest.fixture
def backends():
    """Start TgtTarget/NbdExport objects through this fixture: each is stopped after the test."""
    started = []

    def start(service):
        started.append(service.start())
        return service

    yield start
    for service in reversed(started):
        service.stop()


def iqn(tag):
    return "iqn.2026-11.compute.nimbus:%s-%s" % (tag, uuidlib.uuid4().hex[:6])


def short_id(tag):
    return "%s-%s" % (tag, uuidlib.uuid4().hex[:6])  # virtio-blk shows at most 20 serial characters


# ---------------------------------------------------------------------------------------------
# Booted guests (three boots in this file)

MARKER_SCRIPT = """#!/bin/sh
for d in /sys/block/vd*; do
  s=$(cat "$d/serial" 2>/dev/null)
  [ -n "$s" ] || continue
  printf 'NIMBUS-MARKER %s\\n' "$s" | dd of=/dev/${d##*/} bs=512 count=1 conv=fsync 2>/dev/null
  echo "marker ${d##*/} serial=$s rc=$?"
done
sync
echo markers-done
"""


def test_guest_writes_markers_to_iscsi_and_nbd_volumes(make_server, backends):
    server = make_server()
    lun = server.backing("lun-iscsi.img")
    export = server.backing("nbd-export.img", size=16 << 20)
    target = backends(TgtTarget(lun, iqn("markers"), chap=CHAP))
    nbd_server = backends(NbdExport(export, export="markers"))
    server.define(user_data=MARKER_SCRIPT)
    iscsi_id, nbd_id = short_id("iscsi"), short_id("nbd")

    first = server.volume(iscsi_id, target.connection_info())
    assert first["changed"] and first["device"] == "vdb" and first["live"] is False
    assert first["iscsi_initiator"] == "qemu"  # CHAP, and no iscsi_tcp transport here
    assert server.volume(nbd_id, nbd_server.connection_info())["device"] == "vdc"
    assert server.volume(iscsi_id, target.connection_info())["changed"] is False
    assert server.domain("defined")["changed"] is False, "libvirt.xml must follow the attach"
    assert CHAP[1] not in server.libvirt_xml().decode() and CHAP[1] not in server.domain_xml()
    assert len(volume_secrets()) == 1 and target.sessions() == 0  # the probe logged out again

    server.domain("running")
    console = server.wait_console("nimbus-guest: user-data: markers-done")
    assert "marker vdb serial=%s rc=0" % iscsi_id in console and "marker vdc serial=%s rc=0" % nbd_id in console
    assert target.sessions() == 1
    qemu_args = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert CHAP[1] not in qemu_args, "the CHAP secret must never be on a command line"

    for volume_id in (iscsi_id, nbd_id):
        detached = server.volume(volume_id, state="absent")
        assert detached["changed"] and detached["live"] is True
    live = server.domain_xml(inactive=False)
    assert "ua-volume-" not in live and "ua-volume-" not in server.domain_xml() and b"ua-volume-" not in server.libvirt_xml()
    assert target.sessions() == 0 and volume_secrets() == []
    with open(lun, "rb") as handle:
        assert handle.read(64).startswith(b"NIMBUS-MARKER %s\n" % iscsi_id.encode())
    with open(export, "rb") as handle:
        assert handle.read(64).startswith(b"NIMBUS-MARKER %s\n" % nbd_id.encode())
    assert server.domain("running")["changed"] is False

    assert server.domain("absent")["changed"] is True
    assert virsh("dominfo", server.name, check=False).returncode != 0
    assert target.sessions() == 0 and volume_secrets() == [] and probe_domains() == []


def test_boot_from_iscsi_volume(make_server, backends):
    server = make_server()
    lun = server.backing("lun-root.img", size=24 << 20, head=ROOT_MARKER)
    target = backends(TgtTarget(lun, iqn("bfv")))
    server.define()  # no local disk at all
    volume_id = short_id("root")
    result = server.volume(volume_id, target.connection_info(), boot_index=0)
    # libvirt gave the domain <os><boot dev='hd'/>, which excludes per-device boot order: the volume is the first disk.
    assert result["device"] == "vda" and "<boot order" not in result["disk_xml"]
    server.domain("running")
    console = server.wait_console("nimbus-guest: ready")
    assert "nimbus-guest: root-label NIMBUS-ROOT-DISK v1" in console
    assert "nimbus-guest: disk vda bytes=%d" % (24 << 20) in console
    assert target.sessions() == 1

    # Delete the server first: the volume step still cleans up after it (no domain left to detach from).
    server.domain("absent")
    assert target.sessions() == 0
    cleaned = server.volume(volume_id, state="absent")
    assert cleaned["changed"] is True and cleaned["libvirt_xml_updated"] is True and b"ua-volume-" not in server.libvirt_xml()
    assert server.volume(volume_id, state="absent")["changed"] is False
    journal = json.load(open(server.path("instance.json")))
    assert journal["steps"]["volume_attach"]["volumes"] == {}
    assert journal["steps"]["volume_attach"]["created"] == []


def test_hot_attach_and_detach_on_a_running_server(make_server, backends):
    server = make_server()
    export = server.backing("nbd-hot.img", size=8 << 20)
    lun = server.backing("lun-hot.img", size=8 << 20)
    nbd_server = backends(NbdExport(export, export="hot"))
    target = backends(TgtTarget(lun, iqn("hot"), chap=CHAP))
    server.define(state="running")
    server.wait_console("nimbus-guest: ready")
    nbd_id, iscsi_id = short_id("hot"), short_id("chap")
    before = server.libvirt_xml()

    planned = server.volume(nbd_id, nbd_server.connection_info(), check_mode=True)
    assert planned["changed"] is True and "ua-volume-" not in server.domain_xml(inactive=False)
    assert server.libvirt_xml() == before

    attached = server.volume(nbd_id, nbd_server.connection_info())
    assert attached["changed"] and attached["live"] is True and attached["device"] == "vda"
    assert "ua-volume-%s" % nbd_id in server.domain_xml(inactive=False)
    assert "ua-volume-%s" % nbd_id in server.domain_xml(inactive=True)
    assert server.volume(nbd_id, nbd_server.connection_info())["changed"] is False
    assert server.domain("running")["changed"] is False

    # A wrong CHAP password on a running server: QEMU refuses the live attach, nothing stays.
    xml_now = server.libvirt_xml()
    bad = target.connection_info()
    bad["data"]["auth_password"] = "not-the-password"
    with pytest.raises(NimbusError, match="Authentication failure"):
        server.volume(iscsi_id, bad)
    assert volume_secrets() == [] and server.libvirt_xml() == xml_now and target.sessions() == 0
    assert "ua-volume-%s" % iscsi_id not in server.domain_xml(inactive=True)

    # A portal that accepts TCP and never answers would block the server's own QEMU in a live
    # blockdev-add: the probe refuses it in bounded time and the running guest keeps answering.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        hung = target.connection_info()
        hung["data"]["target_portal"] = "127.0.0.1:%d" % silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(NimbusError, match="did not finish within 7 s"):
            server.volume(short_id("silent"), hung, connect_timeout=2)
        assert time.monotonic() - started < 30
    finally:
        silent.close()
    assert volume_secrets() == [] and server.libvirt_xml() == xml_now and probe_domains() == []
    assert virsh("domstate", server.name).stdout.strip() == "running"

    hot = server.volume(iscsi_id, target.connection_info())
    assert hot["device"] == "vdb" and target.sessions() == 1 and len(volume_secrets()) == 1
    for volume_id in (iscsi_id, nbd_id):
        detached = server.volume(volume_id, state="absent")
        assert detached["changed"] is True and detached["live"] is True
        assert "ua-volume-%s" % volume_id not in server.domain_xml(inactive=False)
        assert server.volume(volume_id, state="absent")["changed"] is False
    assert target.sessions() == 0 and volume_secrets() == []
    assert server.libvirt_xml() == before
    assert server.domain("running")["changed"] is False


# ---------------------------------------------------------------------------------------------
# No boot: stopped domains (build-time attach)


def test_bad_input_leaves_no_session_no_secret_no_xml_change(make_server, backends):
    server = make_server()
    target = backends(TgtTarget(server.backing("lun-bad.img", size=8 << 20), iqn("bad"), chap=CHAP))
    server.define()
    libvirt_xml, domain_xml = server.libvirt_xml(), server.domain_xml()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts TCP, never speaks iSCSI
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
    good = target.connection_info()["data"]
    cases = [
        ({"driver_volume_type": "fibre_channel", "data": good}, {}, "unknown driver_volume_type"),
        ({"driver_volume_type": "iscsi", "data": dict(good, target_iqn=None)}, {}, "target_iqn"),
        ({"driver_volume_type": "iscsi", "data": dict(good, target_lun=16384)}, {}, "out of range"),
        ({"driver_volume_type": "iscsi", "data": dict(good, target_lun=7)}, {}, "LOGICAL_UNIT_NOT_SUPPORTED"),
        ({"driver_volume_type": "iscsi", "data": dict(good, auth_password="wrong-password")}, {}, "Authentication failure"),
        ({"driver_volume_type": "iscsi", "data": dict(good, target_portal="127.0.0.1:%d" % closed.getsockname()[1])}, {},
         "is not reachable"),
        ({"driver_volume_type": "iscsi", "data": dict(good, target_portal="127.0.0.1:%d" % silent.getsockname()[1])},
         {"connect_timeout": 2}, "did not finish within 7 s"),
        ({"driver_volume_type": "rbd", "data": {"name": "volumes/v1", "hosts": ["127.0.0.1"], "auth_username": "cinder",
                                                "secret_uuid": str(uuidlib.uuid4())}}, {}, "no Ceph secret"),
    ]
    try:
        for info, extra, message in cases:
            started = time.monotonic()
            with pytest.raises(NimbusError, match=message) as err:
                server.volume(short_id("bad"), info, **extra)
            assert time.monotonic() - started < 20, message
            assert err.value.step == "volume_attach" and CHAP[1] not in str(err.value)
            assert volume_secrets() == [], message
            assert server.libvirt_xml() == libvirt_xml and server.domain_xml() == domain_xml, message
            assert target.sessions() == 0 and probe_domains() == [], message
    finally:
        silent.close()
        closed.close()


def test_volume_on_another_server_is_refused(make_server, backends):
    first, second = make_server(), make_server()
    nbd_server = backends(NbdExport(first.backing("shared.img", size=8 << 20), export="shared"))
    first.define()
    second.define()
    volume_id = short_id("shared")
    assert first.volume(volume_id, nbd_server.connection_info())["changed"] is True
    before = second.domain_xml()
    with pytest.raises(NimbusError, match="already attached to domain %s" % first.name):
        second.volume(volume_id, nbd_server.connection_info())
    with pytest.raises(NimbusError, match="already attached to domain %s" % first.name):
        second.volume(short_id("alias"), nbd_server.connection_info())  # same export under another id
    assert second.domain_xml() == before
    assert first.volume(volume_id, state="absent")["changed"] is True
    assert second.volume(volume_id, nbd_server.connection_info())["device"] == "vda"


def test_rbd_disk_passes_libvirt_schema_and_define(make_server):
    """No Ceph cluster here: the RBD disk is checked by libvirt's RelaxNG schema and by defineXML only."""
    server = make_server()
    server.define()
    ceph_uuid = str(uuidlib.uuid4())
    xml = ("<secret ephemeral='no' private='yes'><uuid>%s</uuid><usage type='ceph'><name>nimbus-test-%s</name></usage>"
           "</secret>" % (ceph_uuid, ceph_uuid[:8]))
    with open(server.path("ceph-secret.xml"), "w") as handle:
        handle.write(xml)
    virsh("secret-define", server.path("ceph-secret.xml"))
    try:
        volume_id = short_id("rbd")
        data = {"name": "volumes/volume-%s" % volume_id, "hosts": ["127.0.0.1", "127.0.0.2"], "ports": ["6789", "6789"],
                "auth_username": "cinder", "secret_uuid": ceph_uuid}
        info = {"driver_volume_type": "rbd", "data": data}
        result = server.volume(volume_id, info)
        assert result["changed"] is True and result["secret_uuid"] == ceph_uuid
        defined = server.domain_xml()
        assert "protocol='rbd' name='volumes/volume-%s'" % volume_id in defined
        assert "<secret type='ceph' uuid='%s'/>" % ceph_uuid in defined
        assert xml_builder.validate_xml(server.libvirt_xml()) is True
        assert server.domain("defined")["changed"] is False
        assert server.volume(volume_id, state="absent")["changed"] is True
        assert "rbd" not in server.domain_xml()
        assert virsh("secret-dumpxml", ceph_uuid, check=False).returncode == 0, "the host's Ceph secret is not ours to remove"
    finally:
        virsh("secret-undefine", ceph_uuid, check=False)


def test_host_side_login_is_reported_when_the_kernel_cannot(make_server, backends):
    if iscsi.host_login_supported()[0]:
        pytest.skip("this host has iscsi_tcp: host-side login would run")
    server = make_server()
    target = backends(TgtTarget(server.backing("lun-host.img", size=8 << 20), iqn("host")))
    server.define()
    with pytest.raises(NimbusError, match="host-side iSCSI login is not possible here: the kernel has no iscsi_tcp"):
        server.volume(short_id("host"), target.connection_info(), iscsi_initiator="host")
    auto = server.volume(short_id("auto"), target.connection_info())
    assert auto["iscsi_initiator"] == "qemu" and "iscsi_tcp" in auto["initiator_reason"]


def test_module_through_ansible_playbook_keeps_the_chap_password_out_of_the_output(make_server, backends, tmp_path):
    server = make_server()
    target = backends(TgtTarget(server.backing("lun-play.img", size=8 << 20), iqn("play"), chap=CHAP))
    server.define()
    volume_id = short_id("play")
    task = {"nimbus.compute.volume_attach": {"instance_uuid": server.uuid, "volume_id": volume_id,
                                             "instances_path": server.instances_path,
                                             "connection_info": target.connection_info()}}
    detach = {"nimbus.compute.volume_attach": {"instance_uuid": server.uuid, "volume_id": volume_id,
                                               "instances_path": server.instances_path, "state": "absent"}}
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        dict(task, register="first"), dict(task, register="second"), dict(detach, register="third"),
        {"ansible.builtin.assert": {"that": ["first is changed", "first.device == 'vda'", "second is not changed",
                                             "third is changed"]}}]}]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    server.volume_ids.append(volume_id)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local", "-vvv",
                           "--diff", "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert CHAP[1] not in proc.stdout + proc.stderr
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in proc.stdout
    assert volume_secrets() == [] and target.sessions() == 0


# ---------------------------------------------------------------------------------------------
# The server role, run twice with a volume

ROLE_FLAVOR = {"name": "t.nano", "vcpus": 1, "memory_mb": 64, "root_gb": 1, "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}


def _recap_changed(stdout):
    recap = stdout[stdout.rindex("PLAY RECAP"):]
    return int(recap.split("changed=", 1)[1].split()[0])


def test_server_role_rerun_with_a_volume_changes_nothing(guest_images, backends, tmp_path):
    """domain_xml keeps the attached ua-volume-* disk, so the re-run neither redefines the domain without the
    volume nor attaches it again: changed=0."""
    server_uuid = str(uuidlib.uuid4())
    backing = tmp_path / "role-volume.raw"
    backing.write_bytes(b"\0" * (8 << 20))
    export = backends(NbdExport(str(backing), export="role"))
    instances = "/var/tmp/nimbus-volume-role-%s" % server_uuid[:8]
    os.makedirs(instances, mode=0o755)
    volume_id = short_id("role")
    role_vars = {"server_uuid": server_uuid, "server_flavor": ROLE_FLAVOR, "server_image": guest_images["nimbus_guest_image"],
                 "server_kernel_image": guest_images["nimbus_guest_kernel"],
                 "server_ramdisk_image": guest_images["nimbus_guest_ramdisk"], "server_instances_path": instances,
                 "server_reserved_host_memory_mb": 0, "server_state": "defined",
                 "server_volumes": [{"volume_id": volume_id, "connection_info": export.connection_info()}]}
    name = paths.domain_name(server_uuid)
    try:
        first = run_role(tmp_path, "server", role_vars)
        assert first.returncode == 0, first.stdout[-3000:]
        defined = virsh("dumpxml", "--inactive", name).stdout
        assert "ua-volume-%s" % volume_id in defined
        with open(os.path.join(instances, server_uuid, "libvirt.xml")) as handle:
            saved = handle.read()
        assert "ua-volume-%s" % volume_id in saved

        second = run_role(tmp_path, "server", role_vars)
        assert second.returncode == 0, second.stdout[-3000:]
        assert _recap_changed(second.stdout) == 0, second.stdout[-4000:]
        assert virsh("dumpxml", "--inactive", name).stdout == defined
        with open(os.path.join(instances, server_uuid, "libvirt.xml")) as handle:
            assert handle.read() == saved
    finally:
        gone = run_role(tmp_path, "server_delete", {"server_delete_uuid": server_uuid,
                                                    "server_delete_instances_path": instances})
        shutil.rmtree(instances, ignore_errors=True)
    assert gone.returncode == 0, gone.stdout[-3000:]
    assert name not in virsh("list", "--all", "--name").stdout.split()
