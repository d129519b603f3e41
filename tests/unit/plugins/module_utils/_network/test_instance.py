"""instance_network's ``domain_interfaces`` as ``domain_xml`` consumes them: the NIC model is the
port's or the option's when set, else the image's ``hw_vif_model`` (Nova's order)."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._domain import compare, xml_builder
from ansible_collections.nimbus.compute.plugins.module_utils._network.instance import domain_interfaces
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import parse_request

INSTANCE = "11111111-2222-3333-4444-555555555555"
PORT = "aaaaaaaa-0000-0000-0000-000000000001"
HOST = xml_builder.HostInfo(arch="x86_64", machine="pc-i440fx-7.2", vhost_net=False, direct_io=True)


def models(image_model, port_model=None, option=None, vif_type="bridge"):
    port = {"id": PORT, "network": "n"}
    if port_model:
        port["vif_model"] = port_model
    nics = domain_interfaces(parse_request(INSTANCE, [port], [{"name": "n"}], [], option), vif_type)
    properties = {"hw_vif_model": image_model} if image_model else {}
    req = xml_builder.DomainRequest(
        instance_uuid=INSTANCE, instances_path="/srv/instances", virt_type="qemu", name="vm",
        flavor={"name": "m1.tiny", "vcpus": 1, "memory_mb": 256, "root_gb": 1},
        image={"id": "img-1", "properties": properties}, disks=[], interfaces=nics,
    )
    dom = compare.parse(xml_builder.generate(req, HOST))
    return nics[0]["model"], [m.get("type") for m in dom.findall("devices/interface/model")]


@pytest.mark.parametrize("vif_type", ["bridge", "ethernet"])
def test_image_hw_vif_model_reaches_the_domain(vif_type):
    assert models("e1000", vif_type=vif_type) == (None, ["e1000"])
    assert models("rtl8139") == (None, ["rtl8139"])


def test_no_property_means_virtio():
    assert models(None) == (None, ["virtio"])


def test_port_or_option_overrides_the_image():
    assert models("e1000", port_model="virtio") == ("virtio", ["virtio"])
    assert models("e1000", option="e1000e") == ("e1000e", ["e1000e"])
    assert models("e1000", port_model="rtl8139", option="e1000e") == ("rtl8139", ["rtl8139"])
