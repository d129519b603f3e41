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
INVENTORY = os.path.join(HERE, "inventory", "hosts.yml")
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
    subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while not answering(uri):
        if time.monotonic() > deadline:
            raise RuntimeError("lab libvirtd for %s did not answer on %s" % (lab_dir, uri))
        time.sleep(0.2)
    return True


def domains(uri):
    out = virsh(uri, "list", "--all", "--name", check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def clean_one(host):
    """Removes every domain of the lab daemon and everything in instances_path but _base."""
    removed = []
    if answering(host["uri"]):
        for name in domains(host["uri"]):
            virsh(host["uri"], "destroy", name, check=False)
            virsh(host["uri"], "undefine", name, "--nvram", check=False)
            removed.append(name)
    path = host["instances_path"]
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


def stop_one(host):
    if answering(host["uri"]):
        for name in domains(host["uri"]):
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
        report[name] = dict(host, answering=up, domains=domains(host["uri"]) if up else [])
    return report


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
