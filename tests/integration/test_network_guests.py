"""Booted guests on one flat network, built by the `server` role (ports plugged, domain started
paused, security groups applied, resumed). Each guest configures its IP from network_data.json on
its config drive; its user_data pings and prints the result on the serial console.

  A (group web)    -> B (group web, ICMP allowed from web)  : replies, until the rule is removed
  C (group other)  -> B                                      : dropped
  C                -> P (a namespace on the bridge, no SG)  : replies, so C's network itself works

Three TCG boots in all; the firewall-before-resume order is watched while B's role runs, and
deleting the three servers leaves the host's links, bridges and nft ruleset as they were.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid

import libvirt
import pytest
from labtools import LAB_URI, run_role, virsh

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._network.instance import ensure_present
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import parse_request

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INSTANCES = "/var/tmp/nimbus-test-netguests/instances"
# 128 MiB: the Debian kernel of the embedded guest does not boot in 64.
FLAVOR = {"name": "t.nano", "vcpus": 1, "memory_mb": 128, "root_gb": 1, "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}
NETWORK = {"name": "pingnet", "type": "flat", "cidr": "10.81.0.0/24", "gateway": "10.81.0.1"}
BRIDGE = "brqpingnet"
B_IP = "10.81.0.11"
PEER_IP = "10.81.0.2"  # the namespace P: plugged into the bridge by the test, behind no security group
SERVERS = {  # name: (server uuid, port uuid, ip, group)
    "b": ("7a000000-0000-4000-8000-00000000000b", "7b0000bb-0000-4000-8000-00000000000b", B_IP, "web"),
    "a": ("7a000000-0000-4000-8000-00000000000a", "7b0000aa-0000-4000-8000-00000000000a", "10.81.0.10", "web"),
    "c": ("7a000000-0000-4000-8000-00000000000c", "7b0000cc-0000-4000-8000-00000000000c", "10.81.0.12", "other"),
}
ICMP_FROM_WEB = {"direction": "ingress", "protocol": "icmp", "remote_group_id": "web"}
SECURITY_GROUPS = [
    {"name": "web", "members": ["10.81.0.10", B_IP], "rules": [ICMP_FROM_WEB, {"direction": "egress"}]},
    {"name": "other", "members": ["10.81.0.12"], "rules": [{"direction": "egress"}]},
]
# Retry until the target answers (it may still be booting), then report three pings.
REPORT = """for i in 1 2 3 4 5 6 7 8 9 10 11 12; do ping -c 1 -W 1 {ip} >/dev/null 2>&1 && break; done
echo "{label}: $(ping -c 3 -W 1 {ip} | grep 'packet loss')"
"""
# A then keeps pinging B once a second, straight to the console (not through user-data's pipe, so
# the guest still reaches ready): the test removes B's rule and watches the pings stop.
PING_A = "#!/bin/sh\n" + REPORT.format(ip=B_IP, label="b") + """(while :; do
  if ping -c 1 -W 1 %s >/dev/null 2>&1; then echo "nimbus-ping: ok"; else echo "nimbus-ping: lost"; fi; sleep 1
done) </dev/null >/dev/console 2>&1 &
""" % B_IP
PING_C = "#!/bin/sh\n" + REPORT.format(ip=PEER_IP, label="peer") + REPORT.format(ip=B_IP, label="b")


def server_vars(guest_images, name, user_data=""):
    uuid_, port_id, ip, group = SERVERS[name]
    return {"server_uuid": uuid_, "server_name": "ping-" + name, "server_flavor": FLAVOR,
            "server_image": guest_images["nimbus_guest_image"], "server_kernel_image": guest_images["nimbus_guest_kernel"],
            "server_ramdisk_image": guest_images["nimbus_guest_ramdisk"], "server_instances_path": INSTANCES,
            "server_reserved_host_memory_mb": 0, "server_user_data": user_data,
            "server_ports": [{"id": port_id, "network": "pingnet", "fixed_ips": [{"ip_address": ip}],
                              "security_groups": [group]}],
            "server_networks": [NETWORK], "server_security_groups": SECURITY_GROUPS}


def console(name):
    path = os.path.join(paths.instance_dir(INSTANCES, SERVERS[name][0]), "console.log")
    return open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""


def console_line(name, pattern, timeout=120, after=0):
    """The first match of ``pattern`` on the console past offset ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.compile(pattern).search(console(name), after)
        if found:
            return found.group(0)
        time.sleep(0.5)
    raise AssertionError("%s: no %r on the console within %d s:\n%s" % (name, pattern, timeout, console(name)[-2000:]))


def sh(*argv, check=True):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=check, timeout=30)


OURS = (BRIDGE, "tap7b0000", "nmbpeer", "nimbus-7a000000-")
# Other test runs share this host: their bridges, taps and tables come and go meanwhile.
OTHERS = re.compile(r"^(brq|tap|vnet|nmbpeer|nimbus-)")


def host_state():
    """What the servers may change on the host: every link (kind, master, alias, mtu), the bridges
    with their ports, and the nft ruleset - except other runs' nimbus links and tables."""

    def kept(name):
        return name.startswith(OURS) or not OTHERS.match(name or "")

    links = json.loads(sh("ip", "-j", "-d", "link", "show").stdout)
    summary = sorted((link["ifname"], (link.get("linkinfo") or {}).get("info_kind"), link.get("master"),
                      link.get("ifalias"), link.get("mtu")) for link in links if kept(link["ifname"]))
    bridges = {link[0]: sorted(other[0] for other in summary if other[2] == link[0]) for link in summary if link[1] == "bridge"}
    tables = {}
    for line in sh("nft", "list", "tables").stdout.splitlines():
        family, name = line.split()[1:3]
        if kept(name):
            tables[(family, name)] = sh("nft", "list", "table", family, name).stdout
    return summary, bridges, tables


class StateWatch(threading.Thread):
    """Samples (domain state, both nft tables present) every 50 ms while a role run starts the domain."""

    STATES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused"}

    def __init__(self, name):
        super().__init__(daemon=True)
        self.uuid = SERVERS[name][0]
        self.samples = []
        self.stop = threading.Event()

    def state(self, conn):
        try:
            return self.STATES.get(conn.lookupByUUIDString(self.uuid).state()[0], "other")
        except libvirt.libvirtError:
            return "none"

    def run(self):
        tables = {"table bridge nimbus-" + self.uuid, "table inet nimbus-" + self.uuid}
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # "Domain not found" before the define
        conn = libvirt.open(LAB_URI)
        try:
            while not self.stop.is_set():
                state = self.state(conn)
                present = tables <= set(sh("nft", "list", "tables").stdout.splitlines())
                self.samples.append((state, present))
                time.sleep(0.05)
        finally:
            conn.close()


def peer_namespace():
    """P: a namespace whose veth is plugged into the bridge (no tap of ours, no security group)."""
    name = "nimbus-test-peer-%s" % uuid.uuid4().hex[:6]
    veth = "nmbpeer" + name[-6:]
    sh("ip", "netns", "add", name)
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
    sh("ip", "link", "set", veth, "master", BRIDGE, "up")
    sh("ip", "-n", name, "addr", "add", PEER_IP + "/24", "dev", "eth0")
    sh("ip", "-n", name, "link", "set", "eth0", "up")
    return name


def test_security_group_lets_group_members_ping_and_drops_others(guest_images, tmp_path):
    os.makedirs(INSTANCES, exist_ok=True)
    before = host_state()
    peer = None
    try:
        watch = StateWatch("b")
        watch.start()
        try:
            proc = run_role(tmp_path, "server", server_vars(guest_images, "b"))
        finally:
            watch.stop.set()
            watch.join()
        assert proc.returncode == 0, proc.stdout[-4000:]
        states = [state for state, _present in watch.samples]
        assert "paused" in states and states[-1] == "running", watch.samples
        assert ("paused", True) in watch.samples, "the tables exist while the domain is still paused"
        assert ("running", False) not in watch.samples, "never running without its tables"
        assert states.index("paused") < states.index("running"), "started paused, resumed later"

        peer = peer_namespace()
        # C before A: C's pings to B run while A is built.
        for name, user_data in (("c", PING_C), ("a", PING_A)):
            proc = run_role(tmp_path, "server", server_vars(guest_images, name, user_data))
            assert proc.returncode == 0, proc.stdout[-4000:]
        for name in ("b", "a", "c"):
            ip = SERVERS[name][2]
            assert console_line(name, r"nimbus-guest: nic eth0 mac=\S+ ip=%s/24" % re.escape(ip))
        assert "0% packet loss" in console_line("a", r"nimbus-guest: user-data: b: .*packet loss")
        assert "0% packet loss" in console_line("c", r"nimbus-guest: user-data: peer: .*packet loss"), \
            "C's own network works (it reaches P, behind no group)"
        assert " 0% packet loss" not in console_line("c", r"nimbus-guest: user-data: b: .*packet loss"), \
            "C is not in group web: B's group drops it"
        assert "100% packet loss" in console_line("c", r"nimbus-guest: user-data: b: .*packet loss")

        # Removing the ICMP rule from B's group stops A's pings (new pings are new conntrack entries).
        console_line("a", r"nimbus-ping: ok")
        b_uuid, b_port, _ip, group = SERVERS["b"]
        groups = [dict(SECURITY_GROUPS[0], rules=[{"direction": "egress"}]), SECURITY_GROUPS[1]]
        port = {"id": b_port, "network": "pingnet", "fixed_ips": [B_IP], "security_groups": [group]}
        changed_at = len(console("a"))
        result = ensure_present(parse_request(b_uuid, [port], [NETWORK], groups), INSTANCES, scope="firewall")
        assert result["firewall"]["changed"] is True
        console_line("a", r"nimbus-ping: lost[\s\S]*nimbus-ping: lost", timeout=20, after=changed_at)
        assert "nimbus-ping: ok" not in console("a")[changed_at:].split("nimbus-ping: lost", 1)[1], \
            "once lost, no ping gets through any more"
    finally:
        if peer:
            sh("ip", "netns", "del", peer, check=False)  # takes its veth out of the bridge
        for name in ("a", "c", "b"):
            run_role(tmp_path, "server_delete", {"server_delete_uuid": SERVERS[name][0],
                                                 "server_delete_instances_path": INSTANCES})
    for name in SERVERS:
        assert paths.domain_name(SERVERS[name][0]) not in virsh("list", "--all", "--name").stdout.split()
        assert not os.path.exists(paths.instance_dir(INSTANCES, SERVERS[name][0]))
    after = host_state()
    assert after[1] == before[1], "bridges"
    assert after[0] == before[0], "ip link"
    assert after[2] == before[2], "nft list ruleset"
