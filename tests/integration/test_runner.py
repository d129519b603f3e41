"""The engine AWX uses: create_server and delete_server through ansible-runner with the lab
inventory, asserting on runner's artifacts (status, rc, events, stdout); and the documented ad-hoc
commands (hypervisor_info on the group, domain lifecycle on one host) through runner and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import fleet

ansible_runner = pytest.importorskip("ansible_runner", reason="ansible-runner is not installed in .venv")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab_fleet(lab):
    # Runner looks for ansible-playbook / ansible on PATH, as in an execution environment.
    patch = pytest.MonkeyPatch()
    patch.setenv("PATH", fleet.VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    yield from fleet.prepared()
    patch.undo()


COLLECT_TASK = "Collect the summaries (a build host that stopped without one counts as failed)"


def runner_env():
    return {"ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".collections"), "ANSIBLE_FORKS": "10",
            "ANSIBLE_NOCOLOR": "1"}


def run(tmp_path, name, **kwargs):
    private = tmp_path / name
    private.mkdir()
    result = ansible_runner.run(private_data_dir=str(private), inventory=fleet.INVENTORY, envvars=runner_env(),
                                quiet=True, timeout=600, **kwargs)
    return result, private


def ok_events(result, task):
    return [e["event_data"] for e in result.events
            if e.get("event") == "runner_on_ok" and e.get("event_data", {}).get("task") == task]


def test_create_and_delete_playbooks_through_runner(lab_fleet, guest_images, tmp_path):
    req = fleet.request(guest_images, "runner", count=2, state="defined")
    created, private = run(tmp_path, "create", playbook=os.path.join(ROOT, "playbooks", "create_server.yml"),
                           extravars={"nimbus_request": req})
    assert created.status == "successful" and created.rc == 0, created.stdout.read()[-4000:]
    # Runner's artifacts: the job's events and stdout on disk, as AWX stores them.
    artifacts = private / "artifacts" / created.config.ident
    assert (artifacts / "status").read_text() == "successful" and (artifacts / "rc").read_text() == "0"
    assert len(list((artifacts / "job_events").glob("*.json"))) == len(list(created.events))
    stats = created.stats
    assert set(stats["ok"]) >= {"hv1", "hv2", "hv3", "localhost"} and not stats["failures"]
    builds = [h for h in stats["ok"] if h.startswith("nimbus-server-")]
    assert len(builds) == 2
    [servers] = [e["res"]["ansible_facts"]["nimbus_servers"] for e in ok_events(created, COLLECT_TASK)]
    assert sorted(s["name"] for s in servers) == ["runner-1", "runner-2"]
    for server in servers:
        assert not server["failed"] and fleet.domain_state(server["host"], server["uuid"]) == "shut off"
    assert "runner-1" in created.stdout.read()

    deleted, _private = run(tmp_path, "delete", playbook=os.path.join(ROOT, "playbooks", "delete_server.yml"),
                            extravars={"nimbus_request": {"name": "runner", "count": 2}})
    assert deleted.status == "successful" and deleted.rc == 0
    assert len([h for h in deleted.stats["changed"] if h.startswith("nimbus-delete-")]) == 2
    for host in lab_fleet:
        assert fleet.host_domains(host) == set() and fleet.instance_dirs(host) == set()


def test_adhoc_hypervisor_info_through_runner(lab_fleet, tmp_path):
    result, _private = run(tmp_path, "adhoc", host_pattern="hypervisors", module="nimbus.compute.hypervisor_info",
                           module_args="libvirt_uri={{ nimbus_libvirt_uri }} instances_path={{ nimbus_instances_path }}"
                                       " reserved_host_memory_mb={{ nimbus_reserved_host_memory_mb }}")
    assert result.status == "successful"
    facts = {e["event_data"]["host"]: e["event_data"]["res"]["ansible_facts"]["nimbus_hypervisor"]
             for e in result.events if e.get("event") == "runner_on_ok"}
    assert set(facts) == {"hv1", "hv2", "hv3"}
    assert facts["hv1"]["free_ram_mb"] != facts["hv3"]["free_ram_mb"]  # reserved differs per host


def adhoc(pattern, module, args):
    argv = [os.path.join(fleet.VENV_BIN, "ansible"), pattern, "-i", fleet.INVENTORY, "-m", module, "-a", args]
    proc = subprocess.run([*argv, "-o"], capture_output=True, text=True, env=fleet.env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout.split("=>", 1)[1])


def test_adhoc_domain_lifecycle_with_the_cli(lab_fleet, guest_images, tmp_path):
    req = fleet.request(guest_images, "adhoc")
    _proc, summary = fleet.run_playbook("create_server.yml", fleet.INVENTORY, req, tmp_path)
    [server] = summary["servers"]
    host, uuid = server["host"], server["uuid"]
    conn = "libvirt_uri={{ nimbus_libvirt_uri }} instances_path={{ nimbus_instances_path }}"
    try:
        stopped = adhoc(host, "nimbus.compute.domain", "uuid=%s state=shutdown shutdown_timeout=60 %s" % (uuid, conn))
        assert stopped["changed"] and fleet.domain_state(host, uuid) == "shut off"
        # Just started, the guest misses the first ACPI press while it boots; a later one powers it off.
        assert stopped["forced"] is False, stopped
        started = adhoc(host, "nimbus.compute.domain", "uuid=%s state=running %s" % (uuid, conn))
        assert started["changed"] and fleet.domain_state(host, uuid) == "running"
        again = adhoc(host, "nimbus.compute.domain", "uuid=%s state=running %s" % (uuid, conn))
        assert again["changed"] is False
    finally:
        fleet.run_playbook("delete_server.yml", fleet.INVENTORY, req, tmp_path)
    assert fleet.host_domains(host) == set()
