# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""DiskFilter: Nova's former DiskFilter: (root + ephemeral) GiB + swap MiB <= total x ratio - used."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class DiskFilter(BaseHostFilter):
    name = "DiskFilter"
    label = "disk filter"

    def filter_all(self, hosts, spec):
        disk = spec.disk_mb
        return [
            h for h in hosts
            if h.total_usable_disk_gb * 1024 >= disk
            and h.total_usable_disk_gb * 1024 * h.disk_allocation_ratio - (h.total_usable_disk_gb * 1024 - h.free_disk_mb) >= disk
        ]
