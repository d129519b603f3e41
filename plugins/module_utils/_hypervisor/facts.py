# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Gather a hypervisor's host state (Nova's HostState field names) from libvirt and the instances filesystem.

Accounting follows Nova's resource tracker: RAM and vCPUs in use are what the host's domains are given
(plus what is reserved for the host), not what the guests touch right now; disk is the filesystem that
holds ``instances_path``. Live figures (free memory, load) go to ``metrics`` for the MetricsWeigher.
"""

from __future__ import annotations

import datetime
import os
import re
import xml.etree.ElementTree as ET

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.libvirt_uri import validate_libvirt_uri
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import MAX_INT, validate_number
from ansible_collections.nimbus.compute.plugins.module_utils._common.paths import validate_uuid
from ansible_collections.nimbus.compute.plugins.module_utils._common.text import has_control_character
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import HostState

STEP = "hypervisor_info"
MIB = 1024 * 1024
GIB = 1024 * MIB


class HypervisorError(NimbusError):
    step = STEP
    retryable = True


def _open(uri):
    try:
        import libvirt
    except ImportError:
        raise HypervisorError("the Python libvirt bindings (libvirt-python) are not installed on this host")
    try:
        return libvirt.openReadOnly(uri)
    except libvirt.libvirtError as err:
        raise HypervisorError("cannot connect to libvirt at %s: %s" % (uri, err))


def parse_capabilities(xml):
    """cpu_info, supported_instances ([arch, hv_type, vm_mode]) and numa_topology from getCapabilities()."""
    root = ET.fromstring(xml)
    cpu = root.find("host/cpu")
    cpu_info = {"arch": cpu.findtext("arch") if cpu is not None else None}
    if cpu is not None:
        for key in ("model", "vendor"):
            if cpu.findtext(key):
                cpu_info[key] = cpu.findtext(key)
        topo = cpu.find("topology")
        if topo is not None:
            cpu_info["topology"] = {k: int(topo.get(k)) for k in ("sockets", "cores", "threads") if topo.get(k)}
        cpu_info["features"] = sorted({f.get("name") or f.tag for f in cpu.findall("feature")} |
                                      {f.tag for f in cpu.findall("features/*")})
    supported = []
    for guest in root.findall("guest"):
        vm_mode = guest.findtext("os_type")
        arch = guest.find("arch")
        if arch is None:
            continue
        for domain in arch.findall("domain"):
            entry = [arch.get("name"), domain.get("type"), vm_mode]
            if entry not in supported:
                supported.append(entry)
    cells = []
    for cell in root.findall("host/topology/cells/cell"):
        memory = cell.find("memory")
        kib = int(memory.text) if memory is not None else 0
        cells.append({"id": int(cell.get("id")), "cpus": [int(c.get("id")) for c in cell.findall("cpus/cpu")],
                      "memory_mb": kib // 1024, "cpu_usage": 0, "memory_usage": 0})
    return cpu_info, supported, ({"cells": cells} if cells else None)


def cpu_traits(cpu_info):
    """os-traits style names for x86 CPU flags (HW_CPU_X86_AVX2 ...), as Nova's libvirt driver reports them."""
    if cpu_info.get("arch") not in ("x86_64", "i686"):
        return []
    return ["HW_CPU_X86_" + f.upper().replace(".", "_").replace("-", "_") for f in cpu_info.get("features", [])]


def pci_vendor_product(device_xml):
    """(vendor_id, product_id) as Nova writes them (4 hex digits, no 0x) from a node device's XML, or None."""
    cap = ET.fromstring(device_xml).find("capability[@type='pci']")
    if cap is None or cap.find("vendor") is None or cap.find("product") is None:
        return None
    return tuple(cap.find(tag).get("id", "").lower().removeprefix("0x") for tag in ("vendor", "product"))


# Placement's trait names (os-traits): CUSTOM_SSD, HW_CPU_X86_AVX2 ...
TRAIT_RE = re.compile(r"[A-Z0-9_]{1,255}\Z")
PCI_SPEC_KEYS = ("vendor_id", "product_id")
PCI_ID_RE = re.compile(r"[0-9a-fA-F]{4}\Z")


def _validate_labels(availability_zone, traits, pci_device_spec):
    """What the scheduler matches on, checked before it is published as a fact that never matches."""
    # Nova refuses ':' in a zone name (it separates zone and host in a forced placement).
    if (not isinstance(availability_zone, str) or not availability_zone.strip() or ":" in availability_zone
            or has_control_character(availability_zone)):
        raise ValidationError("availability_zone must be a non-empty name without ':' or control characters, got %r"
                              % (availability_zone,), step=STEP)
    for trait in traits or []:
        if not isinstance(trait, str) or not TRAIT_RE.match(trait):
            raise ValidationError("trait %r is not a trait name (upper-case letters, digits and _, e.g. CUSTOM_SSD)" % (trait,),
                                  step=STEP)
    for spec in pci_device_spec or []:
        unknown = sorted(str(key) for key in (spec if isinstance(spec, dict) else {}) if key not in PCI_SPEC_KEYS)
        if not isinstance(spec, dict) or unknown:
            raise ValidationError("pci_device_spec entries are {vendor_id, product_id}, got %r" % (spec,), step=STEP)
        for key in PCI_SPEC_KEYS:
            if key in spec and not PCI_ID_RE.match(str(spec[key])):
                raise ValidationError("pci_device_spec %s %r is not 4 hex digits" % (key, spec[key]), step=STEP)


def pci_pools(device_xmls, device_spec):
    """Nova-style pci_stats pools: how many host PCI devices match each vendor/product of ``device_spec``."""
    counts = {}
    for xml in device_xmls:
        ids = pci_vendor_product(xml)
        if ids is None:
            continue
        for spec in device_spec:
            wanted = (str(spec.get("vendor_id", ids[0])).lower(), str(spec.get("product_id", ids[1])).lower())
            if wanted == ids:
                counts[ids] = counts.get(ids, 0) + 1
                break
    return [{"vendor_id": v, "product_id": p, "count": n} for (v, p), n in sorted(counts.items())]


def _pci_device_xmls(conn):
    import libvirt

    return [dev.XMLDesc(0) for dev in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)]


def domain_usage(conn):
    """UUIDs, RAM (MiB, the domains' maximum) and vCPUs given to every domain defined on the host."""
    import libvirt

    uuids, ram_mb, vcpus = [], 0, 0
    for dom in conn.listAllDomains(0):
        try:
            _state, max_kib, _cur, nr_vcpus, _cpu_time = dom.info()
            uuid = dom.UUIDString().lower()
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # a transient domain went away while we counted
            raise
        uuids.append(uuid)
        ram_mb += max_kib // 1024
        vcpus += nr_vcpus
    return uuids, ram_mb, vcpus


def builds_in_progress(instances_path, domain_uuids):
    """Instance directories without a domain yet: builds under way (Nova's num_io_ops counts them)."""
    try:
        names = os.listdir(instances_path)
    except FileNotFoundError:
        return 0
    count = 0
    for name in names:
        try:
            uuid = validate_uuid(name)
        except ValidationError:
            continue
        if uuid not in domain_uuids and os.path.exists(os.path.join(instances_path, name, "instance.json")):
            count += 1
    return count


def disk_space(instances_path):
    """(total bytes, available bytes) of the filesystem that holds instances_path (or would, once created)."""
    path = os.path.abspath(instances_path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def gather(libvirt_uri, instances_path, reserved_host_memory_mb=512, reserved_host_disk_mb=0, reserved_host_cpus=0,
           ram_allocation_ratio=1.0, disk_allocation_ratio=1.0, cpu_allocation_ratio=4.0, availability_zone="nova",
           aggregates=None, traits=None, disabled=False, pci_device_spec=None, now=None):
    """The nimbus_hypervisor fact for this host."""
    for name, value in (("reserved_host_memory_mb", reserved_host_memory_mb), ("reserved_host_disk_mb", reserved_host_disk_mb),
                        ("reserved_host_cpus", reserved_host_cpus)):
        validate_number(value, name, STEP, minimum=0, maximum=MAX_INT)
    # Above 0, as instance_claim requires: a ratio of 0 gave the scheduler a host with no capacity at all,
    # refused only later, server by server, by the claim.
    for name, value in (("ram_allocation_ratio", ram_allocation_ratio), ("disk_allocation_ratio", disk_allocation_ratio),
                        ("cpu_allocation_ratio", cpu_allocation_ratio)):
        validate_number(value, name, STEP, maximum=MAX_INT, positive=True)
    validate_libvirt_uri(libvirt_uri, STEP)
    paths.validate_instances_path(instances_path, step=STEP)
    _validate_labels(availability_zone, traits, pci_device_spec)
    conn = _open(libvirt_uri)
    try:
        _model, memory_mb, cpus, _mhz, _nodes, _sockets, _cores, _threads = conn.getInfo()
        cpu_info, supported, numa = parse_capabilities(conn.getCapabilities())
        uuids, domains_ram_mb, domains_vcpus = domain_usage(conn)
        free_memory_mb = conn.getFreeMemory() // MIB
        pci_stats = pci_pools(_pci_device_xmls(conn), pci_device_spec) if pci_device_spec else []
        facts = {
            "hostname": conn.getHostname(),
            "hypervisor_type": conn.getType(),
            "hypervisor_version": conn.getVersion(),
        }
    except Exception as err:  # libvirt.libvirtError, without importing libvirt at module load
        if isinstance(err, NimbusError):
            raise
        raise HypervisorError("libvirt at %s: %s" % (libvirt_uri, err))
    finally:
        conn.close()
    disk_total, disk_free = disk_space(instances_path)
    total_disk_gb = disk_total // GIB
    now = now or datetime.datetime.now(datetime.UTC)
    facts.update({
        "total_usable_ram_mb": memory_mb,
        "free_ram_mb": memory_mb - reserved_host_memory_mb - domains_ram_mb,
        "total_usable_disk_gb": total_disk_gb,
        "free_disk_mb": min(disk_free // MIB, total_disk_gb * 1024) - reserved_host_disk_mb,
        "vcpus_total": cpus,
        "vcpus_used": reserved_host_cpus + domains_vcpus,
        "ram_allocation_ratio": float(ram_allocation_ratio),
        "disk_allocation_ratio": float(disk_allocation_ratio),
        "cpu_allocation_ratio": float(cpu_allocation_ratio),
        "availability_zone": availability_zone,
        "aggregates": list(aggregates or []),
        "instances": uuids,
        "num_instances": len(uuids),
        "num_io_ops": builds_in_progress(instances_path, set(uuids)),
        "supported_instances": supported,
        "traits": sorted(set(traits or []) | set(cpu_traits(cpu_info))),
        # Nothing on the host records a failed build yet: the server role's rollback removes the instance
        # directory, journal included, and reports the failure to the play only. So 0 until such a record
        # exists; the BuildFailureWeigher still acts on values given through the lookup's hosts= or a
        # nimbus_hypervisor host variable.
        "failed_builds": 0,
        "numa_topology": numa,
        "metrics": {"memory.free_mb": free_memory_mb, "disk.free_mb": disk_free // MIB},
        "pci_stats": pci_stats,
        "cpu_info": cpu_info,
        # The gather time: the schedule lookup's ComputeFilter drops the host once it is older than
        # service_down_time (60 s by default), and says the facts are stale when that empties the list.
        "service": {"disabled": bool(disabled), "forced_down": False, "last_seen_up": now.isoformat()},
    })
    try:
        HostState.from_dict(facts)  # what the schedule lookup will accept
    except SchedulerInputError as err:
        raise ValidationError(err.msg, step=STEP)
    return facts
