"""The `server` role's rescue on the real lab: make a step fail in turn (a broken qemu-img first on
PATH, libvirt unreachable, a read-only instances dir, a failing virt-xml-validate, a domain libvirt
refuses to define, one QEMU cannot start), check that nothing of the server is left (no domain, no
instance dir, no claim), that the failure names the step exactly, and that the next run with the
fault gone builds the server. A failed re-run leaves the older server as it was; bad input fails
before any change."""

from __future__ import annotations

import os
import re
import stat
import subprocess

import pytest
from labtools import run_role, virsh

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INSTANCES = "/var/tmp/nimbus-test-rollback/instances"
FLAVOR = {"name": "t.nano", "vcpus": 1, "memory_mb": 64, "root_gb": 1, "ephemeral_gb": 0, "swap": 16, "extra_specs": {}}


def server_vars(guest_images, uuid, **extra):
    return {"server_uuid": uuid, "server_flavor": FLAVOR, "server_image": guest_images["nimbus_guest_image"],
            "server_kernel_image": guest_images["nimbus_guest_kernel"],
            "server_ramdisk_image": guest_images["nimbus_guest_ramdisk"],
            "server_instances_path": INSTANCES, "server_reserved_host_memory_mb": 0, **extra}


def delete(tmp_path, uuid):
    return run_role(tmp_path, "server_delete", {"server_delete_uuid": uuid, "server_delete_instances_path": INSTANCES})


def nothing_left(uuid):
    assert not os.path.exists(paths.instance_dir(INSTANCES, uuid)), "instance dir left behind"
    assert paths.domain_name(uuid) not in virsh("list", "--all", "--name").stdout.split(), "domain left behind"
    assert not os.path.exists(os.path.join(INSTANCES, "locks", uuid + ".lock"))


def failed_step(proc, uuid):
    """The step the role's final failure names ("server <uuid>: <step> failed: ...")."""
    found = re.search(r"server %s: (\S+) failed: " % re.escape(uuid), proc.stdout)
    assert found, proc.stdout[-3000:]
    return found.group(1)


def broken_tool(tmp_path, name):
    """An environment whose PATH finds a failing ``name`` first."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    script = fake / name
    script.write_text("#!/bin/sh\necho '%s: injected fault' >&2\nexit 1\n" % name)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": "%s:%s" % (fake, os.environ["PATH"])}


@pytest.fixture(scope="module")
def warm_cache(guest_images, tmp_path_factory):
    """Cache the images once, so the faults hit the steps after image_cache."""
    os.makedirs(INSTANCES, exist_ok=True)
    uuid, tmp = "5b0c1e1e-0000-4000-8000-0000000000a0", tmp_path_factory.mktemp("warm")
    warm = run_role(tmp, "server", server_vars(guest_images, uuid, server_state="defined"))
    assert warm.returncode == 0, warm.stdout[-3000:]
    assert delete(tmp, uuid).returncode == 0
    nothing_left(uuid)


# fault -> (last uuid digit, step that must fail, extra role vars). "libvirt": the up-front check of the
# request is the first step that talks to libvirt. "define": libvirt refuses more vCPUs than the machine
# type takes (255) at define. A start that fails after the define (QEMU cannot allocate 2 TiB of RAM) is
# in test_failed_rerun_leaves_the_older_server_untouched, where only the failure's "defined" can tell
# the rescue that the domain is this run's.
FAULTS = {
    "qemu-img": ("1", "instance_disks", {}),
    "libvirt": ("2", "domain_xml", {"server_libvirt_uri": "qemu:///system?socket=/nonexistent/libvirt-sock"}),
    "read-only": ("3", "instance_claim", {}),
    "virt-xml-validate": ("4", "domain_xml", {}),
    "define": ("5", "domain", {"server_flavor": dict(FLAVOR, vcpus=300), "server_total_vcpus": 100}),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_failed_step_rolls_back_and_rerun_builds(fault, guest_images, warm_cache, tmp_path):
    digit, expected_step, extra = FAULTS[fault]
    uuid = "5b0c1e1e-0000-4000-8000-0000000000a" + digit
    env = broken_tool(tmp_path, fault) if fault in ("qemu-img", "virt-xml-validate") else None
    if fault == "read-only":
        # Root ignores mode bits: a read-only bind mount makes instances_path really read-only.
        subprocess.run(["mount", "--bind", INSTANCES, INSTANCES], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", INSTANCES], check=True)
    try:
        failed = run_role(tmp_path, "server", server_vars(guest_images, uuid, **extra), extra_env=env)
    finally:
        if fault == "read-only":
            subprocess.run(["umount", INSTANCES], check=True)
    assert failed.returncode != 0
    assert failed_step(failed, uuid) == expected_step, failed.stdout[-3000:]
    assert "Traceback" not in failed.stdout
    nothing_left(uuid)

    again = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_state="defined"))
    assert again.returncode == 0, again.stdout[-3000:]
    assert virsh("domstate", paths.domain_name(uuid)).stdout.strip() == "shut off"
    assert delete(tmp_path, uuid).returncode == 0
    nothing_left(uuid)


def listing():
    """Every file and dir under instances_path (the image cache included), but image_cache's per-image
    locks: host-level, like locks/host.lock, they stay (test_demo allows them too)."""
    found = []
    for top, dirs, files in os.walk(INSTANCES):
        found += [os.path.relpath(os.path.join(top, name), INSTANCES) for name in dirs + files]
    return sorted(p for p in found if not re.match(r"locks/image-[0-9a-f]{40}\.lock$", p))


@pytest.fixture(scope="module")
def too_big_image(tmp_path_factory):
    """A qcow2 image of 2 GiB virtual size (a few hundred KiB on disk)."""
    path = tmp_path_factory.mktemp("images") / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "2G"], check=True)
    return {"id": "nimbus-test-rollback-2g", "src": "file://%s" % path, "disk_format": "qcow2", "properties": {}}


@pytest.mark.parametrize("case", ["uuid", "ram-0", "bus", "root-smaller-than-image"])
def test_bad_input_fails_and_leaves_nothing(case, guest_images, warm_cache, too_big_image, tmp_path):
    """Everything but the image's size is refused by the check before the claim; the size is known once
    image_cache has read the image, after the claim, which the rescue then releases."""
    uuid = "not-a-uuid" if case == "uuid" else "5b0c1e1e-0000-4000-8000-0000000000c1"
    bus = dict(guest_images["nimbus_guest_image"])
    bus["properties"] = dict(bus["properties"], hw_disk_bus="floppy")
    expected_step, extra = {
        "uuid": ("domain_xml", {}),
        "ram-0": ("domain_xml", {"server_flavor": dict(FLAVOR, memory_mb=0)}),
        "bus": ("domain_xml", {"server_image": bus}),
        "root-smaller-than-image": ("image_cache", {"server_image": too_big_image}),
    }[case]
    before = listing()
    failed = run_role(tmp_path, "server", server_vars(guest_images, uuid, **extra))
    assert failed.returncode != 0 and "Traceback" not in failed.stdout
    assert failed_step(failed, uuid) == expected_step, failed.stdout[-3000:]
    assert listing() == before, "bad input left something under instances_path"
    assert "instance-" + uuid not in virsh("list", "--all", "--name").stdout.split()
    if expected_step == "domain_xml":
        assert "Claim resources on this host" not in failed.stdout, "refused before the claim, not rolled back"


def server_state(uuid):
    """What must survive a failed re-run: the domain's definition, the instance dir's files, the root disk."""
    inst = paths.instance_dir(INSTANCES, uuid)
    disk = os.stat(os.path.join(inst, "disk"))
    return {"domain": virsh("dumpxml", "--inactive", paths.domain_name(uuid)).stdout,
            "files": sorted(os.listdir(inst)), "disk": (disk.st_ino, disk.st_size, disk.st_mtime_ns)}


def test_failed_rerun_leaves_the_older_server_untouched(guest_images, tmp_path):
    """A re-run is not this server's creation: its rescue removes only what the re-run made. A resize the
    disks refuse (the claim changed, so its changed=true once meant "all of it is ours") and a re-run that
    rebuilt disk.config before a later step failed both used to destroy the domain and delete the disks."""
    uuid = "5b0c1e1e-0000-4000-8000-0000000000b1"
    os.makedirs(INSTANCES, exist_ok=True)
    built = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_state="defined"))
    assert built.returncode == 0, built.stdout[-3000:]
    try:
        before = server_state(uuid)
        resized = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_state="defined",
                                                           server_flavor=dict(FLAVOR, root_gb=2)))
        assert resized.returncode != 0 and failed_step(resized, uuid) == "instance_disks"
        assert "will not be overwritten" in resized.stdout and "Traceback" not in resized.stdout
        assert server_state(uuid) == before, "the resize's rollback touched the older server"

        # disk.config is rebuilt (new metadata), then domain_xml fails: only this run's work may go.
        rebuilt = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_state="defined",
                                                           server_meta_data={"meta": {"role": "rerun"}}),
                           extra_env=broken_tool(tmp_path, "virt-xml-validate"))
        assert rebuilt.returncode != 0 and failed_step(rebuilt, uuid) == "domain_xml", rebuilt.stdout[-3000:]
        assert server_state(uuid) == before, "the rollback removed older disks or the domain"

        # Only the domain is gone (as after domain state=absent, which keeps the files); a re-run defines it
        # again and its start fails (2 TiB of RAM): that domain is this run's and goes, the claim and disks stay.
        virsh("undefine", paths.domain_name(uuid))
        restarted = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_flavor=dict(FLAVOR, memory_mb=2 << 20),
                                                             server_total_memory_mb=4 << 20))
        assert restarted.returncode != 0 and failed_step(restarted, uuid) == "domain", restarted.stdout[-3000:]
        assert "Remove the domain this run defined" in restarted.stdout
        assert paths.domain_name(uuid) not in virsh("list", "--all", "--name").stdout.split(), "the run's domain stayed"
        disk = os.stat(os.path.join(paths.instance_dir(INSTANCES, uuid), "disk"))
        assert (disk.st_ino, disk.st_size, disk.st_mtime_ns) == before["disk"], "the older root disk was touched"

        again = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_state="defined"))
        assert again.returncode == 0, again.stdout[-3000:]
        assert server_state(uuid)["disk"] == before["disk"], "the re-run kept the older root disk"
        assert virsh("domstate", paths.domain_name(uuid)).stdout.strip() == "shut off"
    finally:
        assert delete(tmp_path, uuid).returncode == 0
    nothing_left(uuid)


def test_images_the_caller_cached_are_not_checked_again(guest_images, warm_cache, tmp_path):
    """server_cached_images ({image id: base path}, what create_server.yml's image play records) skips the
    role's image_cache steps: with sources image_cache refuses (ftp), the build fails at image_cache
    without the map and succeeds with it, from the given base paths."""
    uuid = "5b0c1e1e-0000-4000-8000-0000000000a9"
    records = {key: dict(guest_images[key], src="ftp://images.invalid/" + guest_images[key]["id"])
               for key in ("nimbus_guest_image", "nimbus_guest_kernel", "nimbus_guest_ramdisk")}
    unfetchable = {"server_image": records["nimbus_guest_image"], "server_kernel_image": records["nimbus_guest_kernel"],
                   "server_ramdisk_image": records["nimbus_guest_ramdisk"], "server_state": "defined"}
    refused = run_role(tmp_path, "server", server_vars(guest_images, uuid, **unfetchable))
    assert refused.returncode != 0 and failed_step(refused, uuid) == "image_cache"
    nothing_left(uuid)

    cached = {rec["id"]: paths.base_path(INSTANCES, rec["id"]) for rec in records.values()}
    built = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_cached_images=cached, **unfetchable))
    try:
        assert built.returncode == 0, built.stdout[-3000:]
        xml = virsh("dumpxml", "--inactive", paths.domain_name(uuid)).stdout
        assert "<kernel>%s</kernel>" % cached[records["nimbus_guest_kernel"]["id"]] in xml
        assert "<initrd>%s</initrd>" % cached[records["nimbus_guest_ramdisk"]["id"]] in xml
        disk = os.path.join(paths.instance_dir(INSTANCES, uuid), "disk")
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", disk], capture_output=True, text=True, check=True)
        assert '"backing-filename": "%s"' % cached[records["nimbus_guest_image"]["id"]] in info.stdout
    finally:
        assert delete(tmp_path, uuid).returncode == 0
    nothing_left(uuid)
