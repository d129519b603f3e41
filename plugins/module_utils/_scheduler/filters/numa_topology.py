# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""NUMATopologyFilter (basic): flavor hw:numa_nodes=N needs N host cells that each hold vcpus/N and RAM/N.

A host's ``numa_topology`` is ``{"cells": [{"id", "cpus", "memory_mb", "cpu_usage", "memory_usage"}]}``
(``cpus`` a count or a list of CPU ids). Unlike Nova, no CPU pinning, huge pages or PCI locality. Each
placement adds its use to the cells it fits (``consume_cells``), so the next server of a request sees it.
"""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._instance import numa
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


def requested_nodes(spec):
    """The guest NUMA nodes the request asks for (0: none), split as domain_xml will give them to the guest."""
    try:
        return numa.requested_nodes(spec.extra_specs, spec.image_properties, spec.vcpus, spec.memory_mb)
    except ValueError as exc:
        raise SchedulerInputError(str(exc)) from None


def fitting_cells(host, spec, nodes):
    """The host cells that can hold one guest NUMA node of this request."""
    dedicated = spec.extra_specs.get("hw:cpu_policy") == "dedicated"
    cpu_ratio = 1.0 if dedicated else host.cpu_allocation_ratio
    want_cpus, want_mem = spec.vcpus // nodes, spec.memory_mb // nodes
    cells = []
    for cell in (host.numa_topology or {}).get("cells", []):
        cpus = cell.get("cpus", 0)
        cpus = len(cpus) if isinstance(cpus, (list, tuple)) else int(cpus)
        free_cpus = cpus * cpu_ratio - cell.get("cpu_usage", 0)
        free_mem = cell.get("memory_mb", 0) * host.ram_allocation_ratio - cell.get("memory_usage", 0)
        if want_cpus <= cpus and free_cpus >= want_cpus and free_mem >= want_mem:
            cells.append(cell)
    return cells


def consume_cells(host, spec):
    """Record the guest's NUMA use on the host's cells, as Nova's consume_from_request does with its fit.

    The guest's N nodes go to the first N cells that fit, each taking vcpus/N CPUs and memory_mb/N MiB.
    Without a NUMA request, or when nothing fits (the filter is off), the cells are left alone, as in Nova.
    """
    try:
        nodes = requested_nodes(spec)
    except SchedulerInputError:
        return  # NUMATopologyFilter refuses such a request when it runs; otherwise there is nothing to fit
    if not nodes:
        return
    cells = fitting_cells(host, spec, nodes)
    if len(cells) < nodes:
        return
    for cell in cells[:nodes]:
        cell["cpu_usage"] += spec.vcpus // nodes
        cell["memory_usage"] += spec.memory_mb // nodes


class NUMATopologyFilter(BaseHostFilter):
    name = "NUMATopologyFilter"
    label = "NUMA topology filter"

    def is_active(self, spec):
        return requested_nodes(spec) > 0

    def host_passes(self, host, spec):
        nodes = requested_nodes(spec)
        return len(fitting_cells(host, spec, nodes)) >= nodes
