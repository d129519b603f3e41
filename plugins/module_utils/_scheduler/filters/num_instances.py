# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""NumInstancesFilter: fewer than max_instances_per_host (50) servers on the host."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import CountLimitFilter


class NumInstancesFilter(CountLimitFilter):
    name = "NumInstancesFilter"
    label = "instance count filter"
    field = "num_instances"
    limit_option = "max_instances_per_host"
