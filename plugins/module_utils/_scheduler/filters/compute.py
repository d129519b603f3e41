# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""ComputeFilter: the host's compute service is enabled, not forced down and recently seen up."""

from __future__ import annotations

import time

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class ComputeFilter(BaseHostFilter):
    name = "ComputeFilter"
    label = "compute service filter"
    run_filter_once_per_request = True

    def filter_all(self, hosts, spec):
        now, down_time = self.config.get("now") or time.time(), self.config["service_down_time"]
        return [h for h in hosts if h.is_up(now, down_time)]
