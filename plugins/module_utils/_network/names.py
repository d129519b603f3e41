# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Interface names and MAC addresses derived from Neutron-style ids, as Nova and the
Linux-bridge agent name them. ``domain_xml`` imports these so both sides agree.

Every name fits IFNAMSIZ (15 characters) and is stable across runs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from ansible_collections.nimbus.compute.plugins.module_utils._common.text import has_control_character
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import NetworkValidationError

IFNAMSIZ = 15
# Nova: nova.network.model.NIC_NAME_LEN = 14 -> "tap" + port_id[:11]
ID_PREFIX_LEN = 11
TAP_PREFIX = "tap"
BRIDGE_PREFIX = "brq"
# Nova's libvirt driver and Neutron use this OUI for the MACs they generate.
MAC_PREFIX = (0xFA, 0x16, 0x3E)

_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,15}\Z")
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}\Z")


def validate_ifname(name, what="interface name"):
    """Linux accepts almost anything but '/', ':' and whitespace; we accept a safe subset."""
    if not isinstance(name, str) or not _IFNAME_RE.match(name) or name in (".", ".."):
        raise NetworkValidationError(
            "%s %r is not valid: 1-%d characters of letters, digits, '_', '.', '-'" % (what, name, IFNAMSIZ)
        )
    return name


# ``ip netns`` keeps a namespace as the file /run/netns/<name>: one file name (NAME_MAX bytes).
NETNS_MAX_BYTES = 255


def validate_netns(name, what="netns"):
    """A network namespace name as ``ip netns`` takes it: one non-empty file name under /run/netns (no '/',
    not '.' or '..'), no NUL or control character, and not starting with '-' (``ip -n``/``ip netns exec``
    would read it as an option)."""
    def refuse(reason):
        return NetworkValidationError("%s %r is not a network namespace name: %s" % (what, name, reason))

    if not isinstance(name, str) or not name:
        raise refuse("it must be a non-empty string")
    if has_control_character(name):
        raise refuse("it contains a NUL or control character")
    if "/" in name or name in (".", ".."):
        raise refuse("it must be a single file name under /run/netns (no '/', not '.' or '..')")
    if name.startswith("-"):
        raise refuse("it must not start with '-'")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise refuse("it is not valid UTF-8 text")
    if size > NETNS_MAX_BYTES:
        raise refuse("it is %d bytes long, at most %d" % (size, NETNS_MAX_BYTES))
    return name


def tap_name(port_id):
    """``tap<port-id[:11]>`` (14 characters), the name Nova gives a port's tap device."""
    return TAP_PREFIX + str(port_id)[:ID_PREFIX_LEN]


def bridge_name(network_id):
    """``brq<network-id[:11]>``, the Linux-bridge agent's bridge name for a network."""
    return validate_ifname(BRIDGE_PREFIX + str(network_id)[:ID_PREFIX_LEN], "bridge name")


def vlan_interface_name(physical_interface, vlan_id):
    """``<phys>.<vid>``; when that is too long, shorten ``phys`` and add a hash (as Neutron does)."""
    suffix = ".%d" % vlan_id
    name = physical_interface + suffix
    if len(name) <= IFNAMSIZ:
        return name
    digest = hashlib.sha1(physical_interface.encode("utf-8")).hexdigest()[:4]
    return physical_interface[: IFNAMSIZ - len(suffix) - len(digest)] + digest + suffix


def validate_mac(mac, what="MAC address"):
    """Lower-case ``aa:bb:cc:dd:ee:ff``; a unicast, non-zero address."""
    value = str(mac).strip().lower().replace("-", ":")
    if not _MAC_RE.match(value):
        raise NetworkValidationError("%s %r is not of the form aa:bb:cc:dd:ee:ff" % (what, mac))
    if int(value[:2], 16) & 0x01:
        raise NetworkValidationError("%s %s is a multicast address" % (what, value))
    if value == "00:00:00:00:00:00":
        raise NetworkValidationError("%s is all zeros" % what)
    return value


def port_mac(port_id):
    """A stable MAC for a port: fa:16:3e (locally administered, unicast) + 3 bytes of sha256(port id)."""
    tail = hashlib.sha256(str(port_id).encode("utf-8")).digest()[:3]
    return ":".join("%02x" % b for b in MAC_PREFIX + tuple(tail))


def link_local_ipv6(mac):
    """The EUI-64 fe80:: address a guest derives from its MAC (RFC 4291), allowed by anti-spoofing."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui))
