# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""CoreFilter: Nova's former CoreFilter: vcpus <= vcpus_total x ratio - vcpus_used."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class CoreFilter(BaseHostFilter):
    name = "CoreFilter"
    label = "vCPU filter"

    def filter_all(self, hosts, spec):
        vcpus = spec.vcpus
        # Like Nova, a host that reports no vCPU count passes ("fail safe").
        return [
            h for h in hosts
            if not h.vcpus_total
            or (vcpus <= h.vcpus_total and h.vcpus_total * h.cpu_allocation_ratio - h.vcpus_used >= vcpus)
        ]
