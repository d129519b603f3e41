# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""CPUWeigher: free vCPUs (vcpus_total x cpu_allocation_ratio - vcpus_used); spreads by default."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


class CPUWeigher(BaseHostWeigher):
    name = "CPUWeigher"
    multiplier_option = "cpu_weight_multiplier"
    minval = 0

    def raw_weight(self, host, spec):
        return host.vcpus_total * host.cpu_allocation_ratio - host.vcpus_used

    def raw_weights(self, hosts, spec):
        return [h.vcpus_total * h.cpu_allocation_ratio - h.vcpus_used for h in hosts]
