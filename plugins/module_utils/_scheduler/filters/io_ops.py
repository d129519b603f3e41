# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""IoOpsFilter: fewer than max_io_ops_per_host (8) concurrent builds/resizes/snapshots on the host."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class IoOpsFilter(BaseHostFilter):
    name = "IoOpsFilter"
    label = "I/O operations filter"

    def filter_all(self, hosts, spec):
        limit = self.config["max_io_ops_per_host"]
        return [h for h in hosts if h.num_io_ops < limit]
