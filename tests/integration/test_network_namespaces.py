# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""instance_network for real, without guests: a "hypervisor" network namespace with the
bridges and nft tables, and one namespace per "guest" whose eth0 is the peer of a veth named
like the port's tap (what libvirt does for ``type='bridge'``). Traffic stays inside them."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
from labtools import unavailable

from ansible_collections.nimbus.compute.plugins.module_utils._network import instance
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import UnsupportedError
from ansible_collections.nimbus.compute.plugins.module_utils._network.instance import ensure_absent, ensure_present
from ansible_collections.nimbus.compute.plugins.module_utils._network.links import Links, Registry
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import parse_request

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"), reason="needs root, ip and nft"),
]

NET = {"name": "private", "type": "flat", "cidr": "10.77.0.0/24", "gateway": "10.77.0.1"}
WEB = {
    "name": "web",
    "rules": [
        {"direction": "ingress", "protocol": "icmp", "remote_group_id": "web"},
        {"direction": "egress"},
    ],
    # The controller lists the group's addresses on other servers; C (10.77.0.12) is not in it.
    "members": ["10.77.0.10", "10.77.0.11", "10.77.0.20", "10.77.0.21", "10.77.0.50"],
}
OTHER = {"name": "other", "rules": [{"direction": "egress"}]}
# ICMP from anywhere: a spoofed source passes the group, so only anti-spoofing can drop it.
OPEN = {"name": "open", "rules": [{"direction": "ingress", "protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0"},
                                  {"direction": "egress"}]}


def sh(*argv, check=True):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=check, timeout=30)


class Lab:
    """A hypervisor namespace and guest namespaces; ``close`` removes all of them."""

    def __init__(self, tmp_path):
        self.prefix = "nimbus-test-%s" % uuid.uuid4().hex[:6]
        self.host = self.prefix + "-h"
        self.instances_path = str(tmp_path)
        self.namespaces = []
        self.add_ns(self.host)
        sh("ip", "-n", self.host, "link", "set", "lo", "up")

    def add_ns(self, name):
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)

    def close(self):
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)

    def guest(self, letter, port, ip):
        """A guest namespace wired to the port's bridge, as libvirt would plug its tap."""
        name = "%s-%s" % (self.prefix, letter)
        self.add_ns(name)
        tap, bridge = port["target_dev"], port["source_bridge"]
        sh("ip", "-n", self.host, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "-n", self.host, "link", "set", tap, "master", bridge, "up")
        sh("ip", "-n", name, "link", "set", "eth0", "address", port["mac"], "up")
        sh("ip", "-n", name, "addr", "add", "%s/24" % ip, "dev", "eth0")
        return name

    def unplug(self, port):
        sh("ip", "-n", self.host, "link", "del", port["target_dev"], check=False)

    def ping(self, src, ip):
        return sh("ip", "netns", "exec", src, "busybox", "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0

    def snapshot(self):
        links = sh("ip", "-n", self.host, "-d", "link", "show").stdout
        rules = sh("ip", "netns", "exec", self.host, "nft", "list", "ruleset").stdout
        return links, rules

    def ruleset(self):
        return sh("ip", "netns", "exec", self.host, "nft", "list", "ruleset").stdout

    def echo_requests(self, guest):
        """ICMP echo requests the guest's kernel received (Icmp InEchos of its /proc/net/snmp)."""
        lines = [line.split() for line in sh("ip", "netns", "exec", guest, "cat", "/proc/net/snmp").stdout.splitlines()
                 if line.startswith("Icmp:")]
        return int(dict(zip(lines[0], lines[1], strict=True))["InEchos"])

    def neighbour(self, guest, ip):
        return sh("ip", "-n", guest, "neigh", "show", ip, "dev", "eth0").stdout.split()


@pytest.fixture
def netlab(tmp_path):
    if not shutil.which("busybox"):
        unavailable("busybox (for ping) is not installed")
    netlab = Lab(tmp_path)
    try:
        yield netlab
    finally:
        netlab.close()


def request(port_id, ip, groups, instance=None, pairs=None, sgs=(WEB, OTHER)):
    port = {"id": port_id, "network": "private", "fixed_ips": [ip], "security_groups": groups}
    if pairs:
        port["allowed_address_pairs"] = pairs
    return parse_request(instance or str(uuid.uuid4()), [port], [NET], list(sgs))


def server(netlab, letter, ip, groups, **kwargs):
    req = request(str(uuid.uuid4()), ip, groups, **kwargs)
    result = ensure_present(req, netlab.instances_path, netns=netlab.host)
    guest = netlab.guest(letter, result["domain_interfaces"][0], ip)
    return req, result, guest


def test_security_group_allows_group_members_and_drops_others(netlab):
    _unused1, _unused2, a = server(netlab, "a", "10.77.0.10", ["web"])
    b_req, _unused, b = server(netlab, "b", "10.77.0.11", ["web"])
    _unused1, _unused2, c = server(netlab, "c", "10.77.0.12", ["other"])
    assert netlab.ping(a, "10.77.0.11"), "A and B share group web, which allows ICMP from web"
    assert netlab.ping(b, "10.77.0.10")
    assert not netlab.ping(c, "10.77.0.11"), "C is not in group web"
    assert not netlab.ping(a, "10.77.0.12"), "group other allows no ingress"

    # Removing the ICMP rule from B's group stops A's pings too.
    no_icmp = dict(WEB, rules=[r for r in WEB["rules"] if r["direction"] == "egress"])
    port = b_req.ports[0]
    again = request(port.id, "10.77.0.11", ["web"], instance=b_req.instance_uuid, sgs=(no_icmp, OTHER))
    result = ensure_present(again, netlab.instances_path, netns=netlab.host, scope="firewall")
    assert result["firewall"]["changed"] is True
    assert not netlab.ping(a, "10.77.0.11")


def test_spoofed_ip_or_mac_gets_nothing_through(netlab):
    sgs = (WEB, OTHER, OPEN)
    _unused1, _unused2, a = server(netlab, "a", "10.77.0.20", ["web"], pairs=[{"ip_address": "10.77.0.50/32"}], sgs=sgs)
    _unused, b_result, b = server(netlab, "b", "10.77.0.21", ["open"], sgs=sgs)
    b_mac = b_result["domain_interfaces"][0]["mac"]
    assert netlab.ping(a, "10.77.0.21")

    def ping_from(ip, mac=None):
        """(ping answered, echo requests B received) with A sending from ``ip`` (and ``mac``). A knows
        B's MAC statically, so no ARP is needed: only the IP/MAC binding can stop the request."""
        sh("ip", "-n", a, "addr", "flush", "dev", "eth0")
        sh("ip", "-n", a, "addr", "add", "%s/24" % ip, "dev", "eth0")
        if mac:
            sh("ip", "-n", a, "link", "set", "eth0", "address", mac)
        sh("ip", "-n", a, "neigh", "replace", "10.77.0.21", "lladdr", b_mac, "dev", "eth0", "nud", "permanent")
        before = netlab.echo_requests(b)
        answered = netlab.ping(a, "10.77.0.21")
        return answered, netlab.echo_requests(b) - before

    assert ping_from("10.77.0.99") == (False, 0), "a source IP that is not the port's never reaches B"
    assert ping_from("10.77.0.50") == (True, 1), "an allowed address pair may be used"
    assert ping_from("10.77.0.20", mac="fa:16:3e:de:ad:01") == (False, 0), "a changed MAC never reaches B"


def test_arp_for_a_foreign_ip_is_dropped(netlab):
    if sh("busybox", "arping", check=False).stderr.find("Usage: arping") < 0:
        unavailable("busybox has no arping")
    _unused1, a_result, a = server(netlab, "a", "10.77.0.20", ["web"])
    _unused2, _unused3, b = server(netlab, "b", "10.77.0.21", ["web"])
    a_mac = a_result["domain_interfaces"][0]["mac"]
    # B holds stale entries for A's address and for a foreign one (10.77.0.23, nobody's port);
    # a gratuitous ARP reply ("<ip> is at <A's MAC>") would update either.
    for ip in ("10.77.0.20", "10.77.0.23"):
        sh("ip", "-n", b, "neigh", "replace", ip, "lladdr", "02:00:00:00:00:01", "dev", "eth0", "nud", "stale")

    sh("ip", "-n", a, "addr", "add", "10.77.0.23/24", "dev", "eth0")  # arping sends only from a local address

    def claim(ip):
        sent = sh("ip", "netns", "exec", a, "busybox", "arping", "-A", "-c", "1", "-w", "1", "-I", "eth0", "-s", ip, ip,
                  check=False)
        assert "Cannot assign" not in sent.stderr, sent.stderr
        return a_mac in netlab.neighbour(b, ip)

    assert claim("10.77.0.20"), "A may answer for its own address"
    assert not claim("10.77.0.23"), "an ARP reply for an address that is not A's is dropped"


def test_second_run_changes_nothing_and_absent_restores_the_host(netlab):
    before = netlab.snapshot()
    req = request(str(uuid.uuid4()), "10.77.0.30", ["web"])
    first = ensure_present(req, netlab.instances_path, netns=netlab.host)
    assert first["changed"] is True and first["created_links"] == ["brqprivate"]
    rules = netlab.ruleset()
    second = ensure_present(req, netlab.instances_path, netns=netlab.host)
    assert second["changed"] is False
    assert netlab.ruleset() == rules, "the ruleset is byte-identical after a second run"

    # A second server on the same network keeps the bridge alive when the first goes.
    other = request(str(uuid.uuid4()), "10.77.0.31", ["web"])
    ensure_present(other, netlab.instances_path, netns=netlab.host)
    gone = ensure_absent(req.instance_uuid, netlab.instances_path, netns=netlab.host)
    assert gone["removed_links"] == []
    assert "brqprivate" in sh("ip", "-n", netlab.host, "link", "show").stdout

    netlab.unplug(first["domain_interfaces"][0])  # libvirt removes a bridge tap when the domain stops
    ensure_absent(other.instance_uuid, netlab.instances_path, netns=netlab.host)
    assert netlab.snapshot() == before
    assert ensure_absent(other.instance_uuid, netlab.instances_path, netns=netlab.host)["changed"] is False


def test_bridge_not_created_by_us_is_never_removed(netlab):
    sh("ip", "-n", netlab.host, "link", "add", "br-mine", "type", "bridge")
    net = dict(NET, bridge="br-mine")
    req = parse_request(str(uuid.uuid4()), [{"id": str(uuid.uuid4()), "network": "private"}], [net], [])
    assert ensure_present(req, netlab.instances_path, netns=netlab.host)["created_links"] == []
    ensure_absent(req.instance_uuid, netlab.instances_path, netns=netlab.host)
    assert "br-mine" in sh("ip", "-n", netlab.host, "link", "show").stdout


def test_a_bridge_another_hypervisor_on_the_kernel_makes_meanwhile_is_used_and_left_to_it(netlab, monkeypatch):
    """Two instances_paths on one kernel (the fleet lab's hypervisors): B's build makes the bridge between A's
    plan and A's ``ip link add``. The real ``ip`` answers "File exists"; A plans again and uses B's bridge."""
    a_path, b_path = os.path.join(netlab.instances_path, "a"), os.path.join(netlab.instances_path, "b")
    a_req, b_req = request(str(uuid.uuid4()), "10.77.0.60", ["web"]), request(str(uuid.uuid4()), "10.77.0.61", ["web"])
    raced = {}

    class RacingLinks(Links):
        def run(self, args, check=True):
            if not raced and [str(a) for a in args][:2] == ["link", "add"]:
                raced["b"] = None  # B's own links are not raced
                raced["b"] = ensure_present(b_req, b_path, netns=netlab.host)
            return super().run(args, check=check)

    monkeypatch.setattr(instance, "Links", RacingLinks)
    a_result = ensure_present(a_req, a_path, netns=netlab.host)
    assert raced["b"]["created_links"] == ["brqprivate"]
    assert a_result["created_links"] == [] and a_result["changed"] is True
    assert [c[-4:] for c in a_result["commands"] if c[-4:] == ["name", "brqprivate", "type", "bridge"]] == [
        ["name", "brqprivate", "type", "bridge"]], "planned once, then used as it was"
    assert "brqprivate" not in Registry(a_path).data["links"] and "brqprivate" in Registry(b_path).data["links"]

    assert ensure_absent(a_req.instance_uuid, a_path, netns=netlab.host)["removed_links"] == []
    assert "brqprivate" in sh("ip", "-n", netlab.host, "link", "show").stdout, "A leaves B's bridge"
    assert ensure_absent(b_req.instance_uuid, b_path, netns=netlab.host)["removed_links"] == ["brqprivate"]


def test_without_bridge_netfilter_nothing_changes(netlab):
    sh("ip", "netns", "exec", netlab.host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
    before = netlab.snapshot()
    req = request(str(uuid.uuid4()), "10.77.0.40", ["web"])
    with pytest.raises(UnsupportedError, match="bridge-nf-call-iptables"):
        ensure_present(req, netlab.instances_path, netns=netlab.host)
    assert netlab.snapshot() == before


def _vlan_request(netlab, vlan_id, ip):
    net = {"name": "v%d" % vlan_id, "type": "vlan", "physical_interface": "phys0", "vlan_id": vlan_id, "cidr": "10.78.0.0/24"}
    port = {"id": str(uuid.uuid4()), "network": net["name"], "fixed_ips": [ip], "security_groups": ["all"]}
    sg = {"name": "all", "rules": [{"direction": "ingress"}, {"direction": "egress"}]}
    return parse_request(str(uuid.uuid4()), [port], [net], [sg])


def _vlan_supported(netlab):
    probe = sh("ip", "-n", netlab.host, "link", "add", "link", "phys0", "name", "phys0.9", "type", "vlan", "id", 9, check=False)
    sh("ip", "-n", netlab.host, "link", "del", "phys0.9", check=False)
    return probe.returncode == 0


@pytest.fixture
def vlan_lab(netlab):
    sh("ip", "-n", netlab.host, "link", "add", "phys0", "type", "veth", "peer", "name", "phys0-peer")
    sh("ip", "-n", netlab.host, "link", "set", "phys0", "up")
    sh("ip", "-n", netlab.host, "link", "set", "phys0-peer", "up")
    return netlab


def test_vlan_unsupported_kernel_fails_clearly_and_changes_nothing(vlan_lab):
    if _vlan_supported(vlan_lab):
        pytest.skip("this kernel has VLAN subinterfaces: covered by test_vlan_networks_are_isolated")
    before = vlan_lab.snapshot()
    with pytest.raises(UnsupportedError, match="cannot create VLAN subinterfaces"):
        ensure_present(_vlan_request(vlan_lab, 100, "10.78.0.10"), vlan_lab.instances_path, netns=vlan_lab.host)
    assert vlan_lab.snapshot() == before


def test_vlan_networks_are_isolated(vlan_lab):
    if not _vlan_supported(vlan_lab):
        pytest.skip("no VLAN subinterfaces in this kernel (8021q): see test_vlan_unsupported_kernel_fails_clearly")
    # The far end of phys0 is a "switch" namespace with one host on VLAN 100 only.
    far = vlan_lab.prefix + "-far"
    vlan_lab.add_ns(far)
    sh("ip", "-n", vlan_lab.host, "link", "set", "phys0-peer", "netns", far)
    sh("ip", "-n", far, "link", "set", "phys0-peer", "up")
    sh("ip", "-n", far, "link", "add", "link", "phys0-peer", "name", "far.100", "type", "vlan", "id", "100")
    sh("ip", "-n", far, "addr", "add", "10.78.0.12/24", "dev", "far.100")
    sh("ip", "-n", far, "link", "set", "far.100", "up")
    r100, r200 = _vlan_request(vlan_lab, 100, "10.78.0.10"), _vlan_request(vlan_lab, 200, "10.78.0.11")
    p100 = ensure_present(r100, vlan_lab.instances_path, netns=vlan_lab.host)["domain_interfaces"][0]
    p200 = ensure_present(r200, vlan_lab.instances_path, netns=vlan_lab.host)["domain_interfaces"][0]
    a, b = vlan_lab.guest("a", p100, "10.78.0.10"), vlan_lab.guest("b", p200, "10.78.0.11")
    assert vlan_lab.ping(a, "10.78.0.12"), "VLAN 100 reaches the far host on VLAN 100"
    assert not vlan_lab.ping(b, "10.78.0.12"), "VLAN 200 does not"
    assert not vlan_lab.ping(a, "10.78.0.11")
