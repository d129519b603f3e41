# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""IoOpsFilter: fewer than max_io_ops_per_host (8) concurrent builds/resizes/snapshots on the host."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import CountLimitFilter


class IoOpsFilter(CountLimitFilter):
    name = "IoOpsFilter"
    label = "I/O operations filter"
    field = "num_io_ops"
    limit_option = "max_io_ops_per_host"
