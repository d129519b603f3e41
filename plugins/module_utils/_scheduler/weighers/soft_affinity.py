# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""ServerGroupSoftAffinityWeigher: prefer hosts that already run members of a soft-affinity group."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


def members_on_host(host, spec, policy):
    group = spec.instance_group
    if group is None or group.policy != policy:
        return 0
    return sum(1 for u in group.members if u in host.instances)


class ServerGroupSoftAffinityWeigher(BaseHostWeigher):
    name = "ServerGroupSoftAffinityWeigher"
    multiplier_option = "soft_affinity_weight_multiplier"
    policy = "soft-affinity"
    minimum_multiplier = 0.0  # as Nova's option

    def is_active(self, spec):
        return spec.instance_group is not None and spec.instance_group.policy == self.policy

    def raw_weight(self, host, spec):
        return members_on_host(host, spec, self.policy)
