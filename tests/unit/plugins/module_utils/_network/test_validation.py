"""Every bad input is refused with a clear message before anything changes."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import NetworkValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._network.names import port_mac
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import parse_request

INSTANCE = "11111111-2222-3333-4444-555555555555"
PORT = "aaaaaaaa-0000-0000-0000-000000000001"
NET = {"name": "private", "type": "flat", "cidr": "10.0.0.0/24", "gateway": "10.0.0.1"}
VLAN = {"name": "tenant", "type": "vlan", "physical_interface": "eth1", "vlan_id": 100, "mtu": 1450}
SG = {"name": "web", "rules": [{"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}]}


def parse(ports=None, networks=None, sgs=None):
    ports = [{"id": PORT, "network": "private", "fixed_ips": ["10.0.0.5"]}] if ports is None else ports
    return parse_request(INSTANCE, ports, networks or [NET, VLAN], sgs or [SG])


def test_good_request():
    pairs = [{"ip_address": "10.1.0.0/24"}]
    req = parse([{"id": PORT, "network": "tenant", "security_groups": ["web"], "allowed_address_pairs": pairs}])
    port = req.ports[0]
    assert port.mac == port_mac(PORT) and port.tap == "tapaaaaaaaa-00"
    assert port.network.bridge == "brqtenant" and port.network.vlan_interface == "eth1.100"
    assert port.allowed_address_pairs == [(port.mac, ipaddress.ip_network("10.1.0.0/24"))]
    assert req.security_groups["web"].rules[0].port_range_max == 22


def test_given_mac_is_kept_lower_case():
    assert parse([{"id": PORT, "network": "private", "mac": "FA:16:3E:01:02:03"}]).ports[0].mac == "fa:16:3e:01:02:03"


@pytest.mark.parametrize(
    "networks, message",
    [
        ([dict(VLAN, vlan_id=0)], "vlan_id 0 must be an integer from 1 to 4094"),
        ([dict(VLAN, vlan_id=4095)], "from 1 to 4094"),
        ([dict(VLAN, vlan_id="12x")], "not an integer"),
        ([dict(VLAN, physical_interface=None)], "needs physical_interface"),
        ([dict(NET, vlan_id=5)], "only valid for type vlan"),
        ([dict(NET, type="vxlan")], "must be one of flat, vlan"),
        ([dict(NET, cidr="10.0.0.1/24")], "is not a CIDR"),
        ([dict(NET, gateway="10.9.9.9")], "not inside cidr"),
        ([dict(NET, bridge="br with space")], "bridge"),
        ([dict(NET, mtu=20)], "mtu"),
        ([NET, NET], "given twice"),
        ([dict(NET, colour="red")], "unknown keys colour"),
    ],
)
def test_bad_networks(networks, message):
    with pytest.raises(NetworkValidationError, match=message):
        parse_request(INSTANCE, [], networks, [])


@pytest.mark.parametrize(
    "port, message",
    [
        ({"id": "not-a-uuid", "network": "private"}, "port id"),
        ({"id": PORT, "network": "nowhere"}, "network 'nowhere' is not among"),
        ({"id": PORT, "network": "private", "fixed_ips": ["10.1.0.5"]}, "not inside network private"),
        ({"id": PORT, "network": "private", "fixed_ips": ["10.0.0.500"]}, "not an IP address"),
        ({"id": PORT, "network": "private", "mac": "01:00:5e:00:00:01"}, "multicast"),
        ({"id": PORT, "network": "private", "security_groups": ["db"]}, "'db' is not defined"),
        ({"id": PORT, "network": "private", "allowed_address_pairs": [{"ip_address": "10.0.0.0/33"}]}, "not a CIDR"),
        ({"id": PORT, "network": "private", "vif_model": "vmxnet9"}, "vif_model"),
        ({"id": PORT, "network": "private", "port_security_enabled": "yes"}, "true or false"),
    ],
)
def test_bad_ports(port, message):
    with pytest.raises(NetworkValidationError, match=message):
        parse([port])


def test_ports_whose_taps_collide_are_refused():
    other = "aaaaaaaa-0000-0000-0000-000000000002"  # same first 11 characters
    with pytest.raises(NetworkValidationError, match="share the tap name"):
        parse([{"id": PORT, "network": "private"}, {"id": other, "network": "private"}])


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"direction": "inbound"}, "direction"),
        ({"direction": "ingress", "ethertype": "IPv5"}, "ethertype"),
        ({"direction": "ingress", "protocol": "tcp", "port_range_min": 0}, "from 1 to 65535"),
        ({"direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80}, "above"),
        ({"direction": "ingress", "protocol": "icmp", "port_range_max": 0}, "needs an icmp type"),
        ({"direction": "ingress", "port_range_min": 22}, "port ranges need protocol"),
        ({"direction": "ingress", "protocol": "300"}, "protocol"),
        ({"direction": "ingress", "protocol": "icmp", "ethertype": "IPv6"}, "does not match ethertype"),
        ({"direction": "ingress", "remote_ip_prefix": "2001:db8::/32"}, "does not match ethertype"),
        ({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "web"}, "not both"),
        ({"direction": "ingress", "remote_group_id": "ghosts"}, "not defined"),
    ],
)
def test_bad_rules(rule, message):
    with pytest.raises(NetworkValidationError, match=message):
        parse(sgs=[{"name": "web", "rules": [rule]}])


def test_rules_may_refer_to_a_later_group_by_id():
    req = parse(sgs=[{"name": "a", "rules": [{"direction": "ingress", "remote_group_id": "id-b"}]}, {"name": "b", "id": "id-b"}])
    assert req.security_groups["a"].rules[0].remote_group_id == "b"
