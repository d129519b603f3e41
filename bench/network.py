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


def main():
    if os.geteuid() != 0:
        print("bench/network.py needs root (network namespaces, nft)")
        return 1
    ns = "nimbus-bench-%s" % uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    firewall = nft.Firewall(netns=ns)
    rows = []
    try:
        for count in SIZES:
            # One server with N ports: one table pair, one transaction.
            req = parse_request(str(uuid.uuid4()), ports(count), [NETWORK], SGS)
            body, gen = timed(lambda req=req: nft.ruleset_body(req))
            rules = sum(1 for line in body.splitlines() if line.startswith("    ") and "type " not in line)
            script = nft.replace_script(req.instance_uuid, body)
            _unused, load = timed(lambda script=script: firewall.load(script))
            _unused, reload = timed(lambda script=script: firewall.load(script))
            _unused, check = timed(lambda req=req: firewall.ensure(req))
            rows.append(("1 server x %d ports" % count, count, rules, gen, load, reload, check))
            firewall.remove(req.instance_uuid)
        for count in SIZES[:2]:
            # N servers with one port each: one transaction per server, as the module runs.
            reqs = [parse_request(str(uuid.uuid4()), ports(1, i), [NETWORK], SGS) for i in range(count)]
            started = time.perf_counter()
            gen = load = 0.0
            for req in reqs:
                body, g = timed(lambda req=req: nft.ruleset_body(req))
                _unused, took = timed(lambda req=req, body=body: firewall.load(nft.replace_script(req.instance_uuid, body)))
                gen += g
                load += took
            total = time.perf_counter() - started
            rows.append(("%d servers x 1 port" % count, count, None, gen, load, None, total))
            for req in reqs:
                firewall.remove(req.instance_uuid)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)

    header = ("case", "ports", "rules", "generate", "nft -f", "replace", "ensure/tot", "ms per port")
    print("%-22s %6s %7s %10s %10s %10s %12s %12s" % header)
    for name, count, rules, gen, load, reload, other in rows:
        print(
            "%-22s %6d %7s %9.1fms %9.1fms %10s %10.1fms %11.3f"
            % (name, count, rules if rules is not None else "-", gen * 1e3, load * 1e3,
               "%.1fms" % (reload * 1e3) if reload is not None else "-", other * 1e3, (gen + load) * 1e3 / count)
        )
    big = next(r for r in rows if r[1] == 1000)
    total = big[3] + big[4]
    print("1,000 ports: generate + load = %.2f s (target < 2 s): %s" % (total, "OK" if total < 2 else "MISSED"))
    return 0 if total < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
