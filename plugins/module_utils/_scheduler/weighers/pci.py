# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""PCIWeigher: keep hosts with free PCI devices for servers that need them (fewer free devices win)."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher

MAX_DEVS = 100  # Nova's cap on counted devices


class PCIWeigher(BaseHostWeigher):
    name = "PCIWeigher"
    multiplier_option = "pci_weight_multiplier"

    def raw_weight(self, host, spec):
        free = sum(int(pool.get("count", 0)) for pool in host.pci_stats)
        return MAX_DEVS - min(free, MAX_DEVS - 1)
