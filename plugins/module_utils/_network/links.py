# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Bridges, VLAN subinterfaces and taps through one ``ip`` runner, the Linux-bridge agent's way.

Changes are planned first (a list of ``ip`` argument lists, unit-testable and shown in check
mode) and then run; VLAN devices are created first so a kernel without 8021q fails before
anything else changed. Links this collection creates carry the alias ``nimbus.compute`` and are
recorded in ``<instances_path>/network.json``; only those are ever deleted, and only when no
port uses them any more.
"""

from __future__ import annotations

import contextlib
import json
import os

from ansible_collections.nimbus.compute.plugins.module_utils._common.atomic import read_bytes, write_atomic
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError
from ansible_collections.nimbus.compute.plugins.module_utils._common.locks import FileLock
from ansible_collections.nimbus.compute.plugins.module_utils._common.paths import locks_dir
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandRunner
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import (
    STEP,
    LinkTakenError,
    NetworkError,
    UnsupportedError,
)

IP = CommandRunner("ip", step=STEP, timeout=30)
OWNER_ALIAS = "nimbus.compute"
REGISTRY_NAME = "network.json"
VLAN_UNSUPPORTED = (
    "this kernel cannot create VLAN subinterfaces (ip link ... type vlan: %s); "
    "vlan networks need the 8021q module: use flat networks on this host or another host"
)


class Links:
    """Read and change links in the host's namespace, or in ``netns`` (``ip -n``)."""

    def __init__(self, netns=None, runner=IP):
        self.netns = netns
        self.runner = runner

    def argv(self, args):
        return (["-n", self.netns] if self.netns else []) + list(args)

    def run(self, args, check=True):
        return self.runner.run(self.argv(args), check=check)

    def show(self, name):
        """The link as ``ip -j -d`` reports it, or None when there is no such link."""
        result = self.run(["-j", "-d", "link", "show", "dev", name], check=False)
        if result.rc != 0:
            if "does not exist" in result.stderr or "Cannot find device" in result.stderr:
                return None
            raise NetworkError("ip link show %s failed: %s" % (name, result.stderr.strip()))
        links = json.loads(result.stdout or "[]")
        return links[0] if links else None

    def members(self, bridge):
        result = self.run(["-j", "link", "show", "master", bridge], check=False)
        if result.rc != 0:
            return []
        return sorted(link["ifname"] for link in json.loads(result.stdout or "[]"))

    def apply(self, plan, done=None):
        """Run the plan in order; ``done(args)`` after each command that succeeded (so a caller can
        record a link as soon as it exists, before the next command may fail)."""
        for args in plan:
            try:
                self.run(args)
            except CommandError as exc:
                if "type" in args and "vlan" in args and "Unknown device type" in exc.msg:
                    raise UnsupportedError(VLAN_UNSUPPORTED % "Unknown device type")
                error = LinkTakenError if created_by(args) is not None and "File exists" in exc.msg else NetworkError
                raise error("ip %s failed: %s" % (" ".join(str(a) for a in args), exc.msg))
            if done is not None:
                done(args)


def created_by(args):
    """The link an ``ip`` command of a plan creates (``link add … name X``, ``tuntap add dev X``), or None."""
    args = [str(a) for a in args]
    if args[:2] == ["link", "add"] and "name" in args:
        return args[args.index("name") + 1]
    if args[:2] == ["tuntap", "add"] and "dev" in args:
        return args[args.index("dev") + 1]
    return None


def aliased(args):
    """The link an ``ip link set dev X alias nimbus.compute`` command marks as ours, or None."""
    args = [str(a) for a in args]
    if args[:3] == ["link", "set", "dev"] and args[4:] == ["alias", OWNER_ALIAS]:
        return args[3]
    return None


def kind(link):
    return ((link or {}).get("linkinfo") or {}).get("info_kind")


def owned(link):
    return bool(link) and link.get("ifalias") == OWNER_ALIAS


def ours(registry, name, link):
    """Recorded as created by us and still carrying our alias - or created by a run that failed
    before it could set the alias (recorded ``alias_pending``, and nobody has set another alias)."""
    entry = registry.data["links"].get(name)
    if entry is None or not link:
        return False
    return owned(link) or (bool(entry.get("alias_pending")) and not link.get("ifalias"))


def _is_up(link):
    return "UP" in (link.get("flags") or [])


def _ensure_settings(name, link, mtu, master=None):
    """mtu / master / up for an existing or just-created link (``link`` None when just created)."""
    plan = []
    if mtu and (link is None or link.get("mtu") != mtu):
        plan.append(["link", "set", "dev", name, "mtu", mtu])
    if master and (link is None or link.get("master") != master):
        plan.append(["link", "set", "dev", name, "master", master])
    if link is None or not _is_up(link):
        plan.append(["link", "set", "dev", name, "up"])
    return plan


def plan_network(links, net, created):
    """(vlan_plan, plan) to give ``net`` its bridge and uplink; ``created`` collects new link names."""
    vlan_plan, plan = [], []
    bridge = links.show(net.bridge)
    if bridge is None:
        plan += [["link", "add", "name", net.bridge, "type", "bridge"], ["link", "set", "dev", net.bridge, "alias", OWNER_ALIAS]]
        created.append(net.bridge)
    elif kind(bridge) != "bridge":
        raise NetworkError("network %s: %s exists and is not a bridge (%s)" % (net.name, net.bridge, kind(bridge)))
    plan += _ensure_settings(net.bridge, bridge, net.mtu)
    uplink = net.vlan_interface or net.physical_interface
    if net.physical_interface and links.show(net.physical_interface) is None:
        raise NetworkError("network %s: physical_interface %s does not exist" % (net.name, net.physical_interface))
    if net.vlan_interface:
        vlan = links.show(net.vlan_interface)
        if vlan is None:
            vlan_plan += [
                ["link", "add", "link", net.physical_interface, "name", net.vlan_interface, "type", "vlan", "id", net.vlan_id],
                ["link", "set", "dev", net.vlan_interface, "alias", OWNER_ALIAS],
            ]
            created.append(net.vlan_interface)
        else:
            vid = ((vlan.get("linkinfo") or {}).get("info_data") or {}).get("id")
            if kind(vlan) != "vlan" or vid != net.vlan_id:
                raise NetworkError("network %s: %s exists but is not vlan %d" % (net.name, net.vlan_interface, net.vlan_id))
        plan += _ensure_settings(net.vlan_interface, vlan, net.mtu, master=net.bridge)
    elif uplink:
        phys = links.show(uplink) or {}
        if phys.get("master") not in (None, net.bridge):
            raise NetworkError("network %s: %s is already in bridge %s" % (net.name, uplink, phys["master"]))
        plan += _ensure_settings(uplink, phys, None, master=net.bridge)
    return vlan_plan, plan


def plan_tap(links, port, created):
    """An existing tap for ``type='ethernet'`` NICs (vnet_hdr for virtio offloads)."""
    tap = links.show(port.tap)
    plan = []
    if tap is None:
        plan += [
            ["tuntap", "add", "dev", port.tap, "mode", "tap", "vnet_hdr"],
            ["link", "set", "dev", port.tap, "alias", OWNER_ALIAS],
            ["link", "set", "dev", port.tap, "address", port.mac],
        ]
        created.append(port.tap)
    return plan + _ensure_settings(port.tap, tap, port.network.mtu, master=port.network.bridge)


class RegistryError(NetworkError, ValueError):
    """``network.json`` exists but is not a registry (not JSON, not the expected objects)."""


def _load_registry(path):
    """The registry's data; a corrupt file is a RegistryError naming it: nothing may create or delete
    links on a record it cannot read, since deletion depends on it."""

    def corrupt(reason):
        return RegistryError("the host network registry %s cannot be read (%s): repair it, or move it aside once "
                             "the links it lists are known to be gone (only recorded links are ever deleted)"
                             % (path, reason))

    raw = read_bytes(path)
    if not raw:
        return {"links": {}, "instances": {}}
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise corrupt("not UTF-8 text")
    except ValueError as exc:
        raise corrupt("not JSON: %s" % exc)
    if not isinstance(data, dict):
        raise corrupt("a JSON %s, not an object" % type(data).__name__)
    data.setdefault("links", {})
    data.setdefault("instances", {})
    links, instances = data["links"], data["instances"]
    if not isinstance(links, dict) or not all(isinstance(entry, dict) for entry in links.values()):
        raise corrupt("'links' is not an object of objects")
    if not isinstance(instances, dict):
        raise corrupt("'instances' is not an object")
    for uuid, ports in instances.items():
        if not isinstance(ports, dict):
            raise corrupt("instances.%s is a JSON %s, not an object of ports" % (uuid, type(ports).__name__))
        for port_id, port in ports.items():
            fields = ("tap", "bridge", "uplink")
            if not isinstance(port, dict) or not all(isinstance(port.get(k), (str, type(None))) for k in fields):
                raise corrupt("instances.%s.%s is not an object with tap, bridge and uplink names" % (uuid, port_id))
    return data


class Registry:
    """``<instances_path>/network.json``: links we created and which instance's ports use which bridge.
    Read again under the lock, so two runs on one host never save over each other's records."""

    def __init__(self, instances_path):
        self.path = os.path.join(instances_path, REGISTRY_NAME)
        self.lock_path = os.path.join(locks_dir(instances_path), "network.lock")
        self.data = _load_registry(self.path)

    @contextlib.contextmanager
    def lock(self):
        os.makedirs(os.path.dirname(self.lock_path), mode=0o700, exist_ok=True)
        with FileLock(self.lock_path, timeout=60, what="host networking", step=STEP):
            self.data = _load_registry(self.path)
            yield self

    def save(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n", mode=0o600)

    def record(self, instance_uuid, ports, created, uplinks, alias_pending=False):
        for name in created:
            self.data["links"][name] = {"uplink": uplinks.get(name)}
            if alias_pending:
                self.data["links"][name]["alias_pending"] = True
        self.data["instances"][instance_uuid] = {
            p.id: {"tap": p.tap, "bridge": p.network.bridge, "uplink": p.network.vlan_interface} for p in ports
        }

    def confirm_alias(self, name):
        self.data["links"].get(name, {}).pop("alias_pending", None)

    def forget(self, instance_uuid, removed):
        self.data["instances"].pop(instance_uuid, None)
        for name in removed:
            self.data["links"].pop(name, None)

    def in_use(self, name, excluding=None):
        return any(
            name in (p["tap"], p["bridge"], p["uplink"])
            for uuid, ports in self.data["instances"].items()
            if uuid != excluding
            for p in ports.values()
        )


def plan_removal(links, registry, instance_uuid):
    """ip commands that delete this instance's taps, then bridges and VLAN devices nobody uses."""
    ports = registry.data["instances"].get(instance_uuid, {})
    plan, removed = [], []
    for port in ports.values():
        if ours(registry, port["tap"], links.show(port["tap"])):
            plan.append(["link", "delete", "dev", port["tap"]])
            removed.append(port["tap"])
    for bridge in sorted({p["bridge"] for p in ports.values()}):
        entry = registry.data["links"].get(bridge)
        if not ours(registry, bridge, links.show(bridge)) or registry.in_use(bridge, excluding=instance_uuid):
            continue
        uplink = entry.get("uplink")
        if set(links.members(bridge)) - set(removed) - {uplink}:
            continue  # something we do not know about is plugged in: leave the bridge alone
        plan.append(["link", "delete", "dev", bridge])
        removed.append(bridge)
        unused = not registry.in_use(uplink, excluding=instance_uuid)
        if uplink and ours(registry, uplink, links.show(uplink)) and unused:
            plan.append(["link", "delete", "dev", uplink])
            removed.append(uplink)
    return plan, removed
