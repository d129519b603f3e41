# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""HostState: what the scheduler knows about one hypervisor, in Nova's field names.

``hypervisor_info`` returns exactly these fields as the ``nimbus_hypervisor`` fact and the
``schedule`` lookup's ``hosts`` option takes them, so our state can be compared with Nova's
field by field. Missing optional fields get the defaults in ``DEFAULTS``.
"""

from __future__ import annotations

import datetime
import math

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.numa_topology import consume_cells

# Nova's initial allocation ratios (initial_cpu/ram/disk_allocation_ratio).
INITIAL_CPU_ALLOCATION_RATIO = 4.0
INITIAL_RAM_ALLOCATION_RATIO = 1.0
INITIAL_DISK_ALLOCATION_RATIO = 1.0
DEFAULT_AVAILABILITY_ZONE = "nova"  # Nova's default_availability_zone

REQUIRED = ("hostname", "total_usable_ram_mb", "total_usable_disk_gb", "vcpus_total")

# Optional fields and their defaults; None for free_* means "everything is free".
DEFAULTS = {
    "free_ram_mb": None,
    "free_disk_mb": None,
    "vcpus_used": 0,
    "ram_allocation_ratio": INITIAL_RAM_ALLOCATION_RATIO,
    "disk_allocation_ratio": INITIAL_DISK_ALLOCATION_RATIO,
    "cpu_allocation_ratio": INITIAL_CPU_ALLOCATION_RATIO,
    "availability_zone": DEFAULT_AVAILABILITY_ZONE,
    "aggregates": [],
    "num_instances": None,  # len(instances)
    "num_io_ops": 0,
    "hypervisor_type": "QEMU",
    "hypervisor_version": 0,
    "supported_instances": [],
    "traits": [],
    "instances": [],
    "failed_builds": 0,
    "numa_topology": None,
    "metrics": {},
    "pci_stats": [],
    "cpu_info": {},
    "stats": {},
    "service": {},
}

SERVICE_DEFAULTS = {"disabled": False, "forced_down": False, "last_seen_up": None}

_INT_FIELDS = ("total_usable_ram_mb", "free_ram_mb", "total_usable_disk_gb", "free_disk_mb", "vcpus_total",
               "vcpus_used", "num_instances", "num_io_ops", "hypervisor_version", "failed_builds")
_RATIO_FIELDS = ("ram_allocation_ratio", "disk_allocation_ratio", "cpu_allocation_ratio")


# Bounds on host-state numbers, so that no weight can overflow to inf or NaN (a NaN weight made its host win):
# counts and sizes (MiB, GiB, vCPUs, counters, metrics) stay within 2**53, where floats are still exact; ratios
# within MAX_RATIO. The largest raw weight is then 2**53 x 1e6 (CPUWeigher), far from float's limit, and
# normalising and multiplying by a bounded multiplier (weighers.base.MAX_MULTIPLIER) stays finite.
MAX_QUANTITY = 2**53
MAX_RATIO = 1e6
# total_usable_disk_gb x 1024 is the default free_disk_mb, which must itself stay within MAX_QUANTITY.
MAX_DISK_GB = MAX_QUANTITY // 1024
_NON_NEGATIVE = ("total_usable_ram_mb", "total_usable_disk_gb", "vcpus_total", "vcpus_used", "num_instances",
                 "num_io_ops", "hypervisor_version", "failed_builds")
_LIMITS = {"total_usable_disk_gb": MAX_DISK_GB}
MAX_EPOCH = 253402300800  # 10000-01-01T00:00:00Z in epoch seconds


def show(value):
    """A number for a message; a huge int is not spelt out (str() refuses one of more than 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**15:
        return "%sabout 10**%d" % ("-" if value < 0 else "", int(value.bit_length() * math.log10(2)))
    return repr(value)


def _number(name, value, where, kind=int, minimum=None, limit=MAX_QUANTITY):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = kind(value)
            except ValueError:
                raise SchedulerInputError("%s: %s must be a number, got %r" % (where, name, value[:50]))
        else:
            raise SchedulerInputError("%s: %s must be a number, got %r" % (where, name, value))
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise SchedulerInputError("%s: %s must be a whole number, got %r" % (where, name, value))
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise SchedulerInputError("%s: %s must be finite, got %r" % (where, name, value))
    if minimum is not None and value < minimum:
        raise SchedulerInputError("%s: %s must not be negative, got %s" % (where, name, show(value)))
    if not -limit <= value <= limit:
        raise SchedulerInputError("%s: %s is too large (%s), at most %s in absolute value"
                                  % (where, name, show(value), "%g" % limit if isinstance(limit, float) else limit))
    return value


def parse_time(value):
    """Seconds since the epoch from an epoch number, ISO 8601 string or datetime (naive = UTC)."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        if value is not None and not -MAX_EPOCH <= value <= MAX_EPOCH:  # also NaN; math.isfinite(10**400) overflows
            raise SchedulerInputError("last_seen_up %s is not an ISO 8601 time or epoch seconds (at most %d, the end "
                                      "of year 9999)" % (show(value), MAX_EPOCH))
        return value
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise SchedulerInputError("last_seen_up %r is not an ISO 8601 time or epoch seconds" % value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    raise SchedulerInputError("last_seen_up %r is not an ISO 8601 time or epoch seconds" % (value,))


class HostState:
    """One hypervisor; ``consume`` applies a placement like Nova's consume_from_request."""

    __slots__ = tuple(REQUIRED) + tuple(DEFAULTS) + ("index", "aggregate_metadata", "last_seen_up")

    @property
    def host(self):
        return self.hostname

    @classmethod
    def from_dict(cls, data, index=0):
        """Validate one host-state dict (a ``nimbus_hypervisor`` fact) and build a HostState."""
        where = "host %d" % index
        if not isinstance(data, dict):
            raise SchedulerInputError("%s: a host state must be a dict, got %s" % (where, type(data).__name__))
        missing = [k for k in REQUIRED if data.get(k) is None]
        if missing:
            raise SchedulerInputError("%s: missing required field(s) %s" % (where, ", ".join(missing)))
        unknown = sorted(set(data) - set(REQUIRED) - set(DEFAULTS))
        if unknown:
            raise SchedulerInputError("%s: unknown field(s) %s" % (where, ", ".join(unknown)))
        self = cls()
        self.index = index
        for key in REQUIRED:
            setattr(self, key, data[key])
        for key, default in DEFAULTS.items():
            value = data.get(key)
            setattr(self, key, default if value is None else value)
        if not isinstance(self.hostname, str) or not self.hostname:
            raise SchedulerInputError("%s: hostname must be a non-empty string" % where)
        where = "host %s" % self.hostname
        if self.free_ram_mb is None:
            self.free_ram_mb = self.total_usable_ram_mb
        if self.free_disk_mb is None:
            self.free_disk_mb = _number("total_usable_disk_gb", self.total_usable_disk_gb, where, minimum=0,
                                        limit=MAX_DISK_GB) * 1024
        self.instances = dict.fromkeys(_strings("instances", self.instances, where, "server UUIDs"))
        if self.num_instances is None:
            self.num_instances = len(self.instances)
        for key in _INT_FIELDS:
            setattr(self, key, _number(key, getattr(self, key), where, minimum=0 if key in _NON_NEGATIVE else None,
                                       limit=_LIMITS.get(key, MAX_QUANTITY)))
        for key in _RATIO_FIELDS:
            setattr(self, key, _number(key, getattr(self, key), where, float, minimum=0, limit=MAX_RATIO))
        self.availability_zone = str(self.availability_zone)
        if not isinstance(self.aggregates, (list, tuple)):
            raise SchedulerInputError("%s: aggregates must be a list of {name, metadata}" % where)
        self.aggregates = [_aggregate(a, where) for a in self.aggregates]
        self.aggregate_metadata = _metadata_by_key(self.aggregates)
        self.supported_instances = _supported_instances(self.supported_instances, where)
        self.traits = _strings("traits", self.traits, where, "trait names")
        self.metrics = _metrics(self.metrics, where)
        self.pci_stats = _pci_stats(self.pci_stats, where)
        self.numa_topology = _numa_topology(self.numa_topology, where)
        self.cpu_info = _cpu_info(self.cpu_info, where)
        if not isinstance(self.stats, dict):
            raise SchedulerInputError("%s: stats must be a dict, got %s" % (where, type(self.stats).__name__))
        self.service = _service(self.service, where)
        try:
            self.last_seen_up = parse_time(self.service["last_seen_up"])
        except SchedulerInputError as err:
            raise SchedulerInputError("%s: service.%s" % (where, err.msg))
        return self

    def aggregate_values(self, key):
        """Nova's aggregate_values_from_key: the raw values of ``key`` over the host's aggregates."""
        return {a["metadata"][key] for a in self.aggregates if key in a["metadata"]}

    def is_up(self, now, service_down_time):
        """Nova's ComputeFilter rule: enabled, not forced down, heard from within service_down_time."""
        if self.service["disabled"] or self.service["forced_down"]:
            return False
        if self.last_seen_up is None:
            return True
        return abs(now - self.last_seen_up) <= service_down_time

    def consume(self, spec, instance_uuid):
        """Nova's consume_from_request, plus recording the new server for the group filters."""
        self.free_ram_mb -= spec.memory_mb
        self.free_disk_mb -= (spec.root_gb + spec.ephemeral_gb) * 1024
        self.vcpus_used += spec.vcpus
        self.num_instances += 1
        self.num_io_ops += 1
        self.instances[instance_uuid] = None
        if self.numa_topology and self.numa_topology["cells"]:
            consume_cells(self, spec)

    def copy(self):
        other = HostState()
        for key in HostState.__slots__:
            setattr(other, key, getattr(self, key))
        other.instances = dict(self.instances)
        if self.numa_topology is not None:  # consume() changes cell usage
            other.numa_topology = dict(self.numa_topology, cells=[dict(c) for c in self.numa_topology["cells"]])
        return other

    def to_dict(self):
        data = {key: getattr(self, key) for key in REQUIRED + tuple(DEFAULTS)}
        data["instances"] = list(self.instances)
        data["supported_instances"] = [list(s) for s in self.supported_instances]
        return data


def _kind(value):
    return type(value).__name__


def _strings(name, value, where, what):
    if value in ([], ()):  # the common case, cheaply (10,000 hosts are built per lookup)
        return []
    if not isinstance(value, (list, tuple)):
        raise SchedulerInputError("%s: %s must be a list of %s, got %s" % (where, name, what, _kind(value)))
    for item in value:
        if not isinstance(item, str):
            raise SchedulerInputError("%s: %s must be a list of %s, got an item %r" % (where, name, what, item))
    return list(value)


def _supported_instances(value, where):
    if value == []:
        return []
    shape = "a list of [arch, hv_type, vm_mode]"
    if not isinstance(value, (list, tuple)):
        raise SchedulerInputError("%s: supported_instances must be %s, got %s" % (where, shape, _kind(value)))
    out = []
    for entry in value:
        if (not isinstance(entry, (list, tuple)) or len(entry) != 3
                or not all(x is None or isinstance(x, str) for x in entry)):
            raise SchedulerInputError("%s: supported_instances must be %s (strings or null), got an entry %r"
                                      % (where, shape, entry))
        out.append(tuple(entry))
    return out


def _metrics(value, where):
    if value == {}:
        return {}
    if not isinstance(value, dict):
        raise SchedulerInputError("%s: metrics must be a dict of name: number, got %s" % (where, _kind(value)))
    return {str(k): _number("metrics.%s" % k, v, where, float) for k, v in value.items()}


def _pci_stats(value, where):
    if value == []:
        return []
    if not isinstance(value, (list, tuple)):
        raise SchedulerInputError("%s: pci_stats must be a list of pools {count, ...}, got %s" % (where, _kind(value)))
    pools = []
    for pool in value:
        if not isinstance(pool, dict):
            raise SchedulerInputError("%s: pci_stats must be a list of pools {count, ...}, got an entry %r" % (where, pool))
        count = _number("pci_stats count", pool.get("count", 0), where, minimum=0)
        pools.append(dict(pool, count=count))
    return pools


_CELL_NUMBERS = ("memory_mb", "cpu_usage", "memory_usage")


def _numa_topology(value, where):
    """``{"cells": [{id, cpus (count or CPU ids), memory_mb, cpu_usage, memory_usage}]}``, copied (consume changes it)."""
    if value is None:
        return None
    shape = 'numa_topology must be {"cells": [{id, cpus, memory_mb, cpu_usage, memory_usage}]}'
    if not isinstance(value, dict) or not isinstance(value.get("cells", []), (list, tuple)):
        raise SchedulerInputError("%s: %s, got %r" % (where, shape, value))
    cells = []
    for n, given in enumerate(value.get("cells", [])):
        if not isinstance(given, dict):
            raise SchedulerInputError("%s: %s, got a cell %r" % (where, shape, given))
        cell = dict(given)
        cpus = cell.get("cpus", 0)
        if isinstance(cpus, (list, tuple)):
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus):
                raise SchedulerInputError("%s: numa_topology cell %d cpus must be a count or a list of CPU ids" % (where, n))
            cell["cpus"] = list(cpus)
        else:
            cell["cpus"] = _number("numa_topology cell %d cpus" % n, cpus, where, minimum=0)
        for key in _CELL_NUMBERS:
            cell[key] = _number("numa_topology cell %d %s" % (n, key), cell.get(key, 0), where, minimum=0)
        cells.append(cell)
    return dict(value, cells=cells)


def _cpu_info(value, where):
    if value == {}:
        return value
    if not isinstance(value, dict):
        raise SchedulerInputError("%s: cpu_info must be a dict, got %s" % (where, _kind(value)))
    maxphysaddr = value.get("maxphysaddr")
    if maxphysaddr is not None:
        if not isinstance(maxphysaddr, dict):
            raise SchedulerInputError("%s: cpu_info.maxphysaddr must be a dict {mode, bits}, got %r" % (where, maxphysaddr))
        if maxphysaddr.get("bits") is not None:
            bits = _number("cpu_info.maxphysaddr.bits", maxphysaddr["bits"], where)
            value = dict(value, maxphysaddr=dict(maxphysaddr, bits=bits))
    return value


def _service(value, where):
    if value == {}:
        return dict(SERVICE_DEFAULTS)
    shape = "service must be a dict {disabled, forced_down, last_seen_up}"
    if not isinstance(value, dict):
        raise SchedulerInputError("%s: %s, got %s" % (where, shape, _kind(value)))
    unknown = sorted(set(value) - set(SERVICE_DEFAULTS))
    if unknown:
        raise SchedulerInputError("%s: unknown service field(s) %s; %s" % (where, ", ".join(map(str, unknown)), shape))
    service = dict(SERVICE_DEFAULTS)
    service.update({k: v for k, v in value.items() if v is not None})
    for key in ("disabled", "forced_down"):
        if not isinstance(service[key], bool):
            raise SchedulerInputError("%s: service.%s must be true or false, got %r" % (where, key, service[key]))
    return service


def _aggregate(agg, where):
    if not isinstance(agg, dict) or not isinstance(agg.get("metadata", {}), dict):
        raise SchedulerInputError("%s: each aggregate must be a dict {name, metadata}" % where)
    return {"name": str(agg.get("name", "")), "metadata": {str(k): str(v) for k, v in agg.get("metadata", {}).items()}}


def _metadata_by_key(aggregates):
    """Nova's aggregate_metadata_get_by_host: key -> set of comma-separated, stripped values."""
    metadata = {}
    for agg in aggregates:
        for key, value in agg["metadata"].items():
            metadata.setdefault(key, set()).update(x.strip() for x in value.split(","))
    return metadata


def host_states(hosts):
    """Build HostStates from a list of dicts; hostnames must be unique."""
    if not isinstance(hosts, (list, tuple)):
        raise SchedulerInputError("hosts must be a list of host-state dicts, got %s" % _kind(hosts))
    states = [HostState.from_dict(h, i) for i, h in enumerate(hosts)]
    seen = set()
    for s in states:
        if s.hostname in seen:
            raise SchedulerInputError("hostname %s appears twice" % s.hostname)
        seen.add(s.hostname)
    return states
