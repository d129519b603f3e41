"""The ruleset generator and the replace/idempotence logic, with a recording nft runner.
One test loads the generated ruleset into the real kernel with ``nft -c`` (check only)."""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandResult
from ansible_collections.nimbus.compute.plugins.module_utils._network import nft
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import NetworkError, UnsupportedError
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import parse_request

INSTANCE = "11111111-2222-3333-4444-555555555555"
PORT = "aaaaaaaa-0000-0000-0000-000000000001"
NET = {"name": "private", "cidr": "10.0.0.0/24"}
SGS = [
    {
        "name": "web",
        "members": ["10.0.0.9", "10.0.0.0/30"],
        "rules": [
            {"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 90,
             "remote_ip_prefix": "192.0.2.0/24"},
            {"direction": "ingress", "protocol": "icmp", "port_range_min": 8, "port_range_max": 0, "remote_group_id": "web"},
            {"direction": "ingress", "ethertype": "IPv6", "protocol": "udp", "port_range_min": 53},
            {"direction": "egress", "protocol": "132"},
        ],
    }
]


def request(**port):
    base = {"id": PORT, "network": "private", "fixed_ips": ["10.0.0.5"], "security_groups": ["web"]}
    base.update(port)
    return parse_request(INSTANCE, [base], [NET], SGS)


def test_rules_from_security_groups():
    body = nft.ruleset_body(request())
    assert "meta nfproto ipv4 ip saddr 192.0.2.0/24 meta l4proto tcp th dport 80-90 return" in body
    assert "meta nfproto ipv4 ip saddr @rg0-ip meta l4proto icmp icmp type 8 icmp code 0 return" in body
    assert "meta nfproto ipv6 meta l4proto udp th dport 53 return" in body
    assert "meta nfproto ipv4 meta l4proto 132 return" in body
    # the remote group set: members and this port, collapsed so intervals never overlap
    assert "elements = { 10.0.0.0/30, 10.0.0.5, 10.0.0.9 }" in body


def test_default_deny_and_stateful():
    lines = nft.ruleset_body(request()).splitlines()
    ingress = lines[lines.index("  chain ingress-0 {") :]
    assert ingress[ingress.index("  }") - 1].strip() == "drop"
    assert "    ct state established,related return" in ingress
    assert "    ct state invalid drop" in ingress


def test_anti_spoofing_binds_tap_mac_and_ips():
    req = request(allowed_address_pairs=[{"ip_address": "10.0.0.64/26", "mac_address": "fa:16:3e:00:00:99"}])
    mac, tap = req.ports[0].mac, '"tapaaaaaaaa-00"'
    body = nft.ruleset_body(req)
    assert mac > "fa:16:3e:00:00:99"  # elements are listed in sorted order
    assert "elements = { %s . fa:16:3e:00:00:99, %s . %s }" % (tap, tap, mac) in body  # port_macs
    assert "elements = { %s . fa:16:3e:00:00:99 . 10.0.0.64/26, %s . %s . 10.0.0.5 }" % (tap, tap, mac) in body  # addr4
    assert "elements = { %s . 10.0.0.5, %s . 10.0.0.64/26 }" % (tap, tap) in body  # arp4
    assert "ether type ip iifname . ether saddr . ip saddr != @addr4 drop" in body
    assert "ether type arp iifname . arp saddr ip @arp4 accept" in body
    assert "ether type ip udp sport 67 drop" in body  # no DHCP server in a guest
    assert "ether saddr @macs iifname . ether saddr != @port_macs drop" in body


def chain_lines(body, name):
    lines = body.splitlines()
    start = lines.index("  chain %s {" % name)
    return lines[start : lines.index("  }", start)]


def test_dhcp_client_allowed_and_dhcp_server_replies_from_the_guest_dropped():
    body = nft.ruleset_body(request())
    port = chain_lines(body, "port")  # frames from the guest, first match wins
    server4 = port.index("    ether type ip udp sport 67 drop")
    discover = port.index("    ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept")
    bound = port.index("    ether type ip iifname . ether saddr . ip saddr != @addr4 drop")
    assert server4 < discover < bound, "a server reply is dropped before anything accepts it; a discover needs no address yet"
    bound6 = port.index("    ether type ip6 iifname . ether saddr . ip6 saddr != @addr6 drop")
    assert port.index("    ether type ip6 udp sport 547 drop") < bound6
    assert port.index("    ether type ip6 icmpv6 type nd-router-advert drop") < port.index("    ether type ip6 accept")
    # Renewals (from the bound address) pass the stateful side without any group rule, both ways.
    egress = chain_lines(body, "egress-0")
    assert egress.index("    meta nfproto ipv4 udp sport 68 udp dport 67 return") < egress.index("    drop")
    assert "    meta nfproto ipv6 udp sport 546 udp dport 547 return" in egress
    ingress = chain_lines(body, "ingress-0")
    assert ingress.index("    meta nfproto ipv4 udp sport 67 udp dport 68 return") < ingress.index("    drop")
    guard = chain_lines(body, "guard")  # frames to the guest: broadcast only for the DHCP server's reply
    assert guard.index("    ether type ip ip daddr { 255.255.255.255, 224.0.0.0/4 } udp sport 67 udp dport 68 accept") < \
        guard.index("    ether type ip ip daddr { 255.255.255.255, 224.0.0.0/4 } drop")


def test_rules_do_not_grow_with_ports():
    """A port costs set elements, not rules: the 1,000-port ruleset has as many rules as 1."""

    def rules(count):
        ports = [
            {"id": "%08x-0000-0000-0000-000000000000" % i, "network": "private",
             "fixed_ips": ["10.0.%d.%d" % (i // 200, i % 200 + 2)], "security_groups": ["web"]}
            for i in range(count)
        ]
        body = nft.ruleset_body(parse_request(INSTANCE, ports, [{"name": "private", "cidr": "10.0.0.0/16"}], SGS))
        return sum(1 for line in body.splitlines() if line.startswith("    ") and not line.startswith("    elements"))

    assert rules(1) == rules(50)


def test_port_without_port_security_gets_no_tables():
    assert nft.ruleset_body(request(port_security_enabled=False)) == ""
    script = nft.replace_script(INSTANCE, "")
    assert "delete table inet nimbus-%s" % INSTANCE in script and "{" not in script


def test_replace_script_is_one_atomic_swap_with_digest():
    body = nft.ruleset_body(request())
    script = nft.replace_script(INSTANCE, body)
    first = script.splitlines()[:4]
    assert first == [
        "table bridge nimbus-%s" % INSTANCE,
        "delete table bridge nimbus-%s" % INSTANCE,
        "table inet nimbus-%s" % INSTANCE,
        "delete table inet nimbus-%s" % INSTANCE,
    ]
    assert script.count('comment "nimbus.compute %s"' % nft.ruleset_digest(body)) == 2
    assert nft.ruleset_digest(body) == nft.ruleset_digest(nft.ruleset_body(request()))


class FakeNft:
    """Keeps the tables' digests as the kernel would after each script."""

    def __init__(self):
        self.tables = {}
        self.loads = []
        self.calls = []

    def run(self, args, input_data=None, check=True):
        self.calls.append(args)
        if args[:3] == ["-t", "list", "table"]:
            key = (args[3], args[4])
            if key not in self.tables:
                return CommandResult(["nft", *args], 1, "", "Error: No such file or directory\nlist table %s %s\n" % key)
            out = 'table %s %s {\n\tcomment "nimbus.compute %s"\n}\n' % (key[0], key[1], self.tables[key])
        elif args[:1] == ["list"]:
            raise AssertionError("nft %s reads the whole ruleset" % " ".join(args))
        else:
            script = input_data.decode()
            self.loads.append((args, script))
            if "-c" not in args:
                for line in script.splitlines():
                    parts = line.split()
                    if parts[:1] == ["delete"]:
                        self.tables.pop((parts[2], parts[3]), None)
                    if parts[:1] == ["table"] and parts[-1] == "{":
                        self.tables[(parts[1], parts[2])] = None
                    if parts[:2] == ["comment", '"nimbus.compute']:
                        for key, value in self.tables.items():
                            if value is None:
                                self.tables[key] = parts[2].rstrip('"')
            out = ""
        return CommandResult(["nft", *args], 0, out, "")


def test_ensure_is_idempotent_and_removes():
    fake = FakeNft()
    fw = nft.Firewall(runner=fake)
    req = request()
    assert fw.ensure(req)[0] is True
    assert fw.ensure(req)[0] is False
    assert len(fake.loads) == 1
    assert fw.ensure(request(fixed_ips=["10.0.0.6"]))[0] is True
    assert fw.remove(INSTANCE) is True
    assert fake.tables == {}
    assert fw.remove(INSTANCE) is False


def test_tables_reads_only_this_instances_tables():
    fake = FakeNft()
    fw = nft.Firewall(runner=fake)
    assert fw.tables(INSTANCE) == {}
    fw.ensure(request())
    digest = nft.ruleset_digest(nft.ruleset_body(request()))
    assert fw.tables(INSTANCE) == {"bridge": digest, "inet": digest}
    assert {tuple(args[:3]) for args in fake.calls if "list" in args} == {("-t", "list", "table")}


def test_tables_error_other_than_missing_is_a_network_error():
    class Broken(FakeNft):
        def run(self, args, input_data=None, check=True):
            return CommandResult(["nft", *args], 1, "", "Error: Could not process rule: Operation not permitted")

    with pytest.raises(NetworkError, match=r"nft list table bridge nimbus-.*Operation not permitted"):
        nft.Firewall(runner=Broken()).tables(INSTANCE)


def test_check_mode_only_checks():
    fake = FakeNft()
    assert nft.Firewall(runner=fake).ensure(request(), check_mode=True)[0] is True
    assert fake.loads[0][0] == ["-c", "-f", "-"] and fake.tables == {}


def test_refused_ruleset_is_a_network_error():
    class Refusing(FakeNft):
        def run(self, args, input_data=None, check=True):
            if "list" in args or b"nimbus-probe-" in (input_data or b""):
                return super().run(args, input_data, check)
            raise CommandError("nft -f failed: Error: syntax error", step="instance_network")

    refusing = Refusing()
    with pytest.raises(NetworkError, match="nftables refused the ruleset") as raised:
        nft.Firewall(runner=refusing).ensure(request())
    assert not isinstance(raised.value, UnsupportedError)
    # The capability probe ran only after the load failed, to tell "refused" from "unsupported".
    assert [b"nimbus-probe-" in script.encode() for _args, script in refusing.loads] == [True]


def test_ensure_runs_no_capability_probe_when_the_load_succeeds():
    fake = FakeNft()
    nft.Firewall(runner=fake).ensure(request())
    assert all("nimbus-probe-" not in script for _args, script in fake.loads)


def test_a_failed_load_on_a_host_without_the_bridge_family_is_unsupported():
    class Unsupported(FakeNft):
        def run(self, args, input_data=None, check=True):
            if "list" in args:
                return super().run(args, input_data, check)
            raise CommandError("nft -f failed: Error: Could not process rule: Operation not supported", step="instance_network")

    with pytest.raises(UnsupportedError, match="nftables bridge family or inet conntrack is not available"):
        nft.Firewall(runner=Unsupported()).ensure(request())


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="nft -c needs root and nft")
def test_generated_ruleset_passes_the_kernels_check():
    req = request(allowed_address_pairs=[{"ip_address": "10.0.0.64/26"}, {"ip_address": "2001:db8::/64"}])
    script = nft.replace_script(INSTANCE, nft.ruleset_body(req))
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=script.encode(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()


# ---------------------------------------------------------------------------------------------
# Overlapping addresses of different ports (allowed address pairs): longest prefix wins, ties run both.

PORT2 = "bbbbbbbb-0000-0000-0000-000000000002"
TWO_GROUPS = [{"name": "a", "rules": [{"direction": "ingress"}]}, {"name": "b", "rules": [{"direction": "egress"}]}]


def two_ports(pairs1, pairs2=(), groups=("a", "b")):
    ports = [
        {"id": PORT, "network": "private", "fixed_ips": ["10.0.0.5"], "security_groups": [groups[0]],
         "allowed_address_pairs": list(pairs1)},
        {"id": PORT2, "network": "private", "fixed_ips": ["10.0.0.6"], "security_groups": [groups[1]],
         "allowed_address_pairs": list(pairs2)},
    ]
    return parse_request(INSTANCE, ports, [NET], TWO_GROUPS)


def map_elements(body, name):
    lines = body.splitlines()
    start = lines.index("  map %s {" % name)
    return lines[start + 2].strip()


def test_a_fixed_ip_inside_another_ports_pair_stays_that_ports():
    body = nft.ruleset_body(two_ports([{"ip_address": "10.0.0.0/24"}]))
    assert map_elements(body, "ingress4") == (
        "elements = { 10.0.0.0-10.0.0.5 : jump ingress-0, 10.0.0.6 : jump ingress-1, 10.0.0.7-10.0.0.255 : jump ingress-0 }"
    )


def test_an_address_both_ports_may_use_needs_both_ports_groups():
    vip = {"ip_address": "10.0.0.100/32", "mac_address": "fa:16:3e:00:00:64"}
    body = nft.ruleset_body(two_ports([vip], [vip]))
    assert "10.0.0.100 : jump ingress-0-1" in map_elements(body, "ingress4")
    assert "fa:16:3e:00:00:64 : jump egress-0-1" in map_elements(body, "egress")
    assert "fa:16:3e:00:00:64 : jump ingress-0-1" in map_elements(body, "ingress")
    lines = body.splitlines()
    tie = lines.index("  chain ingress-0-1 {")
    assert lines[tie + 1 : tie + 4] == ["    jump ingress-0", "    jump ingress-1", "  }"]
    assert "  chain egress-0-1 {" in lines
    # the same groups: no tie chain, one target
    same = nft.ruleset_body(two_ports([vip], [vip], groups=("a", "a")))
    assert "chain ingress-0-1" not in same and "chain egress-0-1" not in same
    assert map_elements(same, "ingress4") == "elements = { 10.0.0.5-10.0.0.6 : jump ingress-0, 10.0.0.100 : jump ingress-0 }"


def test_allowed_chains_return_and_the_base_chains_accept():
    lines = nft.ruleset_body(request()).splitlines()
    for base in ("forward", "output"):
        chain = lines[lines.index("  chain %s {" % base) :]
        assert chain[1].endswith("policy accept;") and "vmap" in chain[chain.index("  }") - 1]
    ingress = lines[lines.index("  chain ingress-0 {") :]
    ingress = ingress[: ingress.index("  }")]
    assert not any(line.endswith(" accept") for line in ingress), "accept would skip a tie chain's second port"


@st.composite
def owned_prefixes(draw):
    nets = draw(st.lists(st.tuples(st.integers(0, 255), st.integers(24, 32), st.integers(0, 2)), min_size=1, max_size=12))
    owned = {}
    for host, prefix, owner in nets:
        net = ipaddress.ip_network("10.0.0.%d/%d" % (host, prefix), strict=False)
        owned.setdefault(net, set()).add(owner)
    return {net: frozenset(owners) for net, owners in owned.items()}


@given(owned_prefixes())
@settings(max_examples=200, deadline=None)
def test_segments_are_the_longest_prefix_match(owned):
    segments = nft._longest_prefix_segments(owned)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(segments)), "sorted, not overlapping"
    assert all(a[1] + 1 < b[0] or a[2] != b[2] for a, b in itertools.pairwise(segments)), "adjacent equals merged"
    for address in range(int(ipaddress.ip_address("10.0.0.0")), int(ipaddress.ip_address("10.0.1.0"))):
        holding = [net for net in owned if int(net.network_address) <= address <= int(net.broadcast_address)]
        found = [seg[2] for seg in segments if seg[0] <= address <= seg[1]]
        if not holding:
            assert found == []
        else:
            assert found == [owned[max(holding, key=lambda n: n.prefixlen)]]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="nft -c needs root and nft")
@pytest.mark.parametrize("pairs1, pairs2", [
    ([{"ip_address": "10.0.0.0/24"}], []),
    ([{"ip_address": "10.0.0.0/25"}, {"ip_address": "10.0.0.4/30"}], [{"ip_address": "10.0.0.0/28"}]),
    ([{"ip_address": "10.0.0.100/32", "mac_address": "fa:16:3e:00:00:64"}],
     [{"ip_address": "10.0.0.100/32", "mac_address": "fa:16:3e:00:00:64"}, {"ip_address": "2001:db8::/64"}]),
])
def test_overlapping_pairs_pass_the_kernels_check(pairs1, pairs2):
    script = nft.replace_script(INSTANCE, nft.ruleset_body(two_ports(pairs1, pairs2)))
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=script.encode(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
