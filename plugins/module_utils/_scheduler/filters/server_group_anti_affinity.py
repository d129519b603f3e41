# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""ServerGroupAntiAffinityFilter (hard): fewer than max_server_per_host (1) group members on the host."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


class ServerGroupAntiAffinityFilter(BaseHostFilter):
    name = "ServerGroupAntiAffinityFilter"
    label = "server group anti-affinity filter"

    def is_active(self, spec):
        return spec.instance_group is not None and spec.instance_group.policy == "anti-affinity"

    def host_passes(self, host, spec):
        if spec.instance_uuid in host.instances:
            return True  # a move may land where the server already is
        group = spec.instance_group
        on_host = sum(1 for u in group.members if u in host.instances)
        return on_host < group.rules.get("max_server_per_host", 1)
