# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""ServerGroupSoftAntiAffinityWeigher: prefer hosts with fewer members of a soft-anti-affinity group."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.soft_affinity import (
    ServerGroupSoftAffinityWeigher,
    members_on_host,
)


class ServerGroupSoftAntiAffinityWeigher(ServerGroupSoftAffinityWeigher):
    name = "ServerGroupSoftAntiAffinityWeigher"
    multiplier_option = "soft_anti_affinity_weight_multiplier"
    policy = "soft-anti-affinity"

    def raw_weight(self, host, spec):
        return -members_on_host(host, spec, self.policy)
