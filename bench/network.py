# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Security-group rules for 1, 100 and 1,000 ports on one host: time to generate the ruleset and
to load it with one ``nft -f`` transaction, in a network namespace made (and removed) here.

Target (issue 7): 1,000 ports' rules in < 2 s, growing linearly.
Run as root: ``.venv/bin/python bench/network.py``.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), ".collections"))

from ansible_collections.nimbus.compute.plugins.module_utils._network import nft
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import parse_request

SIZES = (1, 100, 1000)
NETWORK = {"name": "bench", "cidr": "10.0.0.0/16"}
SGS = [
    {
        "name": "web",
        "members": ["192.0.2.%d" % i for i in range(1, 50)],
        "rules": [
            {"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "remote_ip_prefix": "198.51.100.0/24"},
            {"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 443},
            {"direction": "ingress", "protocol": "icmp", "remote_group_id": "web"},
            {"direction": "egress"},
            {"direction": "egress", "ethertype": "IPv6"},
        ],
    }
]


def ports(count, offset=0):
    hosts = ipaddress.ip_network(NETWORK["cidr"]).hosts()
    addresses = [next(hosts) for _unused in range(offset + count)][offset:]
    return [
        {"id": str(uuid.uuid4()), "network": "bench", "fixed_ips": [str(ip)], "security_groups": ["web"]}
        for ip in addresses
    ]


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def one_server_many_ports(firewall):
    """One server with N ports: one table pair, one transaction."""
    rows = []
    for count in SIZES:
        req = parse_request(str(uuid.uuid4()), ports(count), [NETWORK], SGS)
        body, gen = timed(lambda req=req: nft.ruleset_body(req))
        rules = sum(1 for line in body.splitlines() if line.startswith("    ") and "type " not in line)
        script = nft.replace_script(req.instance_uuid, body)
        _unused, load = timed(lambda script=script: firewall.load(script))
        _unused, reload = timed(lambda script=script: firewall.load(script))
        _unused, check = timed(lambda req=req: firewall.ensure(req))
        rows.append(("1 server x %d ports" % count, count, rules, gen, load, reload, check))
        firewall.remove(req.instance_uuid)
    return rows


def many_servers_one_port(firewall, ns):
    """N servers with one port each, as the module applies them: one table pair and one transaction per
    server. The host first gets N-1 servers' tables (loaded 50 servers a transaction, timed), then the
    N-th server is applied the module's way (sysctl check, its two tables read, one load), re-applied
    (unchanged: reads only) and removed. The peer in the same run is what the module ran before:
    'nft list tables' and the nft capability probe on every call, each reading every table of the host."""
    rows = []
    for count in SIZES:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"], check=True)
        reqs = [parse_request(str(uuid.uuid4()), ports(1, i), [NETWORK], SGS) for i in range(count)]
        started = time.perf_counter()
        for first in range(0, count - 1, 50):
            chunk = reqs[first:min(first + 50, count - 1)]
            firewall.load("".join(nft.replace_script(r.instance_uuid, nft.ruleset_body(r)) for r in chunk))
        populate = time.perf_counter() - started
        last = reqs[-1]

        def apply(req=last):
            firewall.check_sysctls()
            return firewall.ensure(req)

        (changed, _digest, _load), first_apply = timed(apply)
        (unchanged, _digest, _load), again = timed(apply)
        if not changed or unchanged:
            raise SystemExit("bench: ensure reported changed=%s then %s" % (changed, unchanged))
        old_list = old_list_tables(ns)
        _unused, probe = timed(firewall.probe)
        _unused, remove = timed(lambda req=last: firewall.remove(req.instance_uuid))
        rows.append((count, populate, first_apply, again, remove, old_list, probe))
    return rows


def old_list_tables(ns, timeout=120):
    """Seconds of 'nft list tables' (None when it takes longer than timeout)."""
    started = time.perf_counter()
    try:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"], check=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - started


def main():
    if os.geteuid() != 0:
        print("bench/network.py needs root (network namespaces, nft)")
        return 1
    ns = "nimbus-bench-%s" % uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    firewall = nft.Firewall(netns=ns)
    for path in (nft.BR_NETFILTER, nft.BR_NETFILTER6):
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.bridge.%s=1" % os.path.basename(path)], check=False)
    try:
        rows = one_server_many_ports(firewall)
        servers = many_servers_one_port(firewall, ns)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)

    header = ("case", "ports", "rules", "generate", "nft -f", "replace", "ensure", "ms per port")
    print("%-22s %6s %7s %10s %10s %10s %10s %12s" % header)
    for name, count, rules, gen, load, reload, check in rows:
        print("%-22s %6d %7s %9.1fms %9.1fms %9.1fms %9.1fms %12.3f"
              % (name, count, rules, gen * 1e3, load * 1e3, reload * 1e3, check * 1e3, (gen + load) * 1e3 / count))
    print()
    print("N servers x 1 port, one transaction each (the module's way); the N-th server applied with N-1 present:")
    columns = ("servers", "load N-1 (s)", "apply (ms)", "again (ms)", "remove", "old: list tables", "old: probe")
    print("%8s %14s %12s %12s %10s %18s %12s" % columns)
    for count, populate, first_apply, again, remove, old_list, probe in servers:
        old = ">120 s" if old_list is None else "%.1f ms" % (old_list * 1e3)
        print("%8d %14.2f %12.1f %12.1f %8.1fms %18s %9.1f ms" % (count, populate, first_apply * 1e3, again * 1e3,
                                                                  remove * 1e3, old, probe * 1e3))
    small, big = servers[1], servers[-1]
    growth = (big[2] - small[2]) / (big[0] - small[0]) * 1e3
    print("apply grows by %.3f ms per server already on the host (nft 1.0.6 reads every table for a load)" % growth)
    one = next(r for r in rows if r[1] == 1000)
    total = one[3] + one[4]
    print("1,000 ports: generate + load = %.2f s (target < 2 s): %s" % (total, "OK" if total < 2 else "MISSED"))
    print("network ports_1000_seconds=%.3f apply_ms_at_%d_servers=%.1f apply_ms_at_%d_servers=%.1f"
          % (total, small[0], small[2] * 1e3, big[0], big[2] * 1e3))
    return 0 if total < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
