"""The `server` role's rescue on the real lab: make a step fail in turn (a broken qemu-img first on
PATH, libvirt unreachable, a read-only instances dir), check that nothing of the server is left
(no domain, no instance dir, no claim), that the failure names the step, and that the next run
with the fault gone builds the server."""

from __future__ import annotations

import os
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


@pytest.fixture
def broken_qemu_img(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "qemu-img"
    script.write_text("#!/bin/sh\necho 'qemu-img: injected fault' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": "%s:%s" % (fake, os.environ["PATH"])}


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
