# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""hypervisor_info on the lab's real libvirt (qemu:///system), then the schedule lookup reading that fact
from the inventory group, all through one real ansible-playbook run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def virsh(*args):
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_facts_match_libvirt_and_feed_the_scheduler(lab, tmp_path):
    instances = tmp_path / "instances"
    instances.mkdir()
    out = tmp_path / "out.json"
    inventory = {"hypervisors": {"hosts": {"localhost": {"ansible_connection": "local",
                                                         "ansible_python_interpreter": sys.executable}}}}
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    play = [{"hosts": "hypervisors", "gather_facts": False, "tasks": [
        {"nimbus.compute.hypervisor_info": {"libvirt_uri": lab["uri"], "instances_path": str(instances),
                                            "reserved_host_memory_mb": 256, "availability_zone": "lab",
                                            "pci_device_spec": [{"vendor_id": "1af4"}]}},
        {"ansible.builtin.set_fact": {"placements": "{{ query('nimbus.compute.schedule', availability_zone='lab', "
                                                    "flavor={'vcpus': 1, 'memory_mb': 64, 'root_gb': 1}, count=2) }}"}},
        {"ansible.builtin.copy": {"content": "{{ {'fact': nimbus_hypervisor, 'placements': placements} | to_json }}",
                                  "dest": str(out)}},
    ]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
                           str(tmp_path / "inventory.json"), str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    fact = result["fact"]

    nodeinfo = dict(re.findall(r"^([^:]+):\s+(.*)$", virsh("nodeinfo"), re.M))
    assert fact["vcpus_total"] == int(nodeinfo["CPU(s)"])
    assert fact["total_usable_ram_mb"] == int(nodeinfo["Memory size"].split()[0]) // 1024
    assert fact["hypervisor_type"] == "QEMU"
    qemu = re.search(r"Running hypervisor: QEMU (\d+)\.(\d+)\.(\d+)", virsh("version"))
    assert fact["hypervisor_version"] == int(qemu[1]) * 1000000 + int(qemu[2]) * 1000 + int(qemu[3])
    assert any(arch == "x86_64" and mode == "hvm" for arch, _hv, mode in fact["supported_instances"])
    st = os.statvfs(instances)
    assert fact["total_usable_disk_gb"] == st.f_blocks * st.f_frsize // 1024**3
    assert 0 < fact["free_disk_mb"] <= fact["total_usable_disk_gb"] * 1024
    assert fact["free_ram_mb"] <= fact["total_usable_ram_mb"] - 256
    assert fact["availability_zone"] == "lab" and fact["service"]["disabled"] is False
    assert [p["host"] for p in result["placements"]] == ["localhost", "localhost"]
    virtio = [name for name in virsh("nodedev-list", "--cap", "pci").split()
              if "<vendor id='0x1af4'" in virsh("nodedev-dumpxml", name)]
    assert sum(pool["count"] for pool in fact["pci_stats"]) == len(virtio)
    assert all(pool["vendor_id"] == "1af4" for pool in fact["pci_stats"])
