#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: instance_network
short_description: Plug a server's ports into bridges and apply its security groups with nftables
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - The host side of Neutron's Linux-bridge agent with an nftables firewall, for one server.
  - For each network its ports use, ensures the bridge (C(brq<network id or name>[:11]) unless the network's C(bridge) key is
    given), for V(vlan) networks the subinterface C(<physical_interface>.<vlan_id>) enslaved to it, the MTU, links up.
  - Returns RV(domain_interfaces) for M(nimbus.compute.domain_xml) (its C(interfaces)
    option) - tap C(tap<port id[:11]>), a MAC derived from the port id when none is given (stable across runs),
    C(model) from the port's C(vif_model) or O(vif_model), else none, so that M(nimbus.compute.domain_xml) uses the
    image's C(hw_vif_model) (V(virtio) when the image sets none).
  - "Security groups: per server two nftables tables C(nimbus-<instance_uuid>) (families C(bridge) and C(inet)),
    replaced in one C(nft -f) transaction: default deny in both directions except what the groups' rules allow,
    established/related allowed, anti-spoofing of MAC, IP and ARP (allowed address pairs included), DHCP allowed only
    as a client. Rules match the tap by name, so they hold before the domain starts: apply them, start the domain
    paused, resume."
  - Needs bridge netfilter (C(net.bridge.bridge-nf-call-iptables=1) and C(ip6tables=1)) and nftables bridge family;
    checked before anything changes, with a clear error.
  - O(state=absent) removes the tables, the taps this collection created and, when no port uses them any more,
    the bridges and VLAN subinterfaces it created (recorded in C(<instances_path>/network.json) and tagged with
    the link alias C(nimbus.compute)); never a link it did not create.
  - A bridge (or other link) it was about to create that something else sharing the kernel made in the meantime
    (a build for another O(instances_path) on the same machine) is used as it is and left to its maker.
extends_documentation_fragment:
  - nimbus.compute.connection.instances_path
options:
  instance_uuid:
    description: UUID of the server; names the nftables tables.
    type: str
    required: true
  ports:
    description:
      - The server's ports, in NIC order. Keys are Neutron's - C(id) (a UUID), C(network) (a name in O(networks)),
        C(mac) (optional), C(fixed_ips) (addresses, or dicts with C(ip_address)), C(security_groups) (names in
        O(security_groups)), C(allowed_address_pairs) (list of C(ip_address) CIDR and optional C(mac_address)),
        C(port_security_enabled) (default V(true); V(false) means no filtering at all), C(vif_model).
    type: list
    elements: dict
    default: []
  networks:
    description:
      - Networks as in inventory - C(name), C(id) (optional, names the bridge), C(type) (V(flat) or V(vlan)),
        C(physical_interface), C(vlan_id) (1-4094), C(bridge) (an existing bridge to use), C(mtu), C(cidr),
        C(gateway).
    type: list
    elements: dict
    default: []
  security_groups:
    description:
      - Security groups - C(name), C(id) (optional), C(rules) and C(members). A rule has Neutron's keys
        C(direction) (V(ingress)/V(egress)), C(ethertype) (V(IPv4)/V(IPv6)), C(protocol), C(port_range_min),
        C(port_range_max) (ICMP type and code for ICMP), C(remote_ip_prefix) or C(remote_group_id).
      - C(members) lists the addresses of the group's ports on other servers (for C(remote_group_id) rules);
        this server's own ports in the group are added automatically.
    type: list
    elements: dict
    default: []
  state:
    description: V(present) plugs the ports and applies the rules; V(absent) removes them.
    type: str
    choices: [present, absent]
    default: present
  scope:
    description:
      - What to act on - V(all), only the V(links) (bridges, VLAN devices, taps) or only the V(firewall)
        (for example to re-apply changed security groups to a running server).
    type: str
    choices: [all, links, firewall]
    default: all
  vif_type:
    description:
      - V(bridge) lets libvirt create the tap and plug it into the bridge; V(ethernet) creates the tap here,
        already in the bridge, for an C(<interface type='ethernet'>) with C(managed='no').
    type: str
    choices: [bridge, ethernet]
    default: bridge
  vif_model:
    description:
      - NIC model for ports that give none. Unset (the default), RV(domain_interfaces) carry C(model=null) and
        M(nimbus.compute.domain_xml) uses the image's property C(hw_vif_model) (V(virtio) when the image has none),
        as Nova does.
    type: str
    choices: [virtio, e1000, e1000e, rtl8139, ne2k_pci, pcnet]
  netns:
    description:
      - Network namespace to work in instead of the host's (lab hypervisors simulated as namespaces).
      - A name as C(ip netns) takes it - no C(/), no leading C(-), not C(.) or C(..), at most 255 bytes.
    type: str
notes:
  - Supports check mode (the RV(commands) are listed, C(nft -c) checks the ruleset) and is idempotent.
  - This kernel feature is probed; a host without VLAN subinterfaces (8021q) fails with a clear message for
    V(vlan) networks and works for V(flat) ones.
"""

EXAMPLES = r"""
- name: Plug the server's port and apply its security groups
  nimbus.compute.instance_network:
    instance_uuid: "{{ server_uuid }}"
    networks:
      - {name: private, type: flat, physical_interface: eth1, cidr: 10.0.0.0/24, gateway: 10.0.0.1, mtu: 1450}
    ports:
      - id: 3f1e6c3a-5b4e-4f0e-9a53-6c1c2a9d8b11
        network: private
        fixed_ips: [10.0.0.5]
        security_groups: [web]
    security_groups:
      - name: web
        members: [10.0.0.6]
        rules:
          - {direction: ingress, protocol: tcp, port_range_min: 22, port_range_max: 22, remote_ip_prefix: 192.0.2.0/24}
          - {direction: ingress, protocol: icmp, remote_group_id: web}
          - {direction: egress}
  register: net

- name: Remove the server's rules and the bridges nobody uses any more
  nimbus.compute.instance_network:
    instance_uuid: "{{ server_uuid }}"
    state: absent
"""

RETURN = r"""
domain_interfaces:
  description:
    - One dict per port, in port order, for M(nimbus.compute.domain_xml) - C(type) (V(bridge) or V(ethernet)),
      C(source_bridge), C(target_dev), C(mac), C(model) (null unless a port or O(vif_model) sets it), C(mtu), C(port_id).
  returned: state=present
  type: list
  elements: dict
  sample:
    - {type: bridge, source_bridge: brqprivate, target_dev: tap3f1e6c3a-5b, mac: "fa:16:3e:12:34:56",
       model: null, mtu: 1450, port_id: 3f1e6c3a-5b4e-4f0e-9a53-6c1c2a9d8b11}
elapsed:
  description: Seconds the module ran on the host for its step (the server role's per-step timings).
  returned: always
  type: float
commands:
  description: The C(ip) commands run (or, in check mode, that would run).
  returned: always
  type: list
  elements: list
created_links:
  description: Links this run created.
  returned: state=present
  type: list
  elements: str
removed_links:
  description: Links this run removed.
  returned: state=absent
  type: list
  elements: str
firewall:
  description: C(changed), and for O(state=present) the ruleset's C(digest) and the C(seconds) C(nft -f) took.
  returned: always
  type: dict
failed_step:
  description: V(instance_network) when the module failed.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import STEP
from ansible_collections.nimbus.compute.plugins.module_utils._network.instance import (
    SCOPES,
    VIF_TYPES,
    ensure_absent,
    ensure_present,
)
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import VIF_MODELS, parse_request

ARGUMENT_SPEC = spec(
    INSTANCES_PATH_ARGS,
    instance_uuid=dict(type="str", required=True),
    ports=dict(type="list", elements="dict", default=[]),
    networks=dict(type="list", elements="dict", default=[]),
    security_groups=dict(type="list", elements="dict", default=[]),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    scope=dict(type="str", choices=list(SCOPES), default="all"),
    vif_type=dict(type="str", choices=list(VIF_TYPES), default="bridge"),
    vif_model=dict(type="str", choices=list(VIF_MODELS)),
    netns=dict(type="str"),
)


def main():
    clock = StepClock()
    module = AnsibleModule(ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        # Everything is validated before any link or rule changes.
        request = parse_request(p["instance_uuid"], p["ports"], p["networks"], p["security_groups"], p["vif_model"])
        if p["state"] == "absent":
            result = ensure_absent(request.instance_uuid, p["instances_path"], netns=p["netns"], scope=p["scope"],
                                   check_mode=module.check_mode)
        else:
            result = ensure_present(request, p["instances_path"], netns=p["netns"], vif_type=p["vif_type"],
                                    scope=p["scope"], check_mode=module.check_mode)
    except (NimbusError, OSError) as err:
        module.fail_json(**clock.stamp(failure(err, STEP)))
    module.exit_json(**clock.stamp(result))


if __name__ == "__main__":
    main()
