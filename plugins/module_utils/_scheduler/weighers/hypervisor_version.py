# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""HypervisorVersionWeigher: newer hypervisors (integer libvirt/QEMU version) win by default."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


class HypervisorVersionWeigher(BaseHostWeigher):
    name = "HypervisorVersionWeigher"
    multiplier_option = "hypervisor_version_weight_multiplier"

    def raw_weight(self, host, spec):
        return host.hypervisor_version or 0
