"""Real libvirt + QEMU (TCG) tests for domain_xml and domain: every test uses its own UUID and an
instances_path of its own, and the fixture destroys/undefines the domain even when the test fails."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid as uuidlib

import pytest
from labtools import domstate, unavailable, virsh

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._disk import qemu_img
from ansible_collections.nimbus.compute.plugins.module_utils._domain import compare, lifecycle, xml_builder
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import DomainError

pytestmark = pytest.mark.integration
URI = "qemu:///system"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST = os.path.join(ROOT, ".cache", "guest")


@pytest.fixture(scope="module", autouse=True)
def _libvirt_answers(lab):
    if shutil.which("virsh") is None or virsh("version", check=False).returncode != 0:
        unavailable("the lab's libvirtd does not answer on %s (bash tests/lab/start.sh)" % URI)


class Server:
    """One instances_path with one instance dir; QEMU (another user) must traverse it, hence 0755."""

    def __init__(self):
        self.uuid = str(uuidlib.uuid4())
        self.instances_path = "/var/tmp/nimbus-domain-test-%s" % self.uuid[:8]
        self.dir = paths.instance_dir(self.instances_path, self.uuid)
        os.makedirs(self.dir, mode=0o755)
        os.chmod(self.instances_path, 0o755)
        self.name = paths.domain_name(self.uuid)
        self.extra = []  # other domains a test defined

    def disk(self, size=32 << 20, name="disk"):
        path = os.path.join(self.dir, name)
        qemu_img.create(path, size, fmt="qcow2")
        return {"name": name, "path": path, "format": "qcow2", "device": "disk"}

    def params(self, memory_mb=64, **extra):
        params = {"instance_uuid": self.uuid, "instances_path": self.instances_path, "libvirt_uri": URI,
                  "name": "test <server> & co", "virt_type": "qemu",
                  "flavor": {"name": "tiny", "vcpus": 1, "memory_mb": memory_mb, "root_gb": 0},
                  "image": {"id": "img-1", "properties": {}}, "disks": [self.disk()] if "disks" not in extra else []}
        params.update(extra)
        return params

    def domain(self, **params):
        merged = {"uuid": self.uuid, "instances_path": self.instances_path, "libvirt_uri": URI, "state": "running",
                  "shutdown_timeout": 2, "start_timeout": 60}
        merged.update(params)
        return lifecycle.run(merged)

    def cleanup(self):
        for name in [self.name, *self.extra]:
            virsh("destroy", name, check=False)
            virsh("undefine", name, "--nvram", check=False)
        shutil.rmtree(self.instances_path, ignore_errors=True)


@pytest.fixture
def server():
    srv = Server()
    try:
        yield srv
    finally:
        srv.cleanup()


def test_states_idempotence_and_absent(server):
    xml = xml_builder.write_domain_xml(server.params())
    assert xml["changed"] and os.path.exists(xml["path"])
    assert xml["virt_type"] == "qemu" and xml["validated"] is True
    steps = [("defined", "shut off", True), ("defined", "shut off", False), ("running", "running", True),
             ("running", "running", False), ("paused", "paused", True), ("paused", "paused", False),
             ("running", "running", True), ("destroyed", "shut off", True), ("destroyed", "shut off", False),
             ("paused", "paused", True), ("destroyed", "shut off", True)]
    for state, virsh_state, changed in steps:
        result = server.domain(state=state)
        assert result["changed"] is changed, (state, result)
        assert domstate(server.name) == virsh_state, state
    journal = json.load(open(os.path.join(server.dir, "instance.json")))
    assert journal["steps"]["domain"]["created"] == ["domain:" + server.name]
    assert journal["steps"]["domain_xml"]["created"] == [xml["path"]]
    assert server.domain(state="absent")["changed"] is True
    assert domstate(server.name) == "absent"
    assert server.domain(state="absent")["changed"] is False
    assert os.path.exists(xml["path"]), "absent removes the domain only, not the instance dir"


def test_start_paused_then_resume(server):
    xml_builder.write_domain_xml(server.params())
    first = server.domain(state="running", start_paused=True)
    assert first["actions"] == ["define", "start paused"] and domstate(server.name) == "paused"
    assert server.domain(state="running", start_paused=True)["changed"] is False
    resumed = server.domain(state="running")
    assert resumed["actions"] == ["resume"] and domstate(server.name) == "running"


def test_shutdown_forces_after_timeout_or_fails_without_force(server):
    # A blank disk never boots an OS, so nothing answers the ACPI power button.
    xml_builder.write_domain_xml(server.params())
    server.domain(state="running")
    with pytest.raises(DomainError) as info:
        server.domain(state="shutdown", shutdown_timeout=1, force_after_timeout=False)
    assert "did not shut down within 1 s" in str(info.value) and domstate(server.name) == "running"
    started = time.monotonic()
    result = server.domain(state="shutdown", shutdown_timeout=1)
    assert result["forced"] is True and result["state"] == "shutoff" and domstate(server.name) == "shut off"
    assert time.monotonic() - started < 20


def test_ram_change_redefines_with_diff_and_pending_restart(server):
    xml_builder.write_domain_xml(server.params(memory_mb=64))
    server.domain(state="running")
    changed = xml_builder.write_domain_xml(server.params(memory_mb=96, disks=[{"name": "disk", "path": os.path.join(
        server.dir, "disk"), "format": "qcow2"}]))
    assert changed["changed"] and "65536" in changed["diff"]["before"] and "98304" in changed["diff"]["after"]
    result = server.domain(state="running")
    assert result["redefined"] and result["pending_restart"] and result["changed"]
    assert "65536" in result["diff"]["before"] and "98304" in result["diff"]["after"]
    assert "<memory unit='KiB'>98304</memory>" in virsh("dumpxml", "--inactive", server.name).stdout
    assert "<memory unit='KiB'>65536</memory>" in virsh("dumpxml", server.name).stdout, "live domain keeps its RAM"
    assert server.domain(state="running")["changed"] is False
    rebooted = server.domain(state="running", reboot="hard")
    assert rebooted["changed"] and "<memory unit='KiB'>98304</memory>" in virsh("dumpxml", server.name).stdout


def test_libvirt_xml_equals_dumpxml_inactive(server):
    nic = {"type": "ethernet", "target_dev": "tapt" + server.uuid[:8], "mac": "fa:16:3e:12:34:56", "mtu": 1400}
    params = server.params(interfaces=[nic], vnc=True)
    params["disks"] = [server.disk(), server.disk(name="disk.local")]
    written = xml_builder.write_domain_xml(params)
    server.domain(state="defined")
    dumped = virsh("dumpxml", "--inactive", server.name).stdout
    same, before, after = compare.compare(dumped, open(written["path"], "rb").read())
    assert same, "\n".join((before, after))
    assert "<target dev='vdb' bus='virtio'/>" in dumped and "managed='no'" in dumped
    assert "listen='127.0.0.1'" in dumped and "&lt;server&gt; &amp; co" in dumped


def test_conflicting_name_or_uuid_is_an_error_and_untouched(server):
    xml = xml_builder.write_domain_xml(server.params())["xml"]
    other_uuid = str(uuidlib.uuid4())
    foreign = xml.replace(server.uuid + "</uuid>", other_uuid + "</uuid>")
    foreign_path = os.path.join(server.instances_path, "foreign.xml")
    open(foreign_path, "w").write(foreign)
    virsh("define", foreign_path)
    with pytest.raises(DomainError) as info:
        server.domain(state="running")
    assert "already used by another domain with UUID %s" % other_uuid in str(info.value)
    assert virsh("domuuid", server.name).stdout.strip() == other_uuid and domstate(server.name) == "shut off"
    virsh("undefine", server.name)
    # Same UUID, another name.
    server.extra.append("someone-else")
    open(foreign_path, "w").write(xml.replace(server.name, "someone-else"))
    virsh("define", foreign_path)
    with pytest.raises(DomainError) as info:
        server.domain(state="running")
    assert "already used by another domain named 'someone-else'" in str(info.value)
    assert domstate("someone-else") == "shut off"


def test_unreachable_uri_names_the_uri(server):
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    with pytest.raises(DomainError) as info:
        lifecycle.run({"uuid": server.uuid, "libvirt_uri": uri, "state": "running", "xml": "<domain/>"})
    assert uri in str(info.value) and info.value.retryable is True
    with pytest.raises(DomainError) as info:
        xml_builder.write_domain_xml(dict(server.params(), libvirt_uri=uri))
    assert uri in str(info.value)


def wait_for_console(path, marker, timeout=90):
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if os.path.exists(path):
            text = open(path, errors="replace").read()
            if marker in text:
                return text
        time.sleep(0.5)
    raise AssertionError("%r not on the console within %d s:\n%s" % (marker, timeout, text[-2000:]))


def test_guest_boots_with_direct_kernel_boot(server):
    missing = [n for n in ("vmlinuz", "initrd.img", "root.qcow2") if not os.path.exists(os.path.join(GUEST, n))]
    if missing:
        # A lab prerequisite: a failure under NIMBUS_REQUIRE_LAB=1 (make test), never a silent skip there.
        unavailable("guest image not built (make image): %s missing in %s" % (", ".join(missing), GUEST))
    base = os.path.join(server.instances_path, "_base")
    os.makedirs(base, mode=0o755)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copy(os.path.join(GUEST, name), os.path.join(base, name))
    root = os.path.join(server.dir, "disk")
    qemu_img.create(root, 64 << 20, fmt="qcow2", backing_file=os.path.join(GUEST, "root.qcow2"), backing_fmt="qcow2")
    params = server.params(disks=[], kernel=os.path.join(base, "vmlinuz"), ramdisk=os.path.join(base, "initrd.img"))
    params["disks"] = [{"name": "disk", "path": root, "format": "qcow2"}, server.disk(size=16 << 20, name="disk.local")]
    params["flavor"]["memory_mb"] = 256
    params["image"]["properties"] = {"os_command_line": "console=ttyS0 panic=-1"}
    xml_builder.write_domain_xml(params)
    server.domain(state="running")
    console = wait_for_console(os.path.join(server.dir, "console.log"), "nimbus-guest: disk vdb")
    assert "nimbus-guest: up" in console
    assert "nimbus-guest: disk vda bytes=%d" % (64 << 20) in console
    assert "nimbus-guest: disk vdb bytes=%d" % (16 << 20) in console


def test_machine_type_from_image_property(server):
    params = server.params()
    params["image"]["properties"] = {"hw_machine_type": "q35"}
    written = xml_builder.write_domain_xml(params)
    assert written["machine_type"].startswith("pc-q35-"), written["machine_type"]
    params["image"]["properties"] = {"hw_machine_type": "no-such-machine"}
    with pytest.raises(ValidationError, match="machine type 'no-such-machine' is not available"):
        xml_builder.write_domain_xml(params)
    assert written["machine_type"] in open(written["path"]).read(), "the failed run left libvirt.xml alone"


def test_flavor_numa_nodes_reach_the_guest(server):
    """hw:numa_nodes=2 (which the scheduler's NUMATopologyFilter places by) gives QEMU two guest nodes,
    vCPUs and memory split evenly; the definition reads back from libvirt unchanged."""
    params = server.params(memory_mb=128)
    params["flavor"] = dict(params["flavor"], vcpus=2, extra_specs={"hw:numa_nodes": "2"})
    written = xml_builder.write_domain_xml(params)
    server.domain(state="running")
    same, before, after = compare.compare(virsh("dumpxml", "--inactive", server.name).stdout,
                                          open(written["path"], "rb").read())
    assert same, "\n".join((before, after))
    cells = compare.parse(virsh("dumpxml", server.name).stdout.encode()).findall("cpu/numa/cell")
    assert [(c.get("id"), c.get("cpus"), c.get("memory")) for c in cells] == [("0", "0", "65536"), ("1", "1", "65536")]
    pid = open("/run/libvirt/qemu/%s.pid" % server.name).read().strip()
    cmdline = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
    assert sum(1 for arg in cmdline if arg.startswith(b"node,nodeid=")) == 2, cmdline
