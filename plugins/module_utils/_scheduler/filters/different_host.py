# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""DifferentHostFilter: hint different_host=[server UUIDs] keeps hosts running none of them."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class DifferentHostFilter(BaseHostFilter):
    name = "DifferentHostFilter"
    label = "different host filter"
    run_filter_once_per_request = True

    def is_active(self, spec):
        return bool(spec.get_scheduler_hint("different_host"))

    def host_passes(self, host, spec):
        return not any(u in host.instances for u in spec.get_scheduler_hint("different_host"))
