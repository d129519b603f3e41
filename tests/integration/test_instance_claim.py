"""instance_claim for real: N+1 claims racing in separate processes for N slots, host totals from
the lab's libvirt, and the claim + disks steps through ansible-playbook (check mode, idempotence,
delete back to the state before)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid as uuidlib

import pytest
from labtools import domstate, unavailable

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._instance import claim

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".collections")
MODULE = os.path.join(ROOT, "plugins", "modules", "instance_claim.py")
URI = "qemu:///system"
FLAVOR = {"name": "m1.race", "vcpus": 1, "memory_mb": 256, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}


def module_process(tmp_path, args):
    """Start the module as Ansible does on a target: a separate Python reading its args file."""
    args_file = tmp_path / ("args-%s.json" % uuidlib.uuid4().hex)
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    return subprocess.Popen([sys.executable, MODULE, str(args_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)


def test_n_plus_one_parallel_claims_for_n_slots(tmp_path):
    slots = 4
    # memory is the binding resource: 4 x 256 MiB fit in 1536 - 512 reserved; a 5th does not.
    common = {"instances_path": str(tmp_path / "instances"), "flavor": FLAVOR, "total_memory_mb": 1536,
              "total_disk_gb": 1000, "total_vcpus": 64}
    procs = [module_process(tmp_path, dict(common, instance_uuid=str(uuidlib.uuid4()))) for _unused in range(slots + 1)]
    results = []
    for proc in procs:
        out, _unused = proc.communicate(timeout=120)
        results.append(json.loads(out))
    ok = [r for r in results if not r.get("failed")]
    refused = [r for r in results if r.get("failed")]
    assert len(ok) == slots and len(refused) == 1, results
    assert refused[0]["reschedule"] is True and "memory_mb: requested 256, free 0" in refused[0]["msg"]
    claimed = []
    for entry in os.scandir(common["instances_path"]):
        journal = os.path.join(entry.path, "instance.json")
        if os.path.exists(journal):
            claimed.append(json.load(open(journal))["steps"]["instance_claim"]["claim"]["memory_mb"])
    assert sum(claimed) == slots * 256, "no over-commit"


@pytest.fixture
def libvirt_up():
    if shutil.which("virsh") is None or subprocess.run(["virsh", "-c", URI, "version"], capture_output=True,
                                                       check=False).returncode != 0:
        unavailable("the lab's libvirtd does not answer on %s (bash tests/lab/start.sh)" % URI)


def test_host_totals_come_from_libvirt(tmp_path, libvirt_up):
    import libvirt

    conn = libvirt.openReadOnly(URI)
    try:
        info = conn.getInfo()
    finally:
        conn.close()
    totals = claim.host_totals(str(tmp_path), URI)
    assert (totals["memory_mb"], totals["vcpus"]) == (info[1], info[2])
    huge = dict(FLAVOR, memory_mb=info[1] * 2)
    with pytest.raises(claim.ClaimRefused):
        claim.claim(str(uuidlib.uuid4()), huge, str(tmp_path), libvirt_uri=URI,
                    ratios={"memory_mb": 1.0, "disk_mb": 1.0, "vcpus": 4.0},
                    reserved={"memory_mb": 512, "disk_mb": 0, "vcpus": 0})


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    common: &common
      instance_uuid: "{{ uuid }}"
      instances_path: "{{ instances_path }}"
  tasks:
    - name: claim
      nimbus.compute.instance_claim:
        <<: *common
        flavor: "{{ flavor }}"
        total_memory_mb: 4096
        total_disk_gb: 100
        total_vcpus: 4
      register: claim
    - name: disks
      nimbus.compute.instance_disks:
        <<: *common
        flavor: "{{ flavor }}"
        base_path: "{{ base_path }}"
        config_drive: true
        name: playbook test
        user_data: "#!/bin/sh\\necho hi\\n"
        ephemeral_format: ext4
      register: disks
    - name: results for the test
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ {'claim': claim, 'disks': disks} | to_json }}"
      check_mode: false
      changed_when: false
"""

DELETE = """
- hosts: localhost
  gather_facts: false
  tasks:
    - nimbus.compute.domain: {uuid: "{{ uuid }}", instances_path: "{{ instances_path }}", state: absent}
    - nimbus.compute.instance_disks: {instance_uuid: "{{ uuid }}", instances_path: "{{ instances_path }}", state: absent}
    - nimbus.compute.instance_claim: {instance_uuid: "{{ uuid }}", instances_path: "{{ instances_path }}", state: absent}
"""


def playbook(tmp_path, text, extra, *flags):
    book = tmp_path / ("play-%s.yml" % uuidlib.uuid4().hex[:6])
    book.write_text(text)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", json.dumps(extra), *flags, str(book)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recap = next(line for line in proc.stdout.splitlines() if line.startswith("localhost"))
    return proc.stdout, int(recap.split("changed=")[1].split()[0])


def tree(path):
    return sorted(os.path.relpath(os.path.join(top, n), path) for top, dirs, files in os.walk(path) for n in dirs + files)


@pytest.mark.slow
def test_playbook_check_mode_idempotence_and_delete(tmp_path):
    instances = tmp_path / "instances"
    (instances / "_base").mkdir(parents=True)
    base = instances / "_base" / "image"
    with open(base, "wb") as handle:
        handle.truncate(8 << 20)
    out = tmp_path / "result.json"
    extra = {"uuid": str(uuidlib.uuid4()), "instances_path": str(instances), "base_path": str(base), "out": str(out),
             "flavor": {"name": "m1", "vcpus": 1, "memory_mb": 128, "root_gb": 1, "ephemeral_gb": 1, "swap": 16}}
    before = tree(instances)
    stdout, changed = playbook(tmp_path, PLAYBOOK, extra, "--check", "--diff")
    assert changed == 2 and "+disk.config" in stdout
    assert tree(instances) == before, "check mode changes nothing"
    _unused, changed = playbook(tmp_path, PLAYBOOK, extra)
    assert changed == 2
    result = json.loads(out.read_text())
    assert [d["name"] for d in result["disks"]["domain_disks"]] == ["disk", "disk.local", "disk.swap", "disk.config"]
    assert result["claim"]["claim"]["disk_mb"] == 2 * 1024 + 16
    _unused, changed = playbook(tmp_path, PLAYBOOK, extra)
    assert changed == 0, "second run changes nothing"
    _unused, changed = playbook(tmp_path, DELETE, extra)
    assert changed == 2
    after = [p for p in tree(instances) if not p.startswith("locks")]
    assert after == before


PREPARE = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: claim and lay out the disks of the servers in one run
      nimbus.compute.instance_prepare:
        instances_path: "{{ instances_path }}"
        total_memory_mb: 1024
        total_disk_gb: 100
        total_vcpus: 4
        domain_state: "{{ domain_state | default(omit) }}"
        start_timeout: 30
        instances: >-
          {% set out = [] %}{% for u in uuids %}{% set _x = out.append({'instance_uuid': u, 'flavor': flavor,
          'base_path': base_path, 'config_drive': true, 'user_data': 'secret-user-data', 'name': 'prep',
          'domain': {'image': {'id': 'image', 'properties': properties}, 'kernel': kernel | default(none)}})
          %}{% endfor %}{{ out }}
      register: prepared
    - name: results for the test
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ prepared | to_json }}"
      check_mode: false
      changed_when: false
"""


@pytest.fixture
def prepare_host(tmp_path):
    instances = tmp_path / "instances"
    (instances / "_base").mkdir(parents=True)
    base = instances / "_base" / "image"
    with open(base, "wb") as handle:
        handle.truncate(8 << 20)
    # 1024 MiB with 512 kept for the host: two 256 MiB servers fit, the third is refused.
    return {"uuids": [str(uuidlib.uuid4()) for _unused in range(3)], "instances_path": str(instances),
            "base_path": str(base), "out": str(tmp_path / "prepared.json"), "flavor": dict(FLAVOR, ephemeral_gb=1),
            "properties": {}}


def test_prepare_claims_in_order_and_makes_the_disks_and_xml_of_those_that_fit(tmp_path, prepare_host, libvirt_up):
    instances = prepare_host["instances_path"]
    before = tree(instances)
    stdout, changed = playbook(tmp_path, PREPARE, prepare_host, "--check", "--diff")
    assert changed == 1 and stdout.count("+disk.config") == 2, "two servers would get disks"
    assert stdout.count("+<domain type=") == 2, "and their XML"
    assert tree(instances) == before, "check mode changes nothing"
    assert "secret-user-data" not in stdout
    _unused, changed = playbook(tmp_path, PREPARE, prepare_host)
    result = json.loads(open(prepare_host["out"]).read())
    first, second, third = prepare_host["uuids"]
    assert changed == 1 and result["failed_instances"] == [third]
    for uuid in (first, second):
        disk = os.path.join(instances, uuid, "disk")
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", disk], capture_output=True, text=True,
                                         check=True).stdout)
        assert info["backing-filename"] == prepare_host["base_path"] and info["virtual-size"] == 1 << 30
        assert sorted(os.listdir(os.path.join(instances, uuid))) == ["disk", "disk.config", "disk.local", "instance.json",
                                                                     "libvirt.xml"]
    # The XML is domain_xml's for these disks (the host probed once for both servers).
    xml = result["instances"][0]["xml"]
    assert xml["path"] == os.path.join(instances, first, "libvirt.xml") and open(xml["path"]).read() == xml["xml"]
    assert "<name>instance-%s</name>" % first in xml["xml"] and "%s/disk.config" % first in xml["xml"]
    assert xml["virt_type"] in ("kvm", "qemu") and xml["elapsed"] >= 0
    refused = result["instances"][2]
    assert refused["failed_step"] == "instance_claim" and refused["reschedule"] is True
    assert not os.path.exists(os.path.join(instances, third)), "nothing of the refused server"
    _unused, changed = playbook(tmp_path, PREPARE, prepare_host)
    assert changed == 0, "second run changes nothing"
    for uuid in (first, second):
        playbook(tmp_path, DELETE, dict(prepare_host, uuid=uuid))
    assert [p for p in tree(instances) if not p.startswith("locks")] == before


def test_prepare_releases_the_claim_when_the_disks_fail(tmp_path, prepare_host, monkeypatch, capsys):
    from moduletools import run_module

    from ansible_collections.nimbus.compute.plugins.modules import instance_prepare

    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "qemu-img").write_text("#!/bin/sh\necho 'qemu-img: broken for the test' >&2\nexit 1\n")
    (broken / "qemu-img").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (broken, os.environ["PATH"]))
    instances = prepare_host["instances_path"]
    before = tree(instances)
    servers = [{"instance_uuid": u, "flavor": prepare_host["flavor"], "base_path": prepare_host["base_path"]}
               for u in prepare_host["uuids"][:2]]
    result = run_module(instance_prepare, {"instances_path": instances, "total_memory_mb": 1024, "total_disk_gb": 100,
                                           "total_vcpus": 4, "instances": servers}, capsys)
    assert result["rc"] == 0 and result["failed_instances"] == prepare_host["uuids"][:2]
    for server in result["instances"]:
        assert server["failed_step"] == "instance_disks" and "broken for the test" in server["msg"]
        assert "rollback_failed" not in server
    # Both claims were made and released again: the second one fitted only because the first was released.
    assert [p for p in tree(instances) if not p.startswith("locks")] == before


def test_prepare_removes_the_disks_and_claim_when_the_xml_fails(tmp_path, prepare_host, libvirt_up):
    # A machine type this host's QEMU does not have: found by the host probe, after the claim and the disks.
    prepare_host["properties"] = {"hw_machine_type": "pc-nimbus-none"}
    fails_in_step_and_leaves_nothing(tmp_path, prepare_host, "domain_xml", "pc-nimbus-none")


def fails_in_step_and_leaves_nothing(tmp_path, host, step, words):
    """The prepare play where the two servers that fit fail in ``step``: nothing of any server stays."""
    instances = host["instances_path"]
    before = tree(instances)
    _unused, changed = playbook(tmp_path, PREPARE, host)
    result = json.loads(open(host["out"]).read())
    assert changed == 0 and len(result["failed_instances"]) == 3
    for server in result["instances"][:2]:
        assert server["failed_step"] == step and words in server["msg"], server
        assert "rollback_failed" not in server
    assert [p for p in tree(instances) if not p.startswith("locks")] == before


def domain_state(uuid):
    return domstate(paths.domain_name(uuid))


@pytest.fixture
def started(prepare_host):
    """Servers this test may start on the lab's libvirt, removed whatever the test does. Their files are
    under /var/tmp: QEMU runs as another user and cannot enter pytest's private tmp dir."""
    top = "/var/tmp/nimbus-test-prepare-%s" % uuidlib.uuid4().hex[:8]
    instances = os.path.join(top, "instances")
    shutil.copytree(prepare_host["instances_path"], instances)
    os.chmod(top, 0o755)
    prepare_host.update(instances_path=instances, base_path=os.path.join(instances, "_base", "image"))
    yield prepare_host
    for uuid in prepare_host["uuids"]:
        for command in ("destroy", "undefine"):
            subprocess.run(["virsh", "-c", URI, command, "instance-%s" % uuid], capture_output=True, check=False)
    shutil.rmtree(top, ignore_errors=True)


def test_prepare_defines_and_starts_the_domains_too(tmp_path, started, libvirt_up):
    started["domain_state"] = "running"
    instances = started["instances_path"]
    first, second, third = started["uuids"]
    before = tree(instances)
    stdout, changed = playbook(tmp_path, PREPARE, started, "--check", "--diff")
    assert changed == 1 and tree(instances) == before, "check mode changes nothing"
    # Each of the two servers that fit: its libvirt.xml and the domain definition it would get.
    assert stdout.count("+<domain type=") == 4, stdout
    assert {domain_state(u) for u in started["uuids"]} == {"absent"}
    _unused, changed = playbook(tmp_path, PREPARE, started)
    result = json.loads(open(started["out"]).read())
    assert changed == 1 and result["failed_instances"] == [third]
    for entry, uuid in zip(result["instances"][:2], (first, second), strict=True):
        assert entry["domain"]["state"] == "running" and entry["domain"]["defined"], entry["domain"]
        assert entry["domain"]["elapsed"] > 0
        assert domain_state(uuid) == "running"
    assert domain_state(third) == "absent" and not os.path.exists(os.path.join(instances, third))
    _unused, changed = playbook(tmp_path, PREPARE, started)
    assert changed == 0, "second run changes nothing"
    for uuid in (first, second):
        playbook(tmp_path, DELETE, dict(started, uuid=uuid))
        assert domain_state(uuid) == "absent"
    assert [p for p in tree(instances) if not p.startswith("locks")] == before


def test_prepare_removes_domain_disks_and_claim_when_a_start_fails(tmp_path, started, libvirt_up):
    # A kernel that is not there: the XML and the definition are fine, QEMU's start is not.
    started.update(domain_state="running", kernel=os.path.join(started["instances_path"], "_base", "no-such-kernel"))
    fails_in_step_and_leaves_nothing(tmp_path, started, "domain", "no-such-kernel")
    assert {domain_state(u) for u in started["uuids"]} == {"absent"}
