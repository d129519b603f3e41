# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The schedule lookup through real ansible-playbook runs: query(...) with hosts=, from inventory facts, and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.engine import Scheduler
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.request_spec import RequestSpec

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
HOSTS = [
    {"hostname": "small", "total_usable_ram_mb": 8192, "total_usable_disk_gb": 100, "vcpus_total": 8},
    {"hostname": "big", "total_usable_ram_mb": 16384, "total_usable_disk_gb": 100, "vcpus_total": 8},
    {"hostname": "down", "total_usable_ram_mb": 65536, "total_usable_disk_gb": 900, "vcpus_total": 64,
     "service": {"disabled": True}},
]
FLAVOR = {"name": "m1.medium", "vcpus": 2, "memory_mb": 4096, "root_gb": 10}
UUIDS = ["0000000%d-0000-4000-8000-000000000000" % i for i in range(3)]


def playbook(tmp_path, tasks, inventory="localhost,", extra_vars=None):
    """Run a play on localhost; every task writes its result to out.json through the `out` variable."""
    out = tmp_path / "out.json"
    play = [{"hosts": "localhost", "gather_facts": False, "vars": {"hv": HOSTS, "flavor": FLAVOR, "uuids": UUIDS},
             "tasks": [*tasks, {"ansible.builtin.copy": {"content": "{{ out | to_json }}", "dest": str(out)}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory, "-c", "local",
           "-e", "ansible_python_interpreter=" + sys.executable, str(tmp_path / "play.yml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_query_with_hosts_places_servers_like_the_engine(tmp_path):
    query = "query('nimbus.compute.schedule', hosts=hv, flavor=flavor, count=3, instance_uuids=uuids, seed=4, explain=true)"
    out = playbook(tmp_path, [{"ansible.builtin.set_fact": {"out": "{{ %s }}" % query}}])
    assert [p["instance_uuid"] for p in out] == UUIDS
    expected = Scheduler(seed=4).schedule(HOSTS, RequestSpec(FLAVOR, count=3, instance_uuids=UUIDS))
    assert [p["host"] for p in out] == [p["host"] for p in expected]
    assert out[0]["host"] == "big"  # most free RAM, CPU and disk
    assert "down" not in {p["host"] for p in out}
    first = out[0]["explain"]
    assert {"filter": "ComputeFilter", "label": "compute service filter", "hosts_in": 3, "removed": 1} in first["filters"]
    assert first["weighed"][0]["host"] == "big" and first["weighed"][0]["weighers"]["RAMWeigher"] == 1.0


def test_query_reads_nimbus_hypervisor_facts_of_the_inventory_group(tmp_path):
    inventory = {"hypervisors": {"hosts": {"hv1": {"nimbus_hypervisor": HOSTS[0]}, "hv2": {"nimbus_hypervisor": HOSTS[1]}}},
                 "all": {"hosts": {"localhost": {}}}}
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    out = playbook(tmp_path, [{"ansible.builtin.set_fact": {
        "out": "{{ query('nimbus.compute.schedule', flavor=flavor, count=2, max_attempts=2) }}"}}],
        inventory=str(tmp_path / "inventory.json"))
    assert [p["host"] for p in out] == ["hv2", "hv1"]  # inventory names; hv2 is bigger, then hv1 is emptier
    assert all(p["alternates"] == [] for p in out)  # both hosts were selected: no alternate left


ERRORS = {
    "no_host": "flavor={'vcpus': 1, 'memory_mb': 131072}",
    "negative_ram": "flavor={'vcpus': 1, 'memory_mb': -1}",
    "unknown_filter": "flavor=flavor, filters=['RamFilter', 'NoSuchFilter']",
    "bad_jmespath": "flavor=flavor, rules=['free_ram_mb >= ']",
    "unknown_hint": "flavor=flavor, hints={'colour': 'blue'}",
}


def test_lookup_errors_are_clear(tmp_path):
    tasks = []
    for name, args in ERRORS.items():
        query = "query('nimbus.compute.schedule', hosts=hv, %s)" % args
        task = {"name": name, "ansible.builtin.set_fact": {"x": "{{ %s }}" % query}}
        tasks.append(dict(task, register=name, ignore_errors=True))
    tasks.append({"ansible.builtin.set_fact": {"out": {name: "{{ %s.msg }}" % name for name in ERRORS}}})
    out = playbook(tmp_path, tasks)
    assert "No valid host: RAM filter (RamFilter) removed 3 of 3 hosts" in out["no_host"]
    assert "flavor memory_mb must be >= 16" in out["negative_ram"]
    assert "unknown filter NoSuchFilter" in out["unknown_filter"]
    assert "bad JMESPath rule 'free_ram_mb >= '" in out["bad_jmespath"]
    assert "unknown hint(s) colour" in out["unknown_hint"]
