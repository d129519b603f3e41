# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The lab fleet: several emulated hypervisors on this machine, each with its own libvirtd.

Two privileged libvirtd's would fight over /run/libvirt and /var/lib/libvirt, so each extra daemon
(and its virtlogd) runs in its own mount namespace where per-hypervisor directories are
bind-mounted over libvirt's run, state, cache, config and log directories. From outside it is
reached at ``qemu:///system?socket=<lab_dir>/run/libvirt-sock``. No systemd needed.

The hosts come from ``tests/lab/inventory/hosts.yml`` (group ``hypervisors``, ``nimbus_lab_dir``).

    python tests/lab/fleet.py start        # idempotent: starts only daemons not answering
    python tests/lab/fleet.py stop         # destroys lab domains, stops the daemons
    python tests/lab/fleet.py clean        # destroys + undefines lab domains, empties instances_path
    python tests/lab/fleet.py status       # JSON: host -> uri, answering, domains
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
INVENTORY = os.path.join(HERE, "inventory", "hosts.yml")
SUBREAPER = os.path.join(HERE, "subreaper.py")
# Directories of the system daemon that each lab daemon gets its own copy of.
MOUNTS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
}


def hypervisors(inventory=INVENTORY):
    """{host: {lab_dir, uri, instances_path}} for the ``hypervisors`` group of the lab inventory."""
    with open(inventory, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    group = data["all"]["children"]["hypervisors"]
    hosts = {}
    for name, hostvars in group["hosts"].items():
        merged = dict(group.get("vars", {}), **hostvars)
        hosts[name] = {
            "lab_dir": merged["nimbus_lab_dir"],
            "uri": merged["nimbus_libvirt_uri"],
            "instances_path": merged["nimbus_instances_path"],
        }
    return hosts


def write_inventory(path, overrides=None, inventory=INVENTORY):
    """A copy of the lab inventory with per-host variables replaced ({host: {var: value}})."""
    with open(inventory, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    hosts = data["all"]["children"]["hypervisors"]["hosts"]
    for name, values in (overrides or {}).items():
        hosts[name].update(values)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return path


def virsh(uri, *args, timeout=30, check=True):
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True,
                          timeout=timeout, check=check)


def answering(uri):
    try:
        return virsh(uri, "version", timeout=10, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _prepare(lab_dir):
    """Per-hypervisor copies of libvirt's directories: config without any domain, empty state."""
    for sub in MOUNTS:
        os.makedirs(os.path.join(lab_dir, sub), exist_ok=True)
    etc = os.path.join(lab_dir, "etc")
    if not os.path.exists(os.path.join(etc, "libvirtd.conf")):
        # Copy the daemon configuration but no persistent domain or autostarted network.
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if d.rstrip("/").endswith("/qemu")
                                                 and (n.endswith(".xml") or n == "autostart")])
        shutil.rmtree(os.path.join(etc, "qemu", "networks", "autostart"), ignore_errors=True)
    cache = os.path.join(lab_dir, "cache", "qemu", "capabilities")
    if not os.path.isdir(cache) and os.path.isdir("/var/cache/libvirt/qemu/capabilities"):
        # The system daemon's QEMU probe results save each lab daemon a full probe at start.
        shutil.copytree("/var/cache/libvirt/qemu/capabilities", cache)
    for sub in ("qemu", "qemu/ram", "qemu/nvram", "qemu/save", "qemu/dump", "qemu/snapshot", "qemu/checkpoint",
                "qemu/channel", "qemu/channel/target", "images", "boot"):
        os.makedirs(os.path.join(lab_dir, "lib", sub), exist_ok=True)
    os.makedirs(os.path.join(lab_dir, "log", "qemu"), exist_ok=True)


def _pid(path):
    try:
        with open(path, encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start_one(host):
    lab_dir, uri = host["lab_dir"], host["uri"]
    if answering(uri):
        return False
    _prepare(lab_dir)
    os.makedirs(host["instances_path"], mode=0o755, exist_ok=True)
    for daemon in ("libvirtd", "virtlogd"):
        pid = _pid(os.path.join(lab_dir, daemon + ".pid"))
        if pid:
            os.kill(pid, signal.SIGTERM)
    for stale in ("libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock", "virtlogd-sock", "virtlogd-admin-sock"):
        try:
            os.unlink(os.path.join(lab_dir, "run", stale))
        except FileNotFoundError:
            pass
    binds = " && ".join("mount --bind %s %s" % (os.path.join(lab_dir, sub), target) for sub, target in MOUNTS.items())
    script = "%s && virtlogd -d -p %s/virtlogd.pid && libvirtd -d -p %s/libvirtd.pid" % (binds, lab_dir, lab_dir)
    # Under a subreaper, so each destroy returns as soon as QEMU exits (tests/lab/subreaper.py).
    subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, SUBREAPER, "sh", "-c", script],
                   check=True, timeout=60)
    deadline = time.monotonic() + 60
    while not answering(uri):
        if time.monotonic() > deadline:
            raise RuntimeError("lab libvirtd for %s did not answer on %s" % (lab_dir, uri))
        time.sleep(0.2)
    return True


def domains_of(uri):
    out = virsh(uri, "list", "--all", "--name", check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def clean_one(host):
    """Removes every domain of the lab daemon and everything in instances_path but _base."""
    removed = []
    if answering(host["uri"]):
        for name in domains_of(host["uri"]):
            virsh(host["uri"], "destroy", name, check=False)
            virsh(host["uri"], "undefine", name, "--nvram", check=False)
            removed.append(name)
    path = host["instances_path"]
    removed += _remove_recorded_links(os.path.join(path, "network.json"))
    if os.path.isdir(path):
        for entry in os.listdir(path):
            if entry == "_base":
                continue
            full = os.path.join(path, entry)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
            removed.append(full)
    return removed


def _remove_recorded_links(registry_path):
    """Bridges/VLAN links instance_network recorded as its own: wiping network.json alone would
    orphan them (the lab's hypervisors share the host's network namespace)."""
    try:
        with open(registry_path, encoding="utf-8") as handle:
            links = json.load(handle).get("links") or {}
    except (OSError, ValueError):
        return []
    removed = []
    for name in links:
        if subprocess.run(["ip", "link", "del", name], capture_output=True, check=False).returncode == 0:
            removed.append("link:" + name)
    return removed


def stop_one(host):
    if answering(host["uri"]):
        for name in domains_of(host["uri"]):
            virsh(host["uri"], "destroy", name, check=False)
    stopped = False
    for daemon in ("libvirtd", "virtlogd"):
        pid = _pid(os.path.join(host["lab_dir"], daemon + ".pid"))
        if pid:
            os.kill(pid, signal.SIGTERM)
            stopped = True
    return stopped


def status(hosts):
    report = {}
    for name, host in hosts.items():
        up = answering(host["uri"])
        report[name] = dict(host, answering=up, domains=domains_of(host["uri"]) if up else [])
    return report


# Helpers for the fleet integration tests and the benchmark.

TINY = {"name": "f1.tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 1, "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}


def env(**extra):
    variables = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
                     ANSIBLE_FORCE_COLOR="0", ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_FORKS="10",
                     ANSIBLE_HOST_KEY_CHECKING="False")
    variables.update(extra)
    return variables


def prepared():
    """Generator for a test fixture: the lab daemons answering and empty, emptied again afterwards."""
    hosts = hypervisors()
    for host in hosts.values():
        start_one(host)
        clean_one(host)
    yield hosts
    for host in hosts.values():
        clean_one(host)


def request(images, name, count=1, **extra):
    req = {"name": name, "count": count, "flavor": dict(TINY), "image": images["nimbus_guest_image"],
           "kernel_image": images["nimbus_guest_kernel"], "ramdisk_image": images["nimbus_guest_ramdisk"]}
    req.update(extra)
    return req


def playbook_argv(name, inventory, req, summary=None, *extra):
    # "create_server.yml" is the file in playbooks/, "nimbus.compute.create_server" the collection's playbook.
    playbook = os.path.join(ROOT, "playbooks", name) if name.endswith(".yml") else name
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, playbook,
            "-e", json.dumps({"nimbus_request": req})]
    if summary:
        argv += ["-e", "nimbus_summary_path=%s" % summary]
    return argv + list(extra)


def run_playbook(name, inventory, req, tmp_path, *extra, expect_rc=0, timeout=600, forks=10):
    """Runs a playbook; returns (process, summary dict or None)."""
    summary = os.path.join(str(tmp_path), "summary-%s-%d.json" % (req["name"], time.monotonic_ns()))
    proc = subprocess.run(playbook_argv(name, inventory, req, summary, *extra), capture_output=True, text=True,
                          env=env(ANSIBLE_FORKS=str(forks)), timeout=timeout, check=False)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, proc.stdout[-6000:] + proc.stderr[-3000:]
    data = None
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as handle:
            data = json.load(handle)
    return proc, data


def by_name(summary):
    return {s["name"]: s for s in summary["servers"]}


def host_domains(host):
    return set(domains_of(hypervisors()[host]["uri"]))


def domain_state(host, uuid):
    out = virsh(hypervisors()[host]["uri"], "domstate", "instance-" + uuid, check=False)
    return out.stdout.strip()


def instance_dirs(host):
    path = hypervisors()[host]["instances_path"]
    if not os.path.isdir(path):
        return set()
    return {e for e in os.listdir(path) if len(e) == 36 and e.count("-") == 4}


def audit(host):
    """host_audit's report through the library (same code as the module)."""
    from ansible_collections.nimbus.compute.plugins.module_utils._audit.orphans import audit as run_audit

    hv = hypervisors()[host]
    return run_audit(hv["instances_path"], hv["uri"])


def snapshot():
    """Per host: the domains and everything under instances_path except the image cache and lock files."""
    state = {}
    for host, hv in hypervisors().items():
        files = []
        for top, dirs, names in os.walk(hv["instances_path"]):
            rel = os.path.relpath(top, hv["instances_path"])
            if rel.split(os.sep)[0] in ("_base", "locks"):
                continue
            files += [os.path.normpath(os.path.join(rel, n)) for n in names if n != "network.json"]
            files += [os.path.normpath(os.path.join(rel, d)) + "/" for d in dirs if d not in ("_base", "locks")]
        state[host] = (sorted(files), sorted(host_domains(host)))
    return state


def inventory(tmp_path, overrides=None):
    return write_inventory(os.path.join(str(tmp_path), "hosts.yml"), overrides)


def lab_hostvars(host, inventory_path=INVENTORY):
    with open(inventory_path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    group = data["all"]["children"]["hypervisors"]
    return dict(group.get("vars", {}), **group["hosts"][host])


def main(argv):
    action = argv[1] if len(argv) > 1 else "status"
    hosts = hypervisors()
    if action == "start":
        started = [name for name, host in hosts.items() if start_one(host)]
        print("nimbus fleet: %d hypervisors answering (started: %s)" % (len(hosts), ", ".join(started) or "none"))
    elif action == "stop":
        print("nimbus fleet: stopped %s" % ", ".join(n for n, h in hosts.items() if stop_one(h)))
    elif action == "clean":
        print(json.dumps({name: clean_one(host) for name, host in hosts.items()}, indent=2))
    elif action == "status":
        print(json.dumps(status(hosts), indent=2))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
