"""instance_disks with the real qemu-img, xorriso and mkfs: backing chain, sizes, the config drive's
content, idempotence, never overwriting, faults that leave nothing behind, and a guest that boots
from the disks and reads its config drive."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import time
import uuid as uuidlib

import pytest
from labtools import unavailable, virsh
from moduletools import run_module

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._disk import qemu_img
from ansible_collections.nimbus.compute.plugins.module_utils._instance import claim, disks
from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import GIB, MIB
from ansible_collections.nimbus.compute.plugins.module_utils._instance.owner import qemu_owner
from ansible_collections.nimbus.compute.plugins.modules import instance_disks

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST = os.path.join(ROOT, ".cache", "guest")
FLAVOR = {"name": "m1.test", "vcpus": 1, "memory_mb": 256, "root_gb": 1, "ephemeral_gb": 1, "swap": 32}
RATIOS = {"memory_mb": 1.0, "disk_mb": 1.0, "vcpus": 4.0}
RESERVED = {"memory_mb": 0, "disk_mb": 0, "vcpus": 0}
TOTALS = {"memory_mb": 4096, "disk_gb": 100, "vcpus": 4}


@pytest.fixture(scope="module", autouse=True)
def tools():
    for tool in ("qemu-img", "xorriso"):
        if shutil.which(tool) is None:
            unavailable("%s is not installed (make packages)" % tool)


class Host:
    """An instances_path with a raw base image in _base, like image_cache leaves it."""

    def __init__(self, root, base_size=10 * MIB):
        self.path = str(root)
        self.uuid = str(uuidlib.uuid4())
        os.makedirs(paths.base_dir(self.path), mode=0o755)
        os.chmod(self.path, 0o755)  # QEMU (another user) traverses it in the boot test
        self.base = paths.base_path(self.path, "image-1")
        with open(self.base, "wb") as handle:
            handle.write(b"nimbus base image\n")
            handle.truncate(base_size)
        os.chmod(self.base, 0o644)
        self.dir = paths.instance_dir(self.path, self.uuid)

    def claim(self, flavor=None):
        flavor = flavor or FLAVOR
        return claim.claim(self.uuid, flavor, self.path, ratios=RATIOS, reserved=RESERVED, totals=TOTALS)

    def ensure(self, **kw):
        kw.setdefault("config_drive_enabled", True)
        kw.setdefault("ephemeral_format", "ext4")
        return disks.ensure(self.uuid, self.path, kw.pop("flavor", FLAVOR), kw.pop("base_path", self.base), **kw)

    def snapshot(self):
        """Every path under instances_path except _base and the lock files, with its content digest."""
        found = {}
        skip = (paths.base_dir(self.path), paths.locks_dir(self.path))
        for top, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
            for name in dirs + files:
                full = os.path.join(top, name)
                found[full] = None if os.path.isdir(full) else hashlib.sha256(open(full, "rb").read()).hexdigest()
        return found


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def iso_files(path):
    out = subprocess.run(["xorriso", "-indev", path, "-find", "/", "-type", "f"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(line.strip("'") for line in out.split())


def iso_label(path):
    """The volume identifier from the ISO 9660 primary volume descriptor (sector 16, bytes 40-72)."""
    with open(path, "rb") as handle:
        handle.seek(16 * 2048)
        pvd = handle.read(2048)
    assert pvd[0:6] == b"\x01CD001", "no ISO 9660 primary volume descriptor"
    return pvd[40:72].decode("ascii").rstrip()


def iso_read(path, member, tmp_path):
    target = tmp_path / ("extract-" + member.replace("/", "_"))
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", path, "-extract", member, str(target)], capture_output=True,
                   check=True)
    return target.read_bytes()


def blkid(disk, tmp_path):
    """TYPE and LABEL of a qcow2 disk's file system (converted to raw first: blkid reads raw only)."""
    raw = tmp_path / ("raw-" + os.path.basename(disk))
    qemu_img.convert(disk, "qcow2", str(raw), "raw")
    out = subprocess.run(["blkid", "-o", "export", str(raw)], capture_output=True, text=True, check=False).stdout
    raw.unlink()
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_disks_backing_chain_sizes_modes_and_owner(host, tmp_path):
    host.claim()
    result = host.ensure(name="web 1", meta_data={"meta": {"role": "web"}}, user_data="#!/bin/sh\necho hi\n",
                         network_data={"links": [{"id": "tap0"}]})
    assert result["changed"] is True
    assert [(d["name"], d["format"]) for d in result["domain_disks"]] == [
        ("disk", "qcow2"), ("disk.local", "qcow2"), ("disk.swap", "qcow2"), ("disk.config", "raw")]
    chain = json.loads(subprocess.run(["qemu-img", "info", "-f", "qcow2", "--backing-chain", "--output=json",
                                       os.path.join(host.dir, "disk")], capture_output=True, check=True).stdout)
    assert chain[0]["backing-filename"] == host.base and chain[0]["backing-filename-format"] == "raw"
    assert chain[0]["virtual-size"] == GIB
    assert chain[1]["filename"] == host.base and chain[1]["format"] == "raw"
    assert qemu_img.info(os.path.join(host.dir, "disk.local"), "qcow2")["virtual-size"] == GIB
    assert qemu_img.info(os.path.join(host.dir, "disk.swap"), "qcow2")["virtual-size"] == 32 * MIB
    owner = qemu_owner()
    st = os.stat(host.dir)
    assert oct(st.st_mode & 0o777) == "0o700" and st.st_uid == owner.uid
    for disk in result["domain_disks"]:
        st = os.stat(disk["path"])
        assert oct(st.st_mode & 0o777) == "0o600", disk["name"]
        assert (st.st_uid, st.st_gid) == (owner.uid, owner.gid)
    assert sorted(os.listdir(host.dir)) == ["disk", "disk.config", "disk.local", "disk.swap", "instance.json"]
    # Formatted as Nova does: ext4 labelled ephemeral0, swap by mkswap.
    if shutil.which("blkid"):
        local = blkid(os.path.join(host.dir, "disk.local"), tmp_path)
        assert (local["TYPE"], local["LABEL"]) == ("ext4", "ephemeral0")
        assert blkid(os.path.join(host.dir, "disk.swap"), tmp_path)["TYPE"] == "swap"


def test_config_drive_is_a_readable_iso_labelled_config_2(host, tmp_path):
    result = host.ensure(name="Web Server", user_data="#!/bin/sh\necho hi\n", flavor=dict(FLAVOR, ephemeral_gb=0, swap=0))
    drive = result["domain_disks"][-1]["path"]
    assert iso_label(drive) == "config-2"
    assert iso_files(drive) == [
        "/openstack/2012-08-10/meta_data.json", "/openstack/2012-08-10/user_data", "/openstack/latest/meta_data.json",
        "/openstack/latest/network_data.json", "/openstack/latest/user_data", "/openstack/latest/vendor_data.json"]
    meta = json.loads(iso_read(drive, "/openstack/latest/meta_data.json", tmp_path))
    assert (meta["uuid"], meta["name"], meta["hostname"]) == (host.uuid, "Web Server", "web-server")
    assert iso_read(drive, "/openstack/latest/user_data", tmp_path) == b"#!/bin/sh\necho hi\n"
    assert not [n for n in os.listdir(host.dir) if n.startswith(".")], "staging dir removed"


def test_second_run_unchanged_and_config_change_rebuilds_only_the_drive(host, tmp_path):
    host.ensure(user_data="one")
    before = host.snapshot()
    again = host.ensure(user_data="one")
    assert again["changed"] is False and again["created"] == []
    assert host.snapshot() == before
    changed = host.ensure(user_data="two", check_mode=True)
    assert changed["changed"] is True and "disk.config (rebuilt)" in changed["diff"]["after"]
    assert host.snapshot() == before, "check mode changes nothing"
    rebuilt = host.ensure(user_data="two")
    assert rebuilt["created"] == [] and rebuilt["rebuilt"] == ["disk.config"], "a rebuilt drive is not a new file"
    assert iso_read(os.path.join(host.dir, "disk.config"), "/openstack/latest/user_data", tmp_path) == b"two"
    assert hashlib.sha256(open(os.path.join(host.dir, "disk"), "rb").read()).hexdigest() == before[
        os.path.join(host.dir, "disk")]


def test_file_system_without_its_mkfs_gives_a_blank_disk_and_a_warning(host, tmp_path, monkeypatch):
    # A supported file system whose tools are not installed on the host: mkfs.xfs hidden from the step.
    real_which = shutil.which
    monkeypatch.setattr(disks.shutil, "which", lambda name: None if name == "mkfs.xfs" else real_which(name))
    result = host.ensure(ephemeral_format="xfs", config_drive_enabled=False)
    assert result["warnings"] == ["mkfs.xfs not found: disk.local left blank"]
    assert qemu_img.info(os.path.join(host.dir, "disk.local"), "qcow2")["virtual-size"] == GIB
    if shutil.which("blkid"):
        assert "TYPE" not in blkid(os.path.join(host.dir, "disk.local"), tmp_path)


def test_root_gb_zero_uses_image_size(host):
    host.ensure(flavor=dict(FLAVOR, root_gb=0, ephemeral_gb=0, swap=0), config_drive_enabled=False)
    assert qemu_img.info(os.path.join(host.dir, "disk"), "qcow2")["virtual-size"] == 10 * MIB


def test_root_gb_zero_with_an_image_of_odd_length_is_idempotent(tmp_path):
    odd = Host(tmp_path, base_size=10 * MIB + 100)
    flavor = dict(FLAVOR, root_gb=0, ephemeral_gb=0, swap=0)
    assert odd.ensure(flavor=flavor, config_drive_enabled=False)["changed"] is True
    assert qemu_img.info(os.path.join(odd.dir, "disk"), "qcow2")["virtual-size"] == 10 * MIB + 512
    assert odd.ensure(flavor=flavor, config_drive_enabled=False)["changed"] is False


def test_root_gb_smaller_than_image_fails_before_any_change(tmp_path):
    big = Host(tmp_path, base_size=2 * GIB)
    with pytest.raises(NimbusError, match="smaller than the image's virtual size"):
        big.ensure()
    assert not os.path.exists(big.dir)


@pytest.mark.parametrize("wrong", ["size", "backing", "format"])
def test_wrong_existing_disk_is_an_error_and_untouched(host, wrong):
    host.claim()
    target = os.path.join(host.dir, "disk")
    if wrong == "size":
        qemu_img.create(target, 2 * GIB, "qcow2", backing_file=host.base, backing_fmt="raw")
    elif wrong == "backing":
        qemu_img.create(target, GIB, "qcow2")
    else:
        with open(target, "wb") as handle:
            handle.write(b"the user's own data")
    digest = hashlib.sha256(open(target, "rb").read()).hexdigest()
    with pytest.raises(NimbusError, match="will not be overwritten") as info:
        host.ensure()
    assert target in str(info.value)
    assert hashlib.sha256(open(target, "rb").read()).hexdigest() == digest
    assert sorted(os.listdir(host.dir)) == ["disk", "instance.json"]


def test_run_after_a_killed_run_completes_the_build(host):
    """A run killed mid-way left a half-made temp file and a journal naming a disk not yet in place."""
    host.claim()
    Journal(host.dir).record("instance_disks", created=[os.path.join(host.dir, "disk")])
    with open(os.path.join(host.dir, ".nimbus-disk.tmp"), "wb") as handle:
        handle.write(b"half a qcow2")
    result = host.ensure()
    assert result["created"] == ["disk", "disk.local", "disk.swap", "disk.config"]
    assert sorted(os.listdir(host.dir)) == ["disk", "disk.config", "disk.local", "disk.swap", "instance.json"]
    assert qemu_img.info(os.path.join(host.dir, "disk"), "qcow2")["backing-filename"] == host.base


def test_foreign_config_drive_is_not_replaced(host):
    os.makedirs(host.dir)
    with open(os.path.join(host.dir, "disk.config"), "wb") as handle:
        handle.write(b"someone else's")
    with pytest.raises(NimbusError, match=r"not created by nimbus\.compute"):
        host.ensure(flavor=dict(FLAVOR, ephemeral_gb=0, swap=0))


def test_absent_removes_exactly_the_journaled_files(host):
    host.claim()
    host.ensure()
    with open(os.path.join(host.dir, "console.log"), "w") as handle:
        handle.write("guest output")
    removed = disks.remove(host.uuid, host.path)
    assert removed["removed"] == ["disk", "disk.local", "disk.swap", "disk.config"]
    assert removed["kept_because"] == ["step instance_claim"], "the claim still holds the dir"
    assert sorted(os.listdir(host.dir)) == ["console.log", "instance.json"]
    assert "instance_disks" not in Journal(host.dir).data["steps"]
    assert disks.remove(host.uuid, host.path)["changed"] is False
    assert claim.release(host.uuid, host.path)["kept_because"] == []
    assert sorted(os.listdir(host.path)) == ["_base", "locks"]
    assert os.listdir(os.path.join(host.path, "locks")) == ["host.lock"]


def test_without_claim_the_step_creates_and_removes_the_dir(host):
    before = host.snapshot()
    host.ensure()
    assert Journal(host.dir).created("instance_disks")[0] == host.dir
    disks.remove(host.uuid, host.path)
    assert host.snapshot() == before


def run_disks_module(args, capsys):
    return run_module(instance_disks, args, capsys)


@pytest.fixture
def broken_tool(tmp_path_factory, monkeypatch):
    """Put a failing stand-in for a tool first on PATH."""
    bindir = tmp_path_factory.mktemp("broken-bin")

    def install(tool):
        script = bindir / tool
        script.write_text("#!/bin/sh\necho 'injected failure of %s' >&2\nexit 3\n" % tool)
        script.chmod(0o755)
        monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))

    return install


@pytest.mark.parametrize("tool", ["qemu-img", "xorriso", "mkfs"])
@pytest.mark.parametrize("claimed", [True, False])
def test_broken_tool_is_a_clean_error_and_leaves_nothing(host, broken_tool, capsys, tool, claimed):
    if claimed:
        host.claim()
    before = host.snapshot()
    broken_tool(tool)
    args = {"instance_uuid": host.uuid, "instances_path": host.path, "flavor": FLAVOR, "base_path": host.base,
            "config_drive": True, "ephemeral_format": "ext4"}
    result = run_disks_module(args, capsys)
    assert result["failed"] is True and result["failed_step"] == "instance_disks"
    assert "injected failure of %s" % tool in result["msg"]
    after = host.snapshot()
    if claimed:
        # instance.json is rewritten (same claim, no instance_disks step): compare its meaning.
        assert "instance_disks" not in Journal(host.dir).data["steps"]
        after.pop(os.path.join(host.dir, "instance.json"))
        before.pop(os.path.join(host.dir, "instance.json"))
    assert after == before
    # Without a claim nothing of the server is left, so neither is its lock file.
    assert os.path.exists(os.path.join(paths.locks_dir(host.path), host.uuid + ".lock")) is claimed
    # The next run, with working tools, completes the build.
    shutil.rmtree(os.path.dirname(shutil.which(tool)))
    assert host.ensure()["changed"] is True


@pytest.fixture
def read_only_instance_dir(host):
    host.claim()
    subprocess.run(["mount", "--bind", host.dir, host.dir], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", host.dir], check=True)
        yield host
    finally:
        subprocess.run(["umount", host.dir], check=True)


def test_read_only_instance_dir_is_a_clean_error(read_only_instance_dir, capsys):
    host = read_only_instance_dir
    before = host.snapshot()
    args = {"instance_uuid": host.uuid, "instances_path": host.path, "flavor": FLAVOR, "base_path": host.base}
    result = run_disks_module(args, capsys)
    assert result["failed"] is True and result["failed_step"] == "instance_disks"
    assert "Read-only file system" in result["msg"]
    assert host.snapshot() == before


def test_base_path_outside_base_dir_via_module(host, capsys):
    outside = os.path.join(host.path, "elsewhere.raw")
    shutil.copy(host.base, outside)
    args = {"instance_uuid": host.uuid, "instances_path": host.path, "flavor": FLAVOR, "base_path": outside}
    result = run_disks_module(args, capsys)
    assert result["failed"] is True and "is not inside" in result["msg"]
    assert not os.path.exists(host.dir)


# ---- a guest boots from these disks and reads its config drive --------------------------------

URI = "qemu:///system"


@pytest.fixture
def boot_host():
    if not os.path.exists(os.path.join(GUEST, "vmlinuz")):
        unavailable("guest image not built (make image)")
    if shutil.which("virsh") is None or virsh("version", check=False).returncode != 0:
        unavailable("the lab's libvirtd does not answer on %s (bash tests/lab/start.sh)" % URI)
    root = "/var/tmp/nimbus-disks-test-%s" % uuidlib.uuid4().hex[:8]
    os.makedirs(root)
    host = Host(root)
    try:
        yield host
    finally:
        virsh("destroy", paths.domain_name(host.uuid), check=False)
        virsh("undefine", paths.domain_name(host.uuid), "--nvram", check=False)
        shutil.rmtree(root, ignore_errors=True)


def wait_for_console(path, marker, timeout=120):
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, errors="replace") as handle:
                text = handle.read()
            if marker in text:
                return text
        time.sleep(0.5)
    raise AssertionError("%r not on the console within %d s:\n%s" % (marker, timeout, text[-2000:]))


@pytest.mark.slow
def test_guest_sees_disks_and_config_drive(boot_host):
    from ansible_collections.nimbus.compute.plugins.module_utils._domain import lifecycle, xml_builder

    host = boot_host
    os.unlink(host.base)
    qemu_img.convert(os.path.join(GUEST, "root.qcow2"), "qcow2", host.base, "raw")  # image_cache's job
    os.chmod(host.base, 0o644)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copy(os.path.join(GUEST, name), os.path.join(paths.base_dir(host.path), name))
    host.claim()
    result = host.ensure(name="boot test", user_data="#!/bin/sh\necho nimbus-test: user-data ran\n")
    xml_builder.write_domain_xml({
        "instance_uuid": host.uuid, "instances_path": host.path, "libvirt_uri": URI, "virt_type": "qemu",
        "flavor": FLAVOR, "image": {"id": "image-1", "properties": {"os_command_line": "console=ttyS0 panic=-1 nimbus.poweroff"}},
        "disks": result["domain_disks"], "kernel": os.path.join(paths.base_dir(host.path), "vmlinuz"),
        "ramdisk": os.path.join(paths.base_dir(host.path), "initrd.img"),
    })
    lifecycle.run({"uuid": host.uuid, "instances_path": host.path, "libvirt_uri": URI, "state": "running",
                   "start_timeout": 60})
    console = wait_for_console(os.path.join(host.dir, "console.log"), "nimbus-guest: config-drive uuid=")
    assert "nimbus-guest: up" in console
    assert "nimbus-guest: config-drive uuid=%s" % host.uuid in console
    assert "nimbus-guest: disk vda bytes=%d" % GIB in console
    assert "nimbus-guest: disk vdb bytes=%d" % GIB in console
    assert "nimbus-guest: disk vdc bytes=%d" % (32 * MIB) in console
    wait_for_console(os.path.join(host.dir, "console.log"), "nimbus-test: user-data ran", timeout=30)
    # Asked by its kernel command line (nimbus.poweroff), the guest powers itself off after "ready".
    wait_for_console(os.path.join(host.dir, "console.log"), "nimbus-guest: poweroff", timeout=60)
    deadline = time.monotonic() + 60
    while virsh("domstate", paths.domain_name(host.uuid)).stdout.strip() != "shut off":
        assert time.monotonic() < deadline, "the guest said poweroff but the domain is still running"
        time.sleep(0.5)
    assert pwd.getpwuid(os.stat(host.dir).st_uid).pw_name == qemu_owner().user
