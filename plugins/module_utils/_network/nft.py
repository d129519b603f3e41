# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Security groups and anti-spoofing as nftables rules: one ``nft`` runner and the generator.

Per instance two tables named ``nimbus-<instance uuid>``, replaced together in one
``nft -f`` transaction (never a window with half the rules):

* ``bridge`` family, stateless, layer 2: the frames a port may send (its MACs, ARP only for its
  IPs, source IP bound to MAC, no DHCP/RA server replies), no other port may use its MACs, and
  only DHCP/ND broadcast or multicast reaches it.
* ``inet`` family, stateful (conntrack through br_netfilter, as Neutron's iptables firewall):
  the security-group rules. A bridged packet's port is not visible in the inet hooks, so a port
  is recognised by its MAC, which the bridge table guarantees only that port can use.

Rules match interface names as strings (``iifname``), so they are in force before the tap exists:
load them, start the domain paused, resume.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandRunner
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import STEP, NetworkError, UnsupportedError
from ansible_collections.nimbus.compute.plugins.module_utils._network.links import IP
from ansible_collections.nimbus.compute.plugins.module_utils._network.names import link_local_ipv6

NFT = CommandRunner("nft", step=STEP, timeout=60)
TABLE_PREFIX = "nimbus-"
FAMILIES = ("bridge", "inet")
BR_NETFILTER = "/proc/sys/net/bridge/bridge-nf-call-iptables"
BR_NETFILTER6 = "/proc/sys/net/bridge/bridge-nf-call-ip6tables"
# Neighbour discovery and MLD: needed for IPv6 to work at all, never filtered by groups.
ND_TYPES = "{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, mld-listener-query, mld2-listener-report }"
FAMILY_OF = {"IPv4": "ip", "IPv6": "ip6"}
ICMP_OF = {"IPv4": "icmp", "IPv6": "icmpv6"}


def table_name(instance_uuid):
    return TABLE_PREFIX + instance_uuid


def _set(items):
    return "{ %s }" % ", ".join(str(i) for i in items)


def _collapse(pairs):
    """(mac, network) pairs merged per MAC so interval sets never hold overlapping elements."""
    by_mac = {}
    for mac, net in pairs:
        by_mac.setdefault((mac, net.version), []).append(net)
    out = []
    for (mac, version), nets in sorted(by_mac.items()):
        out.extend((mac, version, n) for n in ipaddress.collapse_addresses(nets))
    return out


def _networks(port, version):
    """The port's networks of one IP version, merged across its MACs."""
    return list(ipaddress.collapse_addresses(n for _unused, n in port.addresses() if n.version == version))


def _element(net):
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _longest_prefix_segments(owned):
    """Non-overlapping ``(first, last, owners)`` address ranges from ``{network: owners}``, where each
    address belongs to the owners of the longest prefix that holds it - a port's fixed IP inside
    another port's allowed address pair stays that port's. CIDRs only nest or are disjoint, so one
    sorted pass with a stack of the enclosing prefixes does it; adjacent ranges with the same owners
    are merged. (An interval map may not hold overlapping elements: nft refuses them.)"""
    segments = []

    def emit(first, last, owners):
        if segments and segments[-1][2] == owners and segments[-1][1] + 1 == first:
            segments[-1] = (segments[-1][0], last, owners)
        else:
            segments.append((first, last, owners))

    stack = []  # [last address, owners, next address of it not yet emitted]

    def close(before):
        while stack and stack[-1][0] < before:
            last, owners, cursor = stack.pop()
            if cursor <= last:
                emit(cursor, last, owners)
            if stack:
                stack[-1][2] = last + 1

    for net in sorted(owned, key=lambda n: (int(n.network_address), n.prefixlen)):
        first, last = int(net.network_address), int(net.broadcast_address)
        close(first)
        if stack and stack[-1][2] < first:
            emit(stack[-1][2], first - 1, stack[-1][1])
        stack.append([last, owned[net], first])
    close(float("inf"))
    return segments


def _range_element(first, last, version):
    """One interval map key: an address, a CIDR when the range is one, else ``first-last``."""
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    nets = list(ipaddress.summarize_address_range(make(first), make(last)))
    return _element(nets[0]) if len(nets) == 1 else "%s-%s" % (make(first), make(last))


def _rule_match(rule, group_sets):
    """The nft match for one security-group rule (without verdict)."""
    fam = FAMILY_OF[rule.ethertype]
    parts = ["meta nfproto %s" % ("ipv4" if fam == "ip" else "ipv6")]
    peer = "saddr" if rule.direction == "ingress" else "daddr"
    if rule.remote_ip_prefix is not None:
        parts.append("%s %s %s" % (fam, peer, rule.remote_ip_prefix))
    elif rule.remote_group_id is not None:
        parts.append("%s %s @%s" % (fam, peer, group_sets[(rule.remote_group_id, fam)]))
    proto = rule.protocol
    if proto in ("icmp", "icmpv6"):
        parts.append("meta l4proto %s" % ("icmp" if proto == "icmp" else "ipv6-icmp"))
        if rule.port_range_min is not None:
            parts.append("%s type %d" % (proto, rule.port_range_min))
        if rule.port_range_max is not None:
            parts.append("%s code %d" % (proto, rule.port_range_max))
    elif proto is not None:
        parts.append("meta l4proto %s" % proto)
        if rule.port_range_min is not None:
            ports = str(rule.port_range_min)
            if rule.port_range_max != rule.port_range_min:
                ports += "-%d" % rule.port_range_max
            parts.append("th dport %s" % ports)
    return " ".join(parts)


def _group_sets(request, ports):
    """Named sets for every remote group a rule refers to: members given plus local ports' IPs."""
    used = {}
    for port in ports:
        for group_name in port.security_groups:
            for rule in request.security_groups[group_name].rules:
                if rule.remote_group_id:
                    fam = FAMILY_OF[rule.ethertype]
                    used[(rule.remote_group_id, fam)] = "rg%d-%s" % (len(used), fam)
    sets = {}
    for (group_name, fam), set_name in used.items():
        version = 4 if fam == "ip" else 6
        nets = list(request.security_groups[group_name].members)
        for port in request.ports:
            if group_name in port.security_groups:
                nets.extend(net for _unused, net in port.addresses())
        nets = list(ipaddress.collapse_addresses(n for n in nets if n.version == version)) if nets else []
        sets[(group_name, fam)] = (set_name, "ipv4_addr" if version == 4 else "ipv6_addr", [_element(n) for n in nets])
    return used, sets


def _named(lines, kind, name, key, elements, interval=False):
    """A named set or map; a named one may be empty (an anonymous one may not)."""
    lines += ["  %s %s {" % (kind, name), "    type %s;%s" % (key, " flags interval;" if interval else "")]
    if elements:
        lines.append("    elements = %s" % _set(elements))
    lines.append("  }")


def _bridge_table(request, ports):
    """Layer 2, stateless. Per-port data lives in sets keyed by the tap name, so the rules
    are the same few lines for 1 or 1,000 ports and a port costs set elements only."""
    lines = ["table bridge %s {" % table_name(request.instance_uuid)]
    addr4, addr6, arp4 = [], [], []
    for p in ports:
        link_local = [(mac, ipaddress.ip_network(link_local_ipv6(mac))) for mac in p.macs()]
        for mac, version, net in _collapse(p.addresses() + link_local):
            (addr4 if version == 4 else addr6).append('"%s" . %s . %s' % (p.tap, mac, _element(net)))
        arp4 += ['"%s" . %s' % (p.tap, _element(n)) for n in _networks(p, 4)]
    _named(lines, "set", "ports", "ifname", ['"%s"' % p.tap for p in ports])
    _named(lines, "set", "port_macs", "ifname . ether_addr", ['"%s" . %s' % (p.tap, m) for p in ports for m in p.macs()])
    _named(lines, "set", "macs", "ether_addr", sorted({m for p in ports for m in p.macs()}))
    _named(lines, "set", "addr4", "ifname . ether_addr . ipv4_addr", addr4, interval=True)
    _named(lines, "set", "addr6", "ifname . ether_addr . ipv6_addr", addr6, interval=True)
    _named(lines, "set", "arp4", "ifname . ipv4_addr", arp4, interval=True)
    lines += [
        "  chain prerouting {",
        "    type filter hook prerouting priority -200; policy accept;",
        "    iifname @ports jump port",
        # Nobody but a port may send from its MACs (closes the uplink and the other ports).
        "    ether saddr @macs iifname . ether saddr != @port_macs drop",
        "  }",
        "  chain postrouting {",
        "    type filter hook postrouting priority 0; policy accept;",
        "    oifname @ports jump guard",
        "  }",
        "  chain port {",
        "    iifname . ether saddr != @port_macs drop",
        "    ether type arp iifname . arp saddr ether != @port_macs drop",
        "    ether type arp arp operation request arp saddr ip 0.0.0.0 accept",
        "    ether type arp iifname . arp saddr ip @arp4 accept",
        "    ether type arp drop",
        "    ether type ip udp sport 67 drop",
        "    ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
        "    ether type ip iifname . ether saddr . ip saddr != @addr4 drop",
        "    ether type ip accept",
        "    ether type ip6 icmpv6 type nd-router-advert drop",
        "    ether type ip6 udp sport 547 drop",
        "    ether type ip6 ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld2-listener-report } accept",
        "    ether type ip6 iifname . ether saddr . ip6 saddr != @addr6 drop",
        "    ether type ip6 accept",
        "    drop",
        "  }",
        "  chain guard {",
        "    ether type ip ip daddr { 255.255.255.255, 224.0.0.0/4 } udp sport 67 udp dport 68 accept",
        "    ether type ip ip daddr { 255.255.255.255, 224.0.0.0/4 } drop",
        "    ether type ip ether daddr ff:ff:ff:ff:ff:ff drop",
        "    ether type ip6 ip6 daddr ff00::/8 meta l4proto ipv6-icmp accept",
        "    ether type ip6 ip6 daddr ff00::/8 udp dport 546 accept",
        "    ether type ip6 ip6 daddr ff00::/8 drop",
        "  }",
        "}",
    ]
    return lines


def _inet_table(request, ports):
    """Stateful security groups. Ports with the same groups share one chain per direction
    (``egress-<n>``/``ingress-<n>``); maps from a port's MAC (or address) pick the chain. Each chain
    returns when its groups allow the packet and drops otherwise; the base chains accept what comes
    back. A MAC or address two ports with different groups may both use (allowed address pairs)
    jumps to ``<direction>-<n>-<m>``, which runs both: only what all of them allow passes."""
    used, sets = _group_sets(request, ports)
    lines = ["table inet %s {" % table_name(request.instance_uuid)]
    for set_name, addr_type, elements in sets.values():
        _named(lines, "set", set_name, addr_type, elements, interval=True)
    combos = {}
    for p in ports:
        combos.setdefault(tuple(p.security_groups), len(combos))
    chain = {p.id: combos[tuple(p.security_groups)] for p in ports}
    shared = set()  # (direction, chain indices) of the tie chains needed

    def target(direction, indices):
        indices = tuple(sorted(indices))
        if len(indices) > 1:
            shared.add((direction, indices))
        return "jump %s-%s" % (direction, "-".join(str(i) for i in indices))

    by_mac = {}
    for p in ports:
        for mac in p.macs():
            by_mac.setdefault(mac, set()).add(chain[p.id])
    for direction in ("egress", "ingress"):
        targets = ["%s : %s" % (mac, target(direction, by_mac[mac])) for mac in sorted(by_mac)]
        _named(lines, "map", direction, "ether_addr : verdict", targets)
    for version, addr_type in ((4, "ipv4_addr"), (6, "ipv6_addr")):
        # Host to guest: no link-layer header yet, so the guest is found by its addresses (the
        # longest prefix holding the address decides, as routing would).
        owned = {}
        for p in ports:
            for net in _networks(p, version):
                owned.setdefault(net, set()).add(chain[p.id])
        owned = {net: frozenset(indices) for net, indices in owned.items()}
        targets = ["%s : %s" % (_range_element(first, last, version), target("ingress", owners))
                   for first, last, owners in _longest_prefix_segments(owned)]
        _named(lines, "map", "ingress%d" % version, "%s : verdict" % addr_type, targets, interval=True)
    lines += [
        # The vmaps are the last rules of their base chains: a chain that returns means accept.
        "  chain forward {",
        "    type filter hook forward priority 0; policy accept;",
        "    ether saddr vmap @egress",
        "    ether daddr vmap @ingress",
        "  }",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        "    ether saddr vmap @egress",
        "  }",
        "  chain output {",
        "    type filter hook output priority 0; policy accept;",
        "    ip daddr vmap @ingress4",
        "    ip6 daddr vmap @ingress6",
        "  }",
    ]
    for groups, index in combos.items():
        rules = [r for g in groups for r in request.security_groups[g].rules]
        lines += [
            "  chain egress-%d {" % index,
            "    meta l4proto ipv6-icmp icmpv6 type %s return" % ND_TYPES,
            "    meta nfproto ipv4 udp sport 68 udp dport 67 return",
            "    meta nfproto ipv6 udp sport 546 udp dport 547 return",
            "    ct state established,related accept",
            "    ct state invalid drop",
        ]
        # An allowed egress packet returns, so a destination port's ingress chain still runs.
        lines += ["    %s return" % _rule_match(r, used) for r in rules if r.direction == "egress"]
        lines += [
            "    drop",
            "  }",
            "  chain ingress-%d {" % index,
            "    meta l4proto ipv6-icmp icmpv6 type %s return" % ND_TYPES,
            "    ct state established,related return",
            "    ct state invalid drop",
            "    meta nfproto ipv4 udp sport 67 udp dport 68 return",
            "    meta nfproto ipv6 udp sport 547 udp dport 546 return",
        ]
        lines += ["    %s return" % _rule_match(r, used) for r in rules if r.direction == "ingress"]
        lines += ["    drop", "  }"]
    for direction, indices in sorted(shared):
        lines.append("  chain %s-%s {" % (direction, "-".join(str(i) for i in indices)))
        lines += ["    jump %s-%d" % (direction, i) for i in indices]
        lines.append("  }")
    lines.append("}")
    return lines


def ruleset_body(request):
    """The two tables' text (without the replace preamble), or "" when no port has port security."""
    ports = [p for p in request.ports if p.port_security_enabled]
    if not ports:
        return ""
    return "\n".join(_bridge_table(request, ports) + _inet_table(request, ports)) + "\n"


def ruleset_digest(body):
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]


def _with_comment(body, digest):
    """Tag each table with the digest of the whole body: the idempotence check reads it back."""
    comment = '  comment "nimbus.compute %s"' % digest
    out = []
    for line in body.splitlines():
        out.append(line)
        if line.startswith("table "):
            out.append(comment)
    return "\n".join(out) + "\n"


def replace_script(instance_uuid, body, digest=None):
    """One transaction: create-if-missing, delete, re-add, so the swap is atomic."""
    name = table_name(instance_uuid)
    head = []
    for family in FAMILIES:
        head += ["table %s %s" % (family, name), "delete table %s %s" % (family, name)]
    if not body:
        return "\n".join(head) + "\n"
    return "\n".join(head) + "\n" + _with_comment(body, digest or ruleset_digest(body))


def delete_script(instance_uuid, families):
    return "".join("delete table %s %s\n" % (family, table_name(instance_uuid)) for family in families)


class Firewall:
    """The nft side of one host (or of a network namespace, for tests and lab hypervisors)."""

    def __init__(self, netns=None, runner=NFT, ip_runner=IP):
        self.netns = netns
        self.runner = runner
        self.ip_runner = ip_runner

    def _nft(self, args, input_data=None, check=True):
        if self.netns:
            # Inside a namespace nft runs through ``ip netns exec`` (the ip runner).
            return self.ip_runner.run(["netns", "exec", self.netns, "nft", *args], input_data=input_data, check=check)
        return self.runner.run(args, input_data=input_data, check=check)

    def load(self, script, check_only=False):
        """``nft -f -`` (``-c`` to only check): the kernel applies all of it or none."""
        args = ["-c", "-f", "-"] if check_only else ["-f", "-"]
        try:
            return self._nft(args, input_data=script.encode("utf-8"))
        except CommandError as exc:
            raise NetworkError("nftables refused the ruleset: %s" % exc.msg)

    def tables(self, instance_uuid):
        """{family: digest or ""} for this instance's tables that exist.

        One terse ``list table`` per family: nft then reads only that table, where ``list tables``
        reads the whole ruleset (seconds per call once a host holds a few hundred servers' tables)."""
        name = table_name(instance_uuid)
        found = {}
        for family in FAMILIES:
            result = self._nft(["-t", "list", "table", family, name], check=False)
            if result.rc != 0:
                if "No such file or directory" in result.stderr:
                    continue
                raise NetworkError("nft list table %s %s failed: %s" % (family, name, result.stderr.strip()))
            found[family] = ""
            for line in result.stdout.splitlines()[:3]:
                text = line.strip()
                if text.startswith('comment "nimbus.compute '):
                    found[family] = text.split()[2].rstrip('"')
        return found

    def preflight(self):
        """Both halves must load: bridge tables and conntrack in inet over br_netfilter."""
        self.check_sysctls()
        self.probe()

    def check_sysctls(self):
        """br_netfilter hands bridged traffic to the inet tables: without it the groups filter nothing."""
        for path in (BR_NETFILTER, BR_NETFILTER6):
            value = self._read_sysctl(path)
            if value is None:
                raise UnsupportedError(
                    "bridge netfilter is not available (%s missing): load br_netfilter so bridged traffic "
                    "reaches the inet security-group rules" % path
                )
            if value != "1":
                raise UnsupportedError(
                    "%s is %s: set net.bridge.%s=1 so bridged traffic reaches the security-group rules"
                    % (path, value, os.path.basename(path))
                )

    def probe(self):
        """``nft -c`` of a bridge table and an inet conntrack rule. nft reads every table of the host
        for it (about 0.5 ms a table with nft 1.0.6), so callers that change nothing before their own
        atomic load run it only to explain a failure (see ensure)."""
        probe = "nimbus-probe-%d" % os.getpid()
        script = (
            "table bridge %s {\n  chain c {\n    type filter hook prerouting priority -200; policy accept;\n"
            "    ether type arp arp saddr ip 0.0.0.0 accept\n  }\n}\n"
            "table inet %s {\n  chain c {\n    type filter hook forward priority 0; policy accept;\n"
            "    ct state established accept\n  }\n}\n" % (probe, probe)
        )
        try:
            self._nft(["-c", "-f", "-"], input_data=script.encode("utf-8"))
        except CommandError as exc:
            raise UnsupportedError("nftables bridge family or inet conntrack is not available here: %s" % exc.msg)

    def _read_sysctl(self, path):
        if self.netns:
            result = self.ip_runner.run(["netns", "exec", self.netns, "cat", path], check=False)
            if result.rc != 0 and "network namespace" in result.stderr:
                # ip's own failure (rc 255), not cat's: the namespace is missing, not br_netfilter.
                raise NetworkError("network namespace %s cannot be entered: %s" % (self.netns, result.stderr.strip()))
            return result.stdout.strip() if result.rc == 0 else None
        try:
            with open(path, encoding="ascii") as handle:
                return handle.read().strip()
        except OSError:
            return None

    def ensure(self, request, check_mode=False):
        """Install or replace this instance's tables; returns (changed, digest, seconds).
        A failure is explained by the capability probe (UnsupportedError) when nft lacks a family."""
        try:
            return self._ensure(request, check_mode)
        except NetworkError:
            self.probe()
            raise

    def _ensure(self, request, check_mode):
        body = ruleset_body(request)
        digest = ruleset_digest(body) if body else ""
        present = self.tables(request.instance_uuid)
        wanted = {f: digest for f in FAMILIES} if body else {}
        if present == wanted:
            return False, digest, 0.0
        script = replace_script(request.instance_uuid, body, digest)
        started = time.monotonic()
        self.load(script, check_only=check_mode)
        return True, digest, time.monotonic() - started

    def remove(self, instance_uuid, check_mode=False):
        present = self.tables(instance_uuid)
        if present and not check_mode:
            self.load(delete_script(instance_uuid, sorted(present)))
        return bool(present)
