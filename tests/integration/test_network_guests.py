"""Booted guests on one flat network, built by the `server` role (ports plugged, domain started
paused, security groups applied, resumed). Each guest configures its IP from network_data.json on
its config drive; its user_data pings B and prints the result on the serial console.

  A (group web)    -> B (group web, ICMP allowed from web)  : replies
  C (group other)  -> B                                      : dropped
"""

from __future__ import annotations

import os
import re
import time

import pytest
from labtools import run_role, virsh

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INSTANCES = "/var/tmp/nimbus-test-netguests/instances"
# 128 MiB: the Debian kernel of the embedded guest does not boot in 64.
FLAVOR = {"name": "t.nano", "vcpus": 1, "memory_mb": 128, "root_gb": 1, "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}
NETWORK = {"name": "pingnet", "type": "flat", "cidr": "10.81.0.0/24", "gateway": "10.81.0.1"}
B_IP = "10.81.0.11"
SERVERS = {  # name: (server uuid, port uuid, ip, group)
    "b": ("7a000000-0000-4000-8000-00000000000b", "7b0000bb-0000-4000-8000-00000000000b", B_IP, "web"),
    "a": ("7a000000-0000-4000-8000-00000000000a", "7b0000aa-0000-4000-8000-00000000000a", "10.81.0.10", "web"),
    "c": ("7a000000-0000-4000-8000-00000000000c", "7b0000cc-0000-4000-8000-00000000000c", "10.81.0.12", "other"),
}
SECURITY_GROUPS = [
    {"name": "web", "members": ["10.81.0.10", B_IP],
     "rules": [{"direction": "ingress", "protocol": "icmp", "remote_group_id": "web"}, {"direction": "egress"}]},
    {"name": "other", "members": ["10.81.0.12"], "rules": [{"direction": "egress"}]},
]
# Retry until B answers (it may still be booting), then report three pings.
PING = """#!/bin/sh
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do ping -c 1 -W 1 %s >/dev/null 2>&1 && break; done
ping -c 3 -W 1 %s | grep "packet loss"
""" % (B_IP, B_IP)


def server_vars(guest_images, name, user_data=""):
    uuid, port_id, ip, group = SERVERS[name]
    return {"server_uuid": uuid, "server_name": "ping-" + name, "server_flavor": FLAVOR,
            "server_image": guest_images["nimbus_guest_image"], "server_kernel_image": guest_images["nimbus_guest_kernel"],
            "server_ramdisk_image": guest_images["nimbus_guest_ramdisk"], "server_instances_path": INSTANCES,
            "server_reserved_host_memory_mb": 0, "server_user_data": user_data,
            "server_ports": [{"id": port_id, "network": "pingnet", "fixed_ips": [{"ip_address": ip}],
                              "security_groups": [group]}],
            "server_networks": [NETWORK], "server_security_groups": SECURITY_GROUPS}


def console_line(name, pattern, timeout=120):
    path = os.path.join(paths.instance_dir(INSTANCES, SERVERS[name][0]), "console.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""
        found = re.search(pattern, text)
        if found:
            return found.group(0)
        time.sleep(1)
    raise AssertionError("%s: no %r on the console within %d s:\n%s" % (name, pattern, timeout, text[-2000:]))


def test_security_group_lets_group_members_ping_and_drops_others(guest_images, tmp_path):
    os.makedirs(INSTANCES, exist_ok=True)
    try:
        for name in ("b", "a", "c"):
            proc = run_role(tmp_path, "server", server_vars(guest_images, name, "" if name == "b" else PING))
            assert proc.returncode == 0, proc.stdout[-4000:]
        for name in ("b", "a", "c"):
            ip = SERVERS[name][2]
            assert console_line(name, r"nimbus-guest: nic eth0 mac=\S+ ip=%s/24" % re.escape(ip))
        assert "0% packet loss" in console_line("a", r"nimbus-guest: user-data: .*packet loss")
        assert "100% packet loss" in console_line("c", r"nimbus-guest: user-data: .*packet loss")
    finally:
        for name in ("a", "c", "b"):
            run_role(tmp_path, "server_delete", {"server_delete_uuid": SERVERS[name][0],
                                                 "server_delete_instances_path": INSTANCES})
    for name in SERVERS:
        assert paths.domain_name(SERVERS[name][0]) not in virsh("list", "--all", "--name").stdout.split()
        assert not os.path.exists(paths.instance_dir(INSTANCES, SERVERS[name][0]))
