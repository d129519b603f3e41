"""Names and MACs derived from port/network ids: short enough, stable, Nova's shape."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import NetworkValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._network.names import (
    bridge_name,
    link_local_ipv6,
    port_mac,
    tap_name,
    validate_ifname,
    validate_mac,
    validate_netns,
    vlan_interface_name,
)


def test_tap_name_is_novas():
    assert tap_name("3f1e6c3a-5b4e-4f0e-9a53-6c1c2a9d8b11") == "tap3f1e6c3a-5b"
    assert bridge_name("6a0e1f2b-aaaa-bbbb-cccc-000000000000") == "brq6a0e1f2b-aa"


@given(st.uuids())
def test_port_mac_is_stable_local_unicast_and_fits(port):
    mac = port_mac(str(port))
    assert mac == port_mac(str(port))
    assert mac.startswith("fa:16:3e:")
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert validate_mac(mac) == mac
    assert len(tap_name(str(port))) <= 15


def test_different_ports_get_different_macs():
    macs = {port_mac(str(uuid.UUID(int=i))) for i in range(2000)}
    assert len(macs) > 1990  # 24 random bits: a rare collision is possible, not a pattern


@given(st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True), st.integers(1, 4094))
def test_vlan_interface_name_fits_ifnamsiz(phys, vid):
    name = vlan_interface_name(phys, vid)
    assert len(name) <= 15 and name.endswith(".%d" % vid)
    assert validate_ifname(name) == name


def test_short_vlan_name_is_plain():
    assert vlan_interface_name("eth1", 100) == "eth1.100"


@pytest.mark.parametrize("bad", ["", "a" * 16, "eth 0", "eth/0", "eth:0", "..", None])
def test_bad_interface_names(bad):
    with pytest.raises(NetworkValidationError):
        validate_ifname(bad)


@pytest.mark.parametrize("bad", ["fa:16:3e:00:00", "zz:16:3e:00:00:01", "01:00:5e:00:00:01", "00:00:00:00:00:00"])
def test_bad_macs(bad):
    with pytest.raises(NetworkValidationError):
        validate_mac(bad)


def test_link_local_is_eui64():
    assert link_local_ipv6("fa:16:3e:f4:ce:00") == ipaddress.IPv6Address("fe80::f816:3eff:fef4:ce00")


@pytest.mark.parametrize("good", ["hv1", "nimbus-test-mod-1a2b3c", "lab.hv_2", "a" * 255, "é"])
def test_netns_names_that_ip_netns_takes(good):
    assert validate_netns(good) == good


@pytest.mark.parametrize("bad", [
    "", "a\x00b", "--help", "-n", "../../x", "a/b", "/", ".", "..", "tab\there", "new\nline", "del\x7f",
    "a" * 256, "é" * 128, "\ud800", 5, ["hv1"],
])
def test_bad_netns_names(bad):
    """Each would reach ``ip -n``/``ip netns exec`` as it is: an option, a path out of /run/netns, a NUL
    (a ValueError from subprocess), or a name the file system cannot hold."""
    with pytest.raises(NetworkValidationError, match="netns") as err:
        validate_netns(bad)
    assert err.value.step == "instance_network"
