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


def _number(name, value, where, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = kind(value)
            except ValueError:
                raise SchedulerInputError("%s: %s must be a number, got %r" % (where, name, value))
        else:
            raise SchedulerInputError("%s: %s must be a number, got %r" % (where, name, value))
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise SchedulerInputError("%s: %s must be a whole number, got %r" % (where, name, value))
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise SchedulerInputError("%s: %s must be finite, got %r" % (where, name, value))
    return value


def parse_time(value):
    """Seconds since the epoch from an epoch number, ISO 8601 string or datetime (naive = UTC)."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
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
            self.free_disk_mb = _number("total_usable_disk_gb", self.total_usable_disk_gb, where) * 1024
        self.instances = dict.fromkeys(str(u) for u in self.instances)
        if self.num_instances is None:
            self.num_instances = len(self.instances)
        for key in _INT_FIELDS:
            setattr(self, key, _number(key, getattr(self, key), where))
        for key in _RATIO_FIELDS:
            ratio = _number(key, getattr(self, key), where, float)
            if ratio < 0:
                raise SchedulerInputError("%s: %s must not be negative" % (where, key))
            setattr(self, key, ratio)
        for key in ("total_usable_ram_mb", "total_usable_disk_gb", "vcpus_total", "hypervisor_version"):
            if getattr(self, key) < 0:
                raise SchedulerInputError("%s: %s must not be negative" % (where, key))
        self.availability_zone = str(self.availability_zone)
        self.aggregates = [_aggregate(a, where) for a in self.aggregates]
        self.aggregate_metadata = _metadata_by_key(self.aggregates)
        self.supported_instances = [tuple(str(x) if x is not None else None for x in s) for s in self.supported_instances]
        if not isinstance(self.metrics, dict):
            raise SchedulerInputError("%s: metrics must be a dict of name: number" % where)
        service = dict(SERVICE_DEFAULTS)
        service.update(self.service or {})
        self.service = service
        self.last_seen_up = parse_time(service["last_seen_up"])
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

    def copy(self):
        other = HostState()
        for key in HostState.__slots__:
            setattr(other, key, getattr(self, key))
        other.instances = dict(self.instances)
        return other

    def to_dict(self):
        data = {key: getattr(self, key) for key in REQUIRED + tuple(DEFAULTS)}
        data["instances"] = list(self.instances)
        data["supported_instances"] = [list(s) for s in self.supported_instances]
        return data


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
        raise SchedulerInputError("hosts must be a list of host-state dicts")
    states = [HostState.from_dict(h, i) for i, h in enumerate(hosts)]
    seen = set()
    for s in states:
        if s.hostname in seen:
            raise SchedulerInputError("hostname %s appears twice" % s.hostname)
        seen.add(s.hostname)
    return states
