# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""AggregateMultiTenancyIsolation: aggregates with filter_tenant_id* metadata take only those projects."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class AggregateMultiTenancyIsolation(BaseHostFilter):
    name = "AggregateMultiTenancyIsolation"
    label = "tenant isolation filter"
    run_filter_once_per_request = True

    def host_passes(self, host, spec):
        tenants = set()
        for key, values in host.aggregate_metadata.items():
            if key.startswith("filter_tenant_id"):
                tenants.update(values)
        return not tenants or spec.project_id in tenants
