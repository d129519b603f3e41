# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""AvailabilityZoneFilter: the host is in the requested availability zone (a Placement pre-filter in Nova)."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


def host_zones(host):
    """Zones from aggregates' availability_zone metadata, else the host's own availability_zone."""
    return host.aggregate_metadata.get("availability_zone") or {host.availability_zone}


class AvailabilityZoneFilter(BaseHostFilter):
    name = "AvailabilityZoneFilter"
    label = "availability zone filter"
    run_filter_once_per_request = True

    def is_active(self, spec):
        return bool(spec.availability_zone)

    def host_passes(self, host, spec):
        return spec.availability_zone in host_zones(host)
