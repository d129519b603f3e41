# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""RamFilter: Nova's former RamFilter (today a Placement check): requested <= total x ratio - used."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class RamFilter(BaseHostFilter):
    name = "RamFilter"
    label = "RAM filter"

    def filter_all(self, hosts, spec):
        ram = spec.memory_mb
        # No overcommit of a server against itself: total must hold it; then usable = limit - used.
        return [
            h for h in hosts
            if h.total_usable_ram_mb >= ram
            and h.total_usable_ram_mb * h.ram_allocation_ratio - (h.total_usable_ram_mb - h.free_ram_mb) >= ram
        ]
