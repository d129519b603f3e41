# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""AggregateInstanceExtraSpecsFilter: flavor extra_specs must match the host's aggregate metadata."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.extra_specs_ops import match

SCOPE = "aggregate_instance_extra_specs"


class AggregateInstanceExtraSpecsFilter(BaseHostFilter):
    name = "AggregateInstanceExtraSpecsFilter"
    label = "aggregate extra specs filter"
    run_filter_once_per_request = True

    def is_active(self, spec):
        return bool(spec.extra_specs)

    def host_passes(self, host, spec):
        metadata = host.aggregate_metadata
        for key, req in spec.extra_specs.items():
            scope = key.split(":", 1)
            if len(scope) > 1 and scope[0] != SCOPE:
                continue
            values = metadata.get(scope[-1])
            if not values or not any(match(value, req) for value in values):
                return False
        return True
