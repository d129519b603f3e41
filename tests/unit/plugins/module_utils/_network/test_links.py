"""The ip commands planned for bridges, VLAN subinterfaces and taps (this lab's kernel has no
VLAN devices, so their commands are proven here), and what removal may delete."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import NetworkError, UnsupportedError
from ansible_collections.nimbus.compute.plugins.module_utils._network.links import (
    OWNER_ALIAS,
    Links,
    Registry,
    plan_network,
    plan_removal,
    plan_tap,
)
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import parse_request

INSTANCE = "11111111-2222-3333-4444-555555555555"
PORT = "aaaaaaaa-0000-0000-0000-000000000001"


class FakeLinks(Links):
    def __init__(self, links, members=None, runner=None):
        super().__init__(netns="ns1", runner=runner)
        self.links = links
        self._members = members or {}

    def show(self, name):
        return self.links.get(name)

    def members(self, bridge):
        return self._members.get(bridge, [])


def vlan_request(**net):
    network = {"name": "tenant", "type": "vlan", "physical_interface": "eth1", "vlan_id": 100, "mtu": 1450}
    network.update(net)
    return parse_request(INSTANCE, [{"id": PORT, "network": "tenant"}], [network], [])


def test_vlan_network_from_scratch():
    created = []
    net = vlan_request().ports[0].network
    vlan_plan, plan = plan_network(FakeLinks({"eth1": {"ifname": "eth1", "flags": ["UP"]}}), net, created)
    assert vlan_plan == [
        ["link", "add", "link", "eth1", "name", "eth1.100", "type", "vlan", "id", 100],
        ["link", "set", "dev", "eth1.100", "alias", OWNER_ALIAS],
    ]
    assert plan == [
        ["link", "add", "name", "brqtenant", "type", "bridge"],
        ["link", "set", "dev", "brqtenant", "alias", OWNER_ALIAS],
        ["link", "set", "dev", "brqtenant", "mtu", 1450],
        ["link", "set", "dev", "brqtenant", "up"],
        ["link", "set", "dev", "eth1.100", "mtu", 1450],
        ["link", "set", "dev", "eth1.100", "master", "brqtenant"],
        ["link", "set", "dev", "eth1.100", "up"],
    ]
    assert created == ["brqtenant", "eth1.100"]
    assert Links("ns1").argv(plan[0]) == ["-n", "ns1", *plan[0]]


def test_everything_in_place_plans_nothing():
    net = vlan_request().ports[0].network
    links = {
        "eth1": {"ifname": "eth1"},
        "brqtenant": {"mtu": 1450, "flags": ["UP"], "linkinfo": {"info_kind": "bridge"}},
        "eth1.100": {
            "mtu": 1450, "flags": ["UP"], "master": "brqtenant", "linkinfo": {"info_kind": "vlan", "info_data": {"id": 100}},
        },
    }
    assert plan_network(FakeLinks(links), net, []) == ([], [])


@pytest.mark.parametrize(
    "links, message",
    [
        ({}, "physical_interface eth1 does not exist"),
        ({"eth1": {}, "brqtenant": {"linkinfo": {"info_kind": "veth"}}}, "is not a bridge"),
        ({"eth1": {}, "eth1.100": {"linkinfo": {"info_kind": "vlan", "info_data": {"id": 7}}}}, "is not vlan 100"),
    ],
)
def test_conflicts_are_errors(links, message):
    with pytest.raises(NetworkError, match=message):
        plan_network(FakeLinks(links), vlan_request().ports[0].network, [])


def test_kernel_without_vlan_devices_is_reported_clearly():
    class NoVlan:
        def run(self, args, check=True):
            raise CommandError("ip -n failed (exit 2): Error: Unknown device type.", step="instance_network")

    with pytest.raises(UnsupportedError, match=r"cannot create VLAN subinterfaces.*8021q"):
        Links(runner=NoVlan()).apply([["link", "add", "link", "eth1", "name", "eth1.100", "type", "vlan", "id", 100]])


def test_tap_for_ethernet_nics():
    port = parse_request(INSTANCE, [{"id": PORT, "network": "n"}], [{"name": "n", "mtu": 1400}], []).ports[0]
    created = []
    plan = plan_tap(FakeLinks({}), port, created)
    assert plan[0] == ["tuntap", "add", "dev", "tapaaaaaaaa-00", "mode", "tap", "vnet_hdr"]
    assert ["link", "set", "dev", "tapaaaaaaaa-00", "address", port.mac] in plan
    assert ["link", "set", "dev", "tapaaaaaaaa-00", "master", "brqn"] in plan
    assert created == ["tapaaaaaaaa-00"]


def test_removal_deletes_only_what_we_created_and_nobody_uses(tmp_path):
    req = vlan_request()
    registry = Registry(str(tmp_path))
    registry.record(INSTANCE, req.ports, ["brqtenant", "eth1.100"], {"brqtenant": "eth1.100"})
    ours = {"ifalias": OWNER_ALIAS}
    links = FakeLinks({"brqtenant": ours, "eth1.100": ours}, {"brqtenant": ["eth1.100"]})
    assert plan_removal(links, registry, INSTANCE) == (
        [["link", "delete", "dev", "brqtenant"], ["link", "delete", "dev", "eth1.100"]],
        ["brqtenant", "eth1.100"],
    )
    # something else plugged into the bridge: keep it
    busy = FakeLinks({"brqtenant": ours, "eth1.100": ours}, {"brqtenant": ["eth1.100", "vnet7"]})
    assert plan_removal(busy, registry, INSTANCE) == ([], [])
    # alias changed by someone else: not ours any more
    assert plan_removal(FakeLinks({"brqtenant": {}, "eth1.100": {}}), registry, INSTANCE) == ([], [])
    # another server still uses the network
    registry.data["instances"]["other"] = {"p": {"tap": "tapx", "bridge": "brqtenant", "uplink": "eth1.100"}}
    assert plan_removal(links, registry, INSTANCE) == ([], [])
