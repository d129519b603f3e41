"""`make demo` end to end through ansible-playbook on the real lab: a TCG guest boots from the
embedded image, its console proves it ran, a second run changes nothing, delete leaves nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from labtools import virsh

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
INSTANCES = "/var/tmp/nimbus-test-demo/instances"
IMAGES_JSON = os.path.join(ROOT, ".cache", "guest", "images.json")


def playbook(name, *extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_STDOUT_CALLBACK="default")
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=" + os.path.join(VENV_BIN, "python"),
            "-e", "nimbus_demo_instances_path=" + INSTANCES, os.path.join(ROOT, "playbooks", name), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+).*failed=(\d+)", proc.stdout)
    return proc.stdout, int(recap.group(2))


def snapshot():
    """Everything under instances_path except the shared cache, plus libvirt's domain list."""
    found = []
    for top, dirs, files in os.walk(INSTANCES):
        rel = os.path.relpath(top, INSTANCES)
        if rel.split(os.sep)[0] == "_base":
            continue
        found += [os.path.normpath(os.path.join(rel, f)) for f in files if not f.startswith("image-")]
        found += [os.path.normpath(os.path.join(rel, d)) + "/" for d in dirs if d != "_base"]
    return sorted(found), sorted(virsh("list", "--all", "--name", check=False).stdout.split())


def test_demo_boots_is_idempotent_and_deletes_cleanly(lab, guest_images):
    uuid = None
    os.makedirs(INSTANCES, exist_ok=True)
    before = snapshot()
    try:
        started = time.monotonic()
        out, changed = playbook("demo.yml", "-e", "@" + IMAGES_JSON)
        first_run = time.monotonic() - started
        assert changed > 0
        uuid = re.search(r"server ([0-9a-f-]{36}) is running", out).group(1)
        inst = paths.instance_dir(INSTANCES, uuid)

        console = open(os.path.join(inst, "console.log"), encoding="utf-8", errors="replace").read()
        assert "nimbus-guest: up" in console
        assert "nimbus-guest: root-label NIMBUS-ROOT-DISK v1" in console, "root disk data came through _base"
        assert "nimbus-guest: config-drive uuid=%s" % uuid in console
        # m1.nano: 1 GiB root, 1 GiB ephemeral, 64 MiB swap, in Nova's order
        assert "nimbus-guest: disk vda bytes=1073741824" in console
        assert "nimbus-guest: disk vdb bytes=1073741824" in console
        assert "nimbus-guest: disk vdc bytes=67108864" in console

        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", os.path.join(inst, "disk")],
                                         capture_output=True, text=True, check=True).stdout)
        base = paths.base_path(INSTANCES, guest_images["nimbus_guest_image"]["id"])
        assert info["backing-filename"] == base
        assert info["backing-filename-format"] == "raw"
        assert os.path.exists(os.path.join(inst, "libvirt.xml"))
        # virt_type auto: TCG on a CPU without vmx/svm (LAB.md), kvm only where it can run.
        expected_type = lab["virt_type"]
        live_xml = virsh("dumpxml", paths.domain_name(uuid)).stdout
        assert "<domain type='%s'" % expected_type in live_xml
        # demo.yml's server_owner {project, user} reaches the metadata (it used to be an empty <nimbus:owner/>).
        assert "<nimbus:project>demo</nimbus:project>" in live_xml and "<nimbus:user>" in live_xml, live_xml
        assert virsh("domstate", paths.domain_name(uuid)).stdout.strip() == "running"
        assert oct(os.stat(inst).st_mode & 0o777) == "0o700"
        assert oct(os.stat(os.path.join(inst, "disk")).st_mode & 0o777) == "0o600"

        _unused, changed = playbook("demo.yml", "-e", "@" + IMAGES_JSON)
        assert changed == 0, "second make demo must report changed=0"
        print("demo first run %.1f s" % first_run)
    finally:
        playbook("demo_delete.yml")
    assert snapshot()[1] == before[1], "no domain left behind"
    # Host-level infrastructure (the locks dir, the host claim lock, image locks) may stay.
    assert [p for p in snapshot()[0] if p not in before[0] and p not in ("locks/", "locks/host.lock")] == []
    if uuid:
        assert not os.path.exists(paths.instance_dir(INSTANCES, uuid))
