# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""NumInstancesFilter: fewer than max_instances_per_host (50) servers on the host."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class NumInstancesFilter(BaseHostFilter):
    name = "NumInstancesFilter"
    label = "instance count filter"

    def filter_all(self, hosts, spec):
        limit = self.config["max_instances_per_host"]
        return [h for h in hosts if h.num_instances < limit]
