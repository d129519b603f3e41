# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""A guest's NUMA nodes: ``hw:numa_nodes`` (flavor extra spec) or ``hw_numa_nodes`` (image property).

Split as Nova splits them when no ``hw:numa_cpus.N`` / ``hw:numa_mem.N`` are given: the vCPUs and the
memory evenly over the nodes, in order. The scheduler's NUMATopologyFilter places a server by this count,
and domain_xml gives the guest these cells, so a flavor that asks for NUMA nodes gets them or an error,
never a guest without them. The explicit per-node split is refused rather than ignored.
"""

from __future__ import annotations

FLAVOR_KEY = "hw:numa_nodes"
IMAGE_KEY = "hw_numa_nodes"
# Nova's explicit per-node split (hw:numa_cpus.0=0,1 ...), not supported here.
EXPLICIT_PREFIXES = ("hw:numa_cpus.", "hw:numa_mem.", "hw_numa_cpus.", "hw_numa_mem.")


def requested_nodes(extra_specs, image_properties, vcpus, memory_mb):
    """The number of guest NUMA nodes asked for, 0 when none is. ValueError (its message for the user) for a
    count that is not a whole number >= 1 dividing ``vcpus`` and ``memory_mb``, for a flavor and an image
    that ask for different counts, and for an explicit per-node split."""
    extra_specs, image_properties = extra_specs or {}, image_properties or {}
    # As text: keys from YAML may be numbers.
    explicit = sorted(str(key) for key in [*extra_specs, *image_properties] if str(key).startswith(EXPLICIT_PREFIXES))
    if explicit:
        raise ValueError("an explicit NUMA split (%s) is not supported: use %s alone, which splits vCPUs and memory "
                         "evenly" % (", ".join(explicit), FLAVOR_KEY))
    flavor_nodes = _count(extra_specs.get(FLAVOR_KEY), FLAVOR_KEY)
    image_nodes = _count(image_properties.get(IMAGE_KEY), IMAGE_KEY)
    if flavor_nodes and image_nodes and flavor_nodes != image_nodes:
        raise ValueError("the flavor's %s=%d and the image's %s=%d disagree (Nova refuses an image that changes the "
                         "flavor's NUMA nodes)" % (FLAVOR_KEY, flavor_nodes, IMAGE_KEY, image_nodes))
    nodes = flavor_nodes or image_nodes
    if nodes and (vcpus % nodes or memory_mb % nodes):
        raise ValueError("%s=%d must divide vcpus (%d) and memory_mb (%d)" % (FLAVOR_KEY, nodes, vcpus, memory_mb))
    return nodes


def _count(value, key):
    if value is None:
        return 0
    try:
        nodes = int(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a whole number, got %r" % (key, value)) from None
    if isinstance(value, bool) or nodes < 1 or str(nodes) != str(value).strip():
        raise ValueError("%s must be a whole number >= 1, got %r" % (key, value))
    return nodes


def guest_cells(nodes, vcpus, memory_mb):
    """``[(first vCPU, last vCPU, memory MiB)]``, one per node; ``[]`` for no nodes."""
    if not nodes:
        return []
    per_cpus, per_memory = vcpus // nodes, memory_mb // nodes
    return [(index * per_cpus, (index + 1) * per_cpus - 1, per_memory) for index in range(nodes)]
