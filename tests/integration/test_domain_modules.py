"""The domain_xml and domain modules through ansible-playbook on the real lab: a second run is
changed=0, check mode changes nothing, bad input fails with a message (no traceback)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid as uuidlib

import pytest
from labtools import unavailable

from ansible_collections.nimbus.compute.plugins.module_utils._disk import qemu_img

pytestmark = [pytest.mark.integration, pytest.mark.slow]
URI = "qemu:///system"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - block:
        - name: domain XML
          nimbus.compute.domain_xml:
            instance_uuid: "{{ uuid }}"
            instances_path: "{{ instances_path }}"
            name: modules test
            virt_type: qemu
            flavor: {name: tiny, vcpus: 1, memory_mb: "{{ memory_mb }}", root_gb: 0}
            disks: [{name: disk, path: "{{ instances_path }}/{{ uuid }}/disk", format: qcow2, device: disk}]
          register: xml
        - name: domain
          nimbus.compute.domain:
            uuid: "{{ uuid }}"
            instances_path: "{{ instances_path }}"
            xml: "{{ xml.xml }}"
            state: "{{ state }}"
            shutdown_timeout: 2
          register: dom
      always:
        - name: keep the results for the test
          ansible.builtin.copy:
            content: "{{ {'domain XML': xml | default({}), 'domain': dom | default({})} | to_json }}"
            dest: "{{ results_file }}"
            mode: "0600"
          changed_when: false
          check_mode: false
"""


def virsh(*args):
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def env(tmp_path):
    if shutil.which("virsh") is None or virsh("version").returncode != 0:
        unavailable("the lab's libvirtd does not answer on %s" % URI)
    uuid = str(uuidlib.uuid4())
    instances_path = "/var/tmp/nimbus-domain-modules-%s" % uuid[:8]
    os.makedirs(os.path.join(instances_path, uuid), mode=0o755)
    os.chmod(instances_path, 0o755)
    qemu_img.create(os.path.join(instances_path, uuid, "disk"), 32 << 20, fmt="qcow2")
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    try:
        yield {"uuid": uuid, "instances_path": instances_path, "playbook": str(playbook)}
    finally:
        virsh("destroy", "instance-" + uuid)
        virsh("undefine", "instance-" + uuid, "--nvram")
        shutil.rmtree(instances_path, ignore_errors=True)


def play(env, *extra, memory_mb=64, state="running"):
    results_file = env["playbook"] + ".json"
    variables = {"uuid": env["uuid"], "instances_path": env["instances_path"], "memory_mb": memory_mb, "state": state,
                 "results_file": results_file}
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
           "ansible_python_interpreter=" + sys.executable, "-e", json.dumps(variables), *extra, env["playbook"]]
    run_env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env, check=False)
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", proc.stdout)
    if recap is None or not os.path.exists(results_file):
        raise AssertionError("ansible-playbook did not run:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:]))
    with open(results_file) as handle:
        results = json.load(handle)
    os.unlink(results_file)
    return proc.returncode, int(recap.group(1)), results, proc.stdout + proc.stderr


def test_second_run_is_unchanged_and_check_mode_changes_nothing(env):
    libvirt_xml = os.path.join(env["instances_path"], env["uuid"], "libvirt.xml")
    rc, changed, results, _unused = play(env, "--check")
    assert rc == 0 and changed == 2 and results["domain"]["actions"] == ["define", "start"]
    assert virsh("domstate", "instance-" + env["uuid"]).returncode != 0, "check mode defined nothing"
    assert not os.path.exists(libvirt_xml)

    rc, changed, results, _unused = play(env)
    assert rc == 0 and changed == 2 and results["domain"]["actions"] == ["define", "start"]
    assert virsh("domstate", "instance-" + env["uuid"]).stdout.strip() == "running"
    rc, changed, _unused1, _unused2 = play(env)
    assert rc == 0 and changed == 0

    rc, changed, results, stdout = play(env, "--diff", memory_mb=96)
    assert rc == 0 and changed == 2 and results["domain"]["pending_restart"]
    assert "98304" in results["domain"]["diff"]["after"] and "65536" in results["domain"]["diff"]["before"]
    assert "next boot" in stdout, "the pending restart is reported as a warning"

    rc, changed, results, _unused = play(env, state="absent")
    assert rc == 0 and results["domain"]["actions"] == ["destroy", "undefine"]
    assert virsh("domstate", "instance-" + env["uuid"]).returncode != 0


def test_bad_input_fails_before_any_change_without_traceback(env):
    rc, _unused, results, stdout = play(env, memory_mb=0)
    result = results["domain XML"]
    assert rc != 0 and result["failed"] and result["failed_step"] == "domain_xml"
    assert "memory_mb is 0, must be at least 16 MiB" in result["msg"] and "Traceback" not in stdout
    assert not os.path.exists(os.path.join(env["instances_path"], env["uuid"], "libvirt.xml"))
