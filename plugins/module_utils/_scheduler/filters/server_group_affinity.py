# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""ServerGroupAffinityFilter (hard affinity): once the group has hosts, only those hosts."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class ServerGroupAffinityFilter(BaseHostFilter):
    name = "ServerGroupAffinityFilter"
    label = "server group affinity filter"
    global_state = True  # group.hosts grows with each placement

    def is_active(self, spec):
        return spec.instance_group is not None and spec.instance_group.policy == "affinity"

    def host_passes(self, host, spec):
        group_hosts = spec.instance_group.hosts
        return not group_hosts or host.hostname in group_hosts
