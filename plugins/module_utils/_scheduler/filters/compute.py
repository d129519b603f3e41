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

    def _now(self):
        return self.config.get("now") or time.time()

    def filter_all(self, hosts, spec):
        now, down_time = self._now(), self.config["service_down_time"]
        return [h for h in hosts if h.is_up(now, down_time)]

    def why_none_passed(self, hosts, spec):
        """Name stale facts: hypervisor_info's last_seen_up is the time it gathered, so scheduling more than
        service_down_time after gathering drops every host although every service is fine."""
        now, down_time = self._now(), self.config["service_down_time"]
        stale = [h for h in hosts if not h.service["disabled"] and not h.service["forced_down"]
                 and h.last_seen_up is not None]
        if not stale:
            return None
        newest = min(stale, key=lambda h: abs(now - h.last_seen_up))
        age = now - newest.last_seen_up
        when = "%.0f s old" % age if age >= 0 else "%.0f s in the future (clock skew?)" % -age
        return ("%d of them only because their facts are stale: the newest last_seen_up (host %s) is %s, more than "
                "service_down_time (%g s); gather them again with nimbus.compute.hypervisor_info shortly before "
                "scheduling, or raise service_down_time" % (len(stale), newest.hostname, when, down_time))
