"""The roles on their own: molecule scenarios (delegated driver against the lab hypervisors:
converge, idempotence, verify), argument specs that stop bad variables before anything runs, and the
network_data.json the server role writes for the guest from its ports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MOLECULE = os.path.join(fleet.VENV_BIN, "molecule")


@pytest.fixture(scope="module")
def lab_fleet(lab, guest_images):
    yield from fleet.prepared()


@pytest.mark.skipif(not os.path.exists(MOLECULE), reason="molecule is not installed in .venv")
@pytest.mark.parametrize("role", ["hypervisor", "image_cache_cleanup", "server", "server_delete"])
def test_molecule_scenario(lab_fleet, role):
    env = fleet.env(PATH=fleet.VENV_BIN + os.pathsep + os.environ["PATH"], PY_COLORS="0")
    proc = subprocess.run([MOLECULE, "test"], cwd=os.path.join(ROOT, "roles", role), capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    for action in ("converge", "idempotence", "verify"):
        assert re.search(r"%s\W+Executed: Successful" % action, out), action


def role_play(tmp_path, role, role_vars):
    play = [{"name": "Apply " + role, "hosts": "hv1", "gather_facts": False,
             "tasks": [{"ansible.builtin.include_role": {"name": "nimbus.compute." + role}, "vars": role_vars}]}]
    path = tmp_path / "play.yml"
    path.write_text(json.dumps(play))
    return subprocess.run([os.path.join(fleet.VENV_BIN, "ansible-playbook"), "-i", fleet.INVENTORY, str(path)],
                          capture_output=True, text=True, env=fleet.env(), timeout=600, check=False)


@pytest.mark.parametrize("role_vars, words", [
    ({"server_flavor": {}, "server_image": {}}, "server_uuid"),
    ({"server_uuid": "x", "server_flavor": {}, "server_image": {},
      "server_state": "exploded"}, "server_state"),
    ({"server_uuid": "x", "server_flavor": "m1.tiny", "server_image": {}}, "server_flavor"),
])
def test_server_role_rejects_bad_variables_before_anything_runs(lab_fleet, tmp_path, role_vars, words):
    before = fleet.snapshot()
    proc = role_play(tmp_path, "server", role_vars)
    assert proc.returncode == 2 and "Validating arguments against arg spec" in proc.stdout
    assert words in proc.stdout and "Claim resources" not in proc.stdout
    assert fleet.snapshot() == before


@pytest.mark.parametrize("role, role_vars, words, first_task", [
    ("server_delete", {"server_delete_libvirt_uri": "qemu:///system"}, "server_delete_uuid", "Destroy and undefine"),
    ("server_delete", {"server_delete_uuid": "x", "server_delete_shutdown_timeout": "soon"},
     "server_delete_shutdown_timeout", "Destroy and undefine"),
    ("image_cache_cleanup", {"image_cache_cleanup_min_age": "a day"}, "image_cache_cleanup_min_age",
     "Remove unused base images"),
    ("image_cache_cleanup", {"image_cache_cleanup_part_min_age": {"hours": 1}}, "image_cache_cleanup_part_min_age",
     "Remove unused base images"),
])
def test_delete_and_cleanup_roles_reject_bad_variables_before_anything_runs(
        lab_fleet, tmp_path, role, role_vars, words, first_task):
    before = fleet.snapshot()
    proc = role_play(tmp_path, role, role_vars)
    assert proc.returncode == 2 and "Validating arguments against arg spec" in proc.stdout
    assert words in proc.stdout and first_task not in proc.stdout, proc.stdout[-3000:]
    assert fleet.snapshot() == before


def test_hypervisor_role_rejects_a_bridge_without_name(lab_fleet, tmp_path):
    proc = role_play(tmp_path, "hypervisor", {"hypervisor_bridges": [{"mtu": 1400}],
                                              "hypervisor_install_packages": False})
    assert proc.returncode == 2 and "name" in proc.stdout and "Install libvirt" not in proc.stdout


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso reads the config drive")
def test_config_drive_network_data_from_the_ports(lab_fleet, guest_images, tmp_path):
    hv = fleet.lab_hostvars("hv1")
    uuid = "5e1f0c1e-6a41-4c3e-9d51-0c8e5b9a7a10"
    port = {"id": "9b2f3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d", "network": "netdata", "fixed_ips": [{"ip_address": "10.79.3.7"}],
            "port_security_enabled": False}
    role_vars = {
        "server_uuid": uuid, "server_state": "defined", "server_flavor": fleet.TINY,
        "server_image": guest_images["nimbus_guest_image"],
        "server_kernel_image": guest_images["nimbus_guest_kernel"],
        "server_ramdisk_image": guest_images["nimbus_guest_ramdisk"],
        "server_libvirt_uri": hv["nimbus_libvirt_uri"], "server_instances_path": hv["nimbus_instances_path"],
        "server_total_memory_mb": hv["nimbus_total_memory_mb"],
        "server_reserved_host_memory_mb": hv["nimbus_reserved_host_memory_mb"],
        "server_ports": [port],
        "server_networks": [{"name": "netdata", "type": "flat", "cidr": "10.79.0.0/20", "gateway": "10.79.0.1",
                             "mtu": 1400}],
    }
    proc = role_play(tmp_path, "server", role_vars)
    try:
        assert proc.returncode == 0, proc.stdout[-4000:]
        drive = os.path.join(hv["nimbus_instances_path"], uuid, "disk.config")
        out = tmp_path / "network_data.json"
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", drive, "-extract",
                        "/openstack/latest/network_data.json", str(out)], check=True, capture_output=True)
        data = json.loads(out.read_text())
        xml = fleet.virsh(hv["nimbus_libvirt_uri"], "dumpxml", "instance-" + uuid).stdout
        [link] = data["links"]
        assert link["ethernet_mac_address"] in xml and link["vif_id"] == port["id"] and link["mtu"] == 1400
        [network] = data["networks"]
        assert network == {"id": "network0", "type": "ipv4", "link": link["id"], "ip_address": "10.79.3.7",
                           "netmask": "255.255.240.0", "network_id": "netdata",
                           "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.79.0.1"}]}
    finally:
        role_play(tmp_path, "server_delete", {"server_delete_uuid": uuid,
                                              "server_delete_libvirt_uri": hv["nimbus_libvirt_uri"],
                                              "server_delete_instances_path": hv["nimbus_instances_path"]})
    assert uuid not in fleet.instance_dirs("hv1")


def test_module_defaults_groups_set_uri_and_path_once(lab_fleet, tmp_path):
    marker = os.path.join(lab_fleet["hv2"]["instances_path"], "0e0e0e0e-0000-4000-8000-0000000000aa")
    os.makedirs(marker)
    play = [{"name": "module_defaults", "hosts": "hypervisors", "gather_facts": False,
             "module_defaults": {"group/nimbus.compute.libvirt": {"libvirt_uri": "{{ nimbus_libvirt_uri }}"},
                                 "group/nimbus.compute.instances": {"instances_path": "{{ nimbus_instances_path }}"}},
             "tasks": [{"nimbus.compute.hypervisor_info": {}},
                       {"nimbus.compute.host_audit": {}, "register": "audit"},
                       {"ansible.builtin.debug": {"msg": "AUDIT {{ inventory_hostname }} {{ audit.dirs_without_domain"
                                                         " | map(attribute='uuid') | list | to_json }}"}}]}]
    path = tmp_path / "defaults.yml"
    path.write_text(json.dumps(play))
    try:
        proc = subprocess.run([os.path.join(fleet.VENV_BIN, "ansible-playbook"), "-i", fleet.INVENTORY, str(path)],
                              capture_output=True, text=True, env=fleet.env(), timeout=300, check=False)
    finally:
        os.rmdir(marker)
    assert proc.returncode == 0, proc.stdout[-3000:]
    found = dict(re.findall(r'"AUDIT (hv\d) (\[.*?\])"', proc.stdout))
    assert {h: json.loads(v.replace('\\"', '"')) for h, v in found.items()} == {
        "hv1": [], "hv2": ["0e0e0e0e-0000-4000-8000-0000000000aa"], "hv3": []}
