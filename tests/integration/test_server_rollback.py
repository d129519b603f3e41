"""The `server` role's rescue on the real lab: make a step fail in turn (a broken qemu-img first on
PATH, libvirt unreachable, a read-only instances dir), check that nothing of the server is left
(no domain, no instance dir, no claim), that the failure names the step, and that the next run
with the fault gone builds the server."""

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


@pytest.fixture
def broken_qemu_img(tmp_path):
    return broken_tool(tmp_path, "qemu-img")


@pytest.mark.parametrize("fault", ["qemu-img", "libvirt", "read-only"])
def test_failed_step_rolls_back_and_rerun_builds(fault, guest_images, broken_qemu_img, tmp_path):
    uuid = {"qemu-img": "5b0c1e1e-0000-4000-8000-0000000000a1", "libvirt": "5b0c1e1e-0000-4000-8000-0000000000a2",
            "read-only": "5b0c1e1e-0000-4000-8000-0000000000a3"}[fault]
    os.makedirs(INSTANCES, exist_ok=True)
    # Cache the images first, so the fault hits the steps after image_cache.
    warm = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_state="defined"))
    assert warm.returncode == 0, warm.stdout[-3000:]
    assert delete(tmp_path, uuid).returncode == 0
    nothing_left(uuid)

    env, extra, expected_step = None, {}, None
    if fault == "qemu-img":
        env, expected_step = broken_qemu_img, "instance_disks"
    elif fault == "libvirt":
        extra, expected_step = {"server_libvirt_uri": "qemu:///system?socket=/nonexistent/libvirt-sock"}, "instance_claim"
    else:
        # Root ignores mode bits: a read-only bind mount makes instances_path really read-only.
        subprocess.run(["mount", "--bind", INSTANCES, INSTANCES], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", INSTANCES], check=True)
        expected_step = "instance_claim"
    try:
        failed = run_role(tmp_path, "server", server_vars(guest_images, uuid, **extra), extra_env=env)
    finally:
        if fault == "read-only":
            subprocess.run(["umount", INSTANCES], check=True)
    assert failed.returncode != 0
    assert "%s failed" % expected_step in failed.stdout or expected_step in failed.stdout, failed.stdout[-3000:]
    assert "Traceback" not in failed.stdout
    nothing_left(uuid)

    again = run_role(tmp_path, "server", server_vars(guest_images, uuid, server_state="defined"))
    assert again.returncode == 0, again.stdout[-3000:]
    assert virsh("domstate", paths.domain_name(uuid)).stdout.strip() == "shut off"
    assert delete(tmp_path, uuid).returncode == 0
    nothing_left(uuid)


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
    finally:
        assert delete(tmp_path, uuid).returncode == 0
    nothing_left(uuid)
