# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Every filter and weigher by name (Nova's class names), listed explicitly, and the defaults."""

from __future__ import annotations

import math

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.aggregate_instance_extra_specs import (
    AggregateInstanceExtraSpecsFilter,
)
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.aggregate_multitenancy_isolation import (
    AggregateMultiTenancyIsolation,
)
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.availability_zone import AvailabilityZoneFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.compute import ComputeFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.compute_capabilities import (
    ComputeCapabilitiesFilter,
)
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.core import CoreFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.different_host import DifferentHostFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.disk import DiskFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.image_properties import ImagePropertiesFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.io_ops import IoOpsFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.jmespath_rule import JMESPathFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.num_instances import NumInstancesFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.numa_topology import NUMATopologyFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.ram import RamFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.same_host import SameHostFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.server_group_affinity import (
    ServerGroupAffinityFilter,
)
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.server_group_anti_affinity import (
    ServerGroupAntiAffinityFilter,
)
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import MAX_MULTIPLIER
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.build_failure import BuildFailureWeigher
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.cpu import CPUWeigher
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.disk import DiskWeigher
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.hypervisor_version import (
    HypervisorVersionWeigher,
)
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.io_ops import IoOpsWeigher
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.metrics import MetricsWeigher
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.num_instances import NumInstancesWeigher
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.pci import PCIWeigher
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.ram import RAMWeigher
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.soft_affinity import (
    ServerGroupSoftAffinityWeigher,
)
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.soft_anti_affinity import (
    ServerGroupSoftAntiAffinityWeigher,
)

FILTERS = {cls.name: cls for cls in (
    RamFilter, DiskFilter, CoreFilter, AvailabilityZoneFilter, ComputeFilter, ComputeCapabilitiesFilter,
    ImagePropertiesFilter, ServerGroupAntiAffinityFilter, ServerGroupAffinityFilter, AggregateInstanceExtraSpecsFilter,
    AggregateMultiTenancyIsolation, SameHostFilter, DifferentHostFilter, NumInstancesFilter, IoOpsFilter,
    NUMATopologyFilter, JMESPathFilter,
)}

# Registry order (documentation, explicit lists); DEFAULT_WEIGHERS below is the order Nova sums them in.
WEIGHERS = {cls.name: cls for cls in (
    RAMWeigher, DiskWeigher, CPUWeigher, IoOpsWeigher, NumInstancesWeigher, HypervisorVersionWeigher,
    BuildFailureWeigher, ServerGroupSoftAffinityWeigher, ServerGroupSoftAntiAffinityWeigher, MetricsWeigher, PCIWeigher,
)}

# Nova 34: the Placement checks (RAM, disk, vCPU, availability zone) then its default enabled_filters.
DEFAULT_FILTERS = (
    "RamFilter", "DiskFilter", "CoreFilter", "AvailabilityZoneFilter",
    "ComputeFilter", "ComputeCapabilitiesFilter", "ImagePropertiesFilter",
    "ServerGroupAntiAffinityFilter", "ServerGroupAffinityFilter",
)
# Nova 34's default weight_classes (all_weighers) in the order its loader returns them, which is the order
# it sums the weights in: another order can flip a near-tie (0.1 + 0.2 + 0.3 != 0.3 + 0.2 + 0.1).
# Not here: ImagePropertiesWeigher (multiplier 0.0 by default) and CrossCellWeigher (moves only).
DEFAULT_WEIGHERS = (
    "NumInstancesWeigher", "MetricsWeigher", "CPUWeigher", "BuildFailureWeigher", "ServerGroupSoftAffinityWeigher",
    "ServerGroupSoftAntiAffinityWeigher", "RAMWeigher", "DiskWeigher", "PCIWeigher", "IoOpsWeigher",
    "HypervisorVersionWeigher",
)

# Filters whose hint would otherwise be ignored silently: enabled when their hint or option is given.
HINT_FILTERS = {"same_host": "SameHostFilter", "different_host": "DifferentHostFilter", "query": "JMESPathFilter"}


def _pick(names, known, what):
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise SchedulerInputError("%s must be a list of names" % what)
    for name in names:
        if not isinstance(name, str):  # Ansible does not enforce elements: str, and a dict is unhashable
            raise SchedulerInputError("%s names must be strings, got %r" % (what, name))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SchedulerInputError("unknown %s %s; known: %s" % (what, ", ".join(map(str, unknown)), ", ".join(known)))
    return [known[n] for n in dict.fromkeys(names)]


def filter_classes(names=None):
    return _pick(DEFAULT_FILTERS if names is None else names, FILTERS, "filter")


def weigher_classes(names=None):
    return _pick(DEFAULT_WEIGHERS if names is None else names, WEIGHERS, "weigher")


def multiplier_for(cls, multipliers):
    """A multiplier override by weigher name (RAMWeigher) or Nova option name (ram_weight_multiplier)."""
    for key in (cls.name, cls.multiplier_option):
        if key in multipliers:
            value = multipliers[key]
            try:
                value = float(value) if not isinstance(value, bool) else None
            except OverflowError:  # float(10**400)
                raise SchedulerInputError("weight multiplier %s is too large, at most %g in absolute value"
                                          % (key, MAX_MULTIPLIER))
            except (TypeError, ValueError):
                value = None
            if value is None or not math.isfinite(value):
                raise SchedulerInputError("weight multiplier %s must be a finite number, got %r" % (key, multipliers[key]))
            if abs(value) > MAX_MULTIPLIER:
                raise SchedulerInputError("weight multiplier %s is too large (%g), at most %g in absolute value"
                                          % (key, value, MAX_MULTIPLIER))
            if cls.minimum_multiplier is not None and value < cls.minimum_multiplier:
                raise SchedulerInputError("weight multiplier %s must be >= %s" % (key, cls.minimum_multiplier))
            return value
    return None


def check_multiplier_names(multipliers):
    known = set(WEIGHERS) | {cls.multiplier_option for cls in WEIGHERS.values()}
    unknown = sorted(set(multipliers) - known)
    if unknown:
        raise SchedulerInputError("unknown weight multiplier(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(known))))
