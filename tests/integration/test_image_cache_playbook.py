"""The modules and the cleanup role through ansible-playbook, as a user runs them: fetch a qcow2,
run again unchanged, check mode, a refused image failing with its rule, then the cleanup
playbook keeping the in-use base and removing the old unused one; and the cleanup playbook against
the lab inventory, cleaning each hypervisor's own instances_path without privilege escalation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths

sys.path.insert(0, os.path.dirname(__file__))
import image_corpus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab"))
import fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")

PLAY = """
- name: Image cache as a user runs it
  hosts: localhost
  gather_facts: false
  vars:
    image: &image
      src: "file://{qcow2}"
      image_id: played-image
      disk_format: qcow2
      instances_path: "{instances}"
      max_virtual_size_gb: 1
  tasks:
    - name: Fetch
      nimbus.compute.image_cache: *image
      register: first
    - name: Fetch again
      nimbus.compute.image_cache: *image
      register: second
    - name: Check mode on a new image
      nimbus.compute.image_cache:
        src: "file://{qcow2}"
        image_id: other-image
        disk_format: qcow2
        instances_path: "{instances}"
      check_mode: true
      register: checked
    - name: A hostile image
      nimbus.compute.image_cache:
        src: "file://{qcow2}"
        image_id: liar
        disk_format: raw
        instances_path: "{instances}"
      register: refused
      ignore_errors: true
    - name: The server role's image steps, file sources allowed only in another directory
      block:
        - name: Cache through the role
          ansible.builtin.include_role:
            name: nimbus.compute.server
            tasks_from: images.yml
          vars:
            server_image: {{id: outside-image, src: "file://{qcow2}", disk_format: qcow2}}
            server_flavor: {{root_gb: 1}}
            server_instances_path: "{instances}"
            server_image_file_dirs: ["{allowed}"]
      rescue:
        - name: Keep the role's failure
          ansible.builtin.set_fact:
            outside: "{{{{ ansible_failed_result }}}}"
    - name: Results
      ansible.builtin.copy:
        content: "{{{{ dict(first=first, second=second, checked=checked, refused=refused, outside=outside) | to_json }}}}"
        dest: "{out}"
        mode: "0600"
"""


# Become as root to root is skipped unless allowed: allowing it makes a become: true play try sudo,
# which this machine does not have, so a run that passes did not escalate.
BECOME_SHOWS = {"ANSIBLE_BECOME_ALLOW_SAME_USER": "True"}


def playbook(*args, cwd, inventory=("-i", "localhost,", "-c", "local"), expect_rc=0, **env_extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""), **env_extra)
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), *inventory,
                           "-e", "ansible_python_interpreter=" + os.path.join(VENV_BIN, "python"), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=cwd, check=False)
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_modules_and_cleanup_role_through_ansible(tmp_path):
    raw, qcow2 = str(tmp_path / "disk.raw"), str(tmp_path / "disk.qcow2")
    with open(raw, "wb") as handle:
        handle.write(os.urandom(1 << 20))
    image_corpus.qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    instances, out = str(tmp_path / "instances"), str(tmp_path / "out.json")
    allowed = str(tmp_path / "images")
    os.mkdir(allowed)
    (tmp_path / "play.yml").write_text(PLAY.format(qcow2=qcow2, instances=instances, out=out, allowed=allowed))
    playbook(str(tmp_path / "play.yml"), cwd=str(tmp_path))
    with open(out) as handle:
        results = json.load(handle)
    base = paths.base_path(instances, "played-image")
    assert results["first"]["changed"] is True and results["first"]["base_path"] == base
    assert results["first"]["detected_format"] == "qcow2" and results["first"]["virtual_size"] == 1 << 20
    assert results["second"]["changed"] is False
    assert results["checked"]["changed"] is True
    assert results["refused"]["failed"] is True and results["refused"]["rule"] == "format-mismatch"
    # server_image_file_dirs reaches image_cache: the qcow2 is not in the allowed directory, so nothing is cached.
    assert results["outside"]["failed"] is True and "outside file_src_dirs" in results["outside"]["msg"]
    assert not os.path.exists(paths.base_path(instances, "outside-image"))
    assert sorted(os.listdir(paths.base_dir(instances))) == [os.path.basename(base)]

    # Cleanup: the played image is in use by an instance; an old unused one goes; a fresh one stays.
    instance = os.path.join(instances, "44444444-4444-4444-4444-444444444444")
    os.makedirs(instance)
    image_corpus.qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", os.path.join(instance, "disk"), "2M")
    unused_old, unused_fresh = paths.base_path(instances, "old"), paths.base_path(instances, "fresh")
    for path in (unused_old, unused_fresh):
        with open(path, "wb") as handle:
            handle.write(b"x" * 512)
    two_days_ago = time.time() - 2 * 86400
    for path in (unused_old, base):
        os.utime(path, (two_days_ago, two_days_ago))
    cleanup = [os.path.join(ROOT, "playbooks", "cache_cleanup.yml"), "-e", "cache_cleanup_hosts=localhost",
               "-e", "image_cache_cleanup_instances_path=" + instances, "-e", "cache_cleanup_become=false"]
    checked = playbook(*cleanup, "--check", cwd=str(tmp_path))
    assert "removed 1," in checked and os.path.exists(unused_old)
    played = playbook(*cleanup, cwd=str(tmp_path))
    assert "removed 1, in use 1, too young 1" in played
    assert sorted(os.listdir(paths.base_dir(instances))) == sorted(os.path.basename(p) for p in (base, unused_fresh))


def test_cache_cleanup_playbook_on_the_lab_inventory(tmp_path):
    """Each hypervisor's cache is the _base under its own nimbus_instances_path (copies of the lab
    inventory pointing at temporary directories, so the lab's warm caches stay), and the lab
    inventory's cache_cleanup_become: false keeps the play from escalating."""
    overrides, kept, gone = {}, [], []
    two_days_ago = time.time() - 2 * 86400
    for host in fleet.hypervisors():
        instances = str(tmp_path / host / "instances")
        os.makedirs(paths.base_dir(instances))
        old, fresh = paths.base_path(instances, "old-" + host), paths.base_path(instances, "fresh-" + host)
        for path in (old, fresh):
            with open(path, "wb") as handle:
                handle.write(b"x" * 512)
        os.utime(old, (two_days_ago, two_days_ago))
        overrides[host] = {"nimbus_instances_path": instances}
        kept.append(fresh)
        gone.append(old)
    inventory = ("-i", fleet.write_inventory(str(tmp_path / "hosts.yml"), overrides))
    cleanup = os.path.join(ROOT, "playbooks", "cache_cleanup.yml")
    out = playbook(cleanup, cwd=str(tmp_path), inventory=inventory, **BECOME_SHOWS)
    assert out.count("removed 1, in use 0, too young 1") == 3, out[-3000:]
    assert not any(os.path.exists(p) for p in gone) and all(os.path.exists(p) for p in kept)
    # Without the variable the play becomes root, as an operator expects for SSH hosts (sudo here;
    # check mode, so a machine that has sudo still keeps its real cache).
    out = playbook(cleanup, "-e", "cache_cleanup_hosts=localhost", "--check", cwd=str(tmp_path), expect_rc=2,
                   **BECOME_SHOWS)
    assert "sudo" in out
