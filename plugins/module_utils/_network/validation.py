# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Ports, networks and security groups in Neutron's words, checked completely before anything
changes: names, VLAN ids (1-4094), CIDRs, MACs, port ranges, references between them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.paths import validate_uuid
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import STEP, NetworkValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._network.names import (
    bridge_name,
    port_mac,
    tap_name,
    validate_ifname,
    validate_mac,
    vlan_interface_name,
)

NETWORK_TYPES = ("flat", "vlan")
VIF_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet")
DIRECTIONS = ("ingress", "egress")
ETHERTYPES = ("IPv4", "IPv6")
# Neutron protocol names; anything else must be an IP protocol number 0-255.
PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "ipv6-icmp", "sctp", "udplite", "dccp", "gre", "esp", "ah")
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite", "dccp")


@dataclass
class Network:
    name: str
    type: str
    bridge: str
    physical_interface: str | None = None
    vlan_id: int | None = None
    vlan_interface: str | None = None
    mtu: int | None = None
    cidr: object = None
    gateway: object = None


@dataclass
class Port:
    id: str
    network: Network
    mac: str
    fixed_ips: list
    security_groups: list
    allowed_address_pairs: list  # [(mac, ip_network)]
    port_security_enabled: bool = True
    vif_model: str | None = None  # None: domain_xml takes the image's hw_vif_model (virtio when unset)

    @property
    def tap(self):
        return tap_name(self.id)

    def addresses(self):
        """(mac, network) pairs this port may send from: its fixed IPs and its address pairs."""
        pairs = [(self.mac, ipaddress.ip_network(ip)) for ip in self.fixed_ips]
        return pairs + list(self.allowed_address_pairs)

    def macs(self):
        return sorted({self.mac} | {mac for mac, _unused in self.allowed_address_pairs})


@dataclass
class Rule:
    direction: str
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: object = None
    remote_group_id: str | None = None


@dataclass
class SecurityGroup:
    name: str
    id: str | None = None
    rules: list = field(default_factory=list)
    members: list = field(default_factory=list)  # addresses (CIDRs) of this group's ports elsewhere


def _fail(msg):
    raise NetworkValidationError(msg)


def _int(value, what, low, high):
    try:
        number = int(value)
    except (TypeError, ValueError):
        _fail("%s %r is not an integer" % (what, value))
    if isinstance(value, bool) or str(number) != str(value).strip() or not low <= number <= high:
        _fail("%s %r must be an integer from %d to %d" % (what, value, low, high))
    return number


def _ip(value, what):
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        _fail("%s %r is not an IP address" % (what, value))


def _cidr(value, what):
    try:
        return ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError as exc:
        _fail("%s %r is not a CIDR: %s" % (what, value, exc))


def _list(value, what):
    """A list (None: empty). A string is refused: iterating it would read each letter as an item."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        _fail("%s must be a list, got %s %r" % (what, type(value).__name__, value))
    return list(value)


def _name(value, what):
    """A reference to a network or security group: a non-empty string (ids included)."""
    if not isinstance(value, str) or not value:
        _fail("%s must be a name (a non-empty string), got %r" % (what, value))
    return value


def _mapping(item, what, allowed):
    if not isinstance(item, dict):
        _fail("%s must be a dictionary, got %r" % (what, item))
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        _fail("%s has unknown keys %s (allowed: %s)" % (what, ", ".join(unknown), ", ".join(sorted(allowed))))
    return item


def parse_network(item):
    _mapping(item, "network", ("name", "id", "type", "physical_interface", "vlan_id", "bridge", "mtu", "cidr", "gateway"))
    name = item.get("name")
    if not name or not isinstance(name, str):
        _fail("every network needs a name")
    what = "network %s" % name
    net_type = item.get("type") or "flat"
    if net_type not in NETWORK_TYPES:
        _fail("%s: type %r must be one of %s" % (what, net_type, ", ".join(NETWORK_TYPES)))
    bridge = item.get("bridge")
    bridge = validate_ifname(bridge, "%s bridge" % what) if bridge else bridge_name(item.get("id") or name)
    phys = item.get("physical_interface")
    if phys:
        validate_ifname(phys, "%s physical_interface" % what)
    vlan_id = vlan_if = None
    if net_type == "vlan":
        if not phys:
            _fail("%s: a vlan network needs physical_interface" % what)
        vlan_id = _int(item.get("vlan_id"), "%s vlan_id" % what, 1, 4094)
        vlan_if = vlan_interface_name(phys, vlan_id)
    elif item.get("vlan_id") is not None:
        _fail("%s: vlan_id is only valid for type vlan" % what)
    mtu = _int(item["mtu"], "%s mtu" % what, 68, 65535) if item.get("mtu") is not None else None
    cidr = _cidr(item["cidr"], "%s cidr" % what) if item.get("cidr") else None
    gateway = _ip(item["gateway"], "%s gateway" % what) if item.get("gateway") else None
    if gateway is not None and (cidr is None or gateway not in cidr):
        _fail("%s: gateway %s is not inside cidr %s" % (what, gateway, cidr))
    return Network(name, net_type, bridge, phys, vlan_id, vlan_if, mtu, cidr, gateway)


def _fixed_ip(value, what):
    if isinstance(value, dict):
        value = value.get("ip_address")
    return _ip(value, what)


def parse_port(item, networks, known_groups, vif_model):
    _mapping(
        item,
        "port",
        ("id", "network", "mac", "mac_address", "fixed_ips", "security_groups", "allowed_address_pairs",
         "port_security_enabled", "vif_model"),
    )
    try:
        port_id = validate_uuid(item.get("id"), what="port id", step=STEP)
    except ValidationError as exc:
        raise NetworkValidationError(exc.msg)
    what = "port %s" % port_id
    network = networks.get(_name(item.get("network"), "%s network" % what))
    if network is None:
        _fail("%s: network %r is not among the networks given (%s)" % (what, item.get("network"), ", ".join(sorted(networks))))
    mac = item.get("mac") or item.get("mac_address")
    mac = validate_mac(mac, "%s mac" % what) if mac else port_mac(port_id)
    fixed_ips = []
    for raw in _list(item.get("fixed_ips"), "%s fixed_ips" % what):
        ip = _fixed_ip(raw, "%s fixed ip" % what)
        if network.cidr is not None and ip not in network.cidr:
            _fail("%s: fixed ip %s is not inside network %s cidr %s" % (what, ip, network.name, network.cidr))
        fixed_ips.append(ip)
    pairs = []
    for pair in _list(item.get("allowed_address_pairs"), "%s allowed_address_pairs" % what):
        _mapping(pair, "%s allowed_address_pair" % what, ("ip_address", "mac_address"))
        net = _cidr(pair.get("ip_address"), "%s allowed_address_pair ip_address" % what)
        pair_mac = validate_mac(pair["mac_address"], "%s pair mac" % what) if pair.get("mac_address") else mac
        pairs.append((pair_mac, net))
    groups = _list(item.get("security_groups"), "%s security_groups" % what)
    for name in groups:
        if _name(name, "%s security group" % what) not in known_groups:
            _fail("%s: security group %r is not defined in security_groups" % (what, name))
    model = item.get("vif_model") or vif_model
    if model is not None and model not in VIF_MODELS:
        _fail("%s: vif_model %r must be one of %s" % (what, model, ", ".join(VIF_MODELS)))
    enabled = item.get("port_security_enabled", True)
    if not isinstance(enabled, bool):
        _fail("%s: port_security_enabled must be true or false" % what)
    return Port(port_id, network, mac, fixed_ips, groups, pairs, enabled, model)


def parse_rule(item, what, known_groups):
    _mapping(
        item,
        what,
        ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id"),
    )
    direction = item.get("direction")
    if direction not in DIRECTIONS:
        _fail("%s: direction %r must be ingress or egress" % (what, direction))
    ethertype = item.get("ethertype") or "IPv4"
    if ethertype not in ETHERTYPES:
        _fail("%s: ethertype %r must be IPv4 or IPv6" % (what, ethertype))
    protocol = item.get("protocol")
    protocol = None if protocol in (None, "", "any") else str(protocol).lower()
    if protocol is not None and protocol not in PROTOCOLS:
        protocol = str(_int(protocol, "%s protocol" % what, 0, 255))
    if protocol == "ipv6-icmp":
        protocol = "icmpv6"
    if protocol in ("icmp", "icmpv6") and protocol != ("icmp" if ethertype == "IPv4" else "icmpv6"):
        _fail("%s: protocol %s does not match ethertype %s" % (what, protocol, ethertype))
    low, high = item.get("port_range_min"), item.get("port_range_max")
    if protocol in ("icmp", "icmpv6"):
        # Neutron: port_range_min is the ICMP type, port_range_max the code.
        low = _int(low, "%s icmp type" % what, 0, 255) if low is not None else None
        high = _int(high, "%s icmp code" % what, 0, 255) if high is not None else None
        if high is not None and low is None:
            _fail("%s: an icmp code needs an icmp type" % what)
    elif low is not None or high is not None:
        if protocol not in PORT_PROTOCOLS:
            _fail("%s: port ranges need protocol tcp, udp, sctp, udplite or dccp" % what)
        low = _int(low if low is not None else high, "%s port_range_min" % what, 1, 65535)
        high = _int(high if high is not None else low, "%s port_range_max" % what, 1, 65535)
        if low > high:
            _fail("%s: port_range_min %d is above port_range_max %d" % (what, low, high))
    prefix = item.get("remote_ip_prefix")
    group = item.get("remote_group_id")
    if prefix and group:
        _fail("%s: give remote_ip_prefix or remote_group_id, not both" % what)
    if prefix:
        prefix = _cidr(prefix, "%s remote_ip_prefix" % what)
        if (prefix.version == 4) != (ethertype == "IPv4"):
            _fail("%s: remote_ip_prefix %s does not match ethertype %s" % (what, prefix, ethertype))
    if group and _name(group, "%s remote_group_id" % what) not in known_groups:
        _fail("%s: remote_group_id %r is not defined in security_groups" % (what, group))
    return Rule(direction, ethertype, protocol, low, high, prefix or None, known_groups.get(group) if group else None)


def parse_security_groups(items):
    """Security groups by name (and id): first the names, so rules may refer to any group."""
    groups, by_key = [], {}
    items = _list(items, "security_groups")
    for item in items:
        _mapping(item, "security group", ("name", "id", "rules", "members", "description"))
        name = item.get("name")
        if not name or not isinstance(name, str):
            _fail("every security group needs a name")
        if name in by_key:
            _fail("security group %r is given twice" % name)
        group = SecurityGroup(name, item.get("id"))
        if group.id not in (None, ""):
            _name(group.id, "security group %s id" % name)
        groups.append(group)
        by_key[name] = name
        if group.id:
            by_key[group.id] = name
    for group, item in zip(groups, items, strict=True):
        what = "security group %s" % group.name
        group.rules = [
            parse_rule(rule, "%s rule %d" % (what, index), by_key)
            for index, rule in enumerate(_list(item.get("rules"), "%s rules" % what))
        ]
        group.members = [_cidr(ip, "%s member" % what) for ip in _list(item.get("members"), "%s members" % what)]
    return groups, by_key


@dataclass
class Request:
    instance_uuid: str
    networks: dict
    ports: list
    security_groups: dict


def parse_request(instance_uuid, ports, networks, security_groups, vif_model=None):
    """Validate everything; returns a Request or raises NetworkValidationError."""
    try:
        instance_uuid = validate_uuid(instance_uuid, step=STEP)
    except ValidationError as exc:
        raise NetworkValidationError(exc.msg)
    nets = {}
    for item in _list(networks, "networks"):
        net = parse_network(item)
        if net.name in nets:
            _fail("network %r is given twice" % net.name)
        nets[net.name] = net
    bridges = {}
    for net in nets.values():
        other = bridges.setdefault(net.bridge, net)
        if other is not net and (other.type, other.vlan_interface) != (net.type, net.vlan_interface):
            _fail("networks %s and %s share bridge %s with different uplinks" % (other.name, net.name, net.bridge))
    groups, by_key = parse_security_groups(security_groups)
    parsed, seen = [], set()
    for item in _list(ports, "ports"):
        port = parse_port(item, nets, by_key, vif_model)
        port.security_groups = [by_key[name] for name in port.security_groups]
        if port.tap in seen:
            _fail("two ports share the tap name %s (the first 11 characters of their ids)" % port.tap)
        seen.add(port.tap)
        parsed.append(port)
    return Request(instance_uuid, nets, parsed, {g.name: g for g in groups})
