# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""One server's host networking, present or absent: what ``instance_network`` calls."""

from __future__ import annotations

import contextlib

from ansible_collections.nimbus.compute.plugins.module_utils._common.paths import validate_instances_path
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import STEP, LinkTakenError
from ansible_collections.nimbus.compute.plugins.module_utils._network.links import (
    Links,
    Registry,
    aliased,
    created_by,
    plan_network,
    plan_removal,
    plan_tap,
)
from ansible_collections.nimbus.compute.plugins.module_utils._network.names import validate_netns
from ansible_collections.nimbus.compute.plugins.module_utils._network.nft import Firewall

VIF_TYPES = ("bridge", "ethernet")
SCOPES = ("all", "links", "firewall")
# Plans made again when a link to create appeared meanwhile: each new plan sees the links there now.
LINK_PLAN_ATTEMPTS = 3


def domain_interfaces(request, vif_type="bridge"):
    """The NICs for ``domain_xml`` (its ``interfaces`` option), in port order."""
    return [
        {
            "type": vif_type,
            "source_bridge": port.network.bridge if vif_type == "bridge" else None,
            "target_dev": port.tap,
            "mac": port.mac,
            "model": port.vif_model,
            "mtu": port.network.mtu,
            "port_id": port.id,
        }
        for port in request.ports
    ]


def validate_host_args(instances_path, netns):
    """instances_path and netns, checked before anything is read, run or made: a relative path would put the
    registry and its lock under the working directory, a NUL in either raises ValueError deep in the OS
    calls, and a netns such as ``--help`` or ``../x`` would reach ``ip`` as an option or a path."""
    validate_instances_path(instances_path, step=STEP)
    if netns is not None:
        validate_netns(netns)


def _locked(registry, check_mode):
    """The host's network lock around a run that changes links or rules. Check mode only reads (network.json
    is replaced atomically, so it is never seen half-written) and creates nothing, not even the lock file."""
    return contextlib.nullcontext(registry) if check_mode else registry.lock()


def ensure_present(request, instances_path, *, netns=None, vif_type="bridge", scope="all", check_mode=False):
    """Bridges, uplinks, taps (``ethernet``) and the firewall tables; returns the module result."""
    validate_host_args(instances_path, netns)
    links, firewall = Links(netns), Firewall(netns)
    result = {"changed": False, "commands": [], "created_links": [], "firewall": {}}
    registry = Registry(instances_path)  # a corrupt network.json fails here, before anything changes
    if any(p.port_security_enabled for p in request.ports):
        # Checked first, for every scope (the role's first call plugs links only): a host without
        # bridge netfilter fails before any link changes, not after the bridges exist. The firewall
        # scope changes nothing before its one atomic nft load, so it skips the nft probe, which costs
        # as much as a load on a host with many servers; ensure() runs it only to explain a failure.
        if scope == "firewall":
            firewall.check_sysctls()
        else:
            firewall.preflight()
    with _locked(registry, check_mode):
        if scope in ("all", "links"):
            result.update(_plug_links(links, registry, request, vif_type, check_mode))
        if scope in ("all", "firewall"):
            changed, digest, seconds = firewall.ensure(request, check_mode=check_mode)
            result["firewall"] = {"changed": changed, "digest": digest, "seconds": round(seconds, 4)}
            result["changed"] = result["changed"] or changed
    result["domain_interfaces"] = domain_interfaces(request, vif_type)
    return result


def _plan_links(links, request, vif_type):
    """(plan, created, uplinks): the ``ip`` commands for the request's bridges, uplinks and taps."""
    vlan_plan, plan, created, uplinks = [], [], [], {}
    for net in {p.network.bridge: p.network for p in request.ports}.values():
        first, rest = plan_network(links, net, created)
        vlan_plan += first
        plan += rest
        uplinks[net.bridge] = net.vlan_interface or net.physical_interface
    if vif_type == "ethernet":
        for port in request.ports:
            plan += plan_tap(links, port, created)
    # VLAN devices first: a kernel without 8021q fails before anything else changed.
    return vlan_plan + plan, created, uplinks


def _plug_links(links, registry, request, vif_type, check_mode):
    """Plan and run the link commands. A link to create that appeared in between (a bridge another
    build sharing this kernel made) is someone else's: plan again, and use it as it is."""
    out = {"changed": False, "commands": [], "created_links": []}
    for attempt in range(1, LINK_PLAN_ATTEMPTS + 1):
        plan, created, uplinks = _plan_links(links, request, vif_type)
        out["commands"] += [["ip", *links.argv(a)] for a in plan]
        out["changed"] = out["changed"] or bool(plan)
        if check_mode:
            out["created_links"] = created
            break
        try:
            links.apply(plan, done=_recorder(registry, request, uplinks, made=out["created_links"]))
        except LinkTakenError:
            if attempt == LINK_PLAN_ATTEMPTS:
                raise
            continue
        registry.record(request.instance_uuid, request.ports, created, uplinks)
        registry.save()
        break
    return out


def _recorder(registry, request, uplinks, made):
    """Save each link to the registry as soon as it exists (and again once it carries our alias), so a
    run that fails halfway leaves only recorded links, which state=absent removes. ``made`` collects
    the names of the links created."""

    def done(args):
        name = created_by(args)
        if name is not None:
            made.append(name)
            registry.record(request.instance_uuid, request.ports, [name], uplinks, alias_pending=True)
            registry.save()
        elif aliased(args) is not None and aliased(args) in registry.data["links"]:
            registry.confirm_alias(aliased(args))
            registry.save()

    return done


def ensure_absent(instance_uuid, instances_path, *, netns=None, scope="all", check_mode=False):
    """Remove the instance's rules, its taps and the bridges/VLAN devices nobody uses any more."""
    validate_host_args(instances_path, netns)
    links, firewall = Links(netns), Firewall(netns)
    result = {"changed": False, "commands": [], "removed_links": [], "firewall": {}}
    registry = Registry(instances_path)
    with _locked(registry, check_mode):
        if scope in ("all", "firewall"):
            removed = firewall.remove(instance_uuid, check_mode=check_mode)
            result["firewall"] = {"changed": removed}
            result["changed"] = removed
        if scope in ("all", "links"):
            plan, removed_links = plan_removal(links, registry, instance_uuid)
            result["commands"] = [["ip", *links.argv(a)] for a in plan]
            result["removed_links"] = removed_links
            known = instance_uuid in registry.data["instances"]
            if not check_mode:
                links.apply(plan)
                if known:
                    registry.forget(instance_uuid, removed_links)
                    registry.save()
            result["changed"] = result["changed"] or bool(plan) or known
    return result
