# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""RAMWeigher: Free RAM (spread by default); raw weight = host.free_ram_mb."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


class RAMWeigher(BaseHostWeigher):
    name = "RAMWeigher"
    multiplier_option = "ram_weight_multiplier"
    default_multiplier = 1.0
    minval = 0

    field = "free_ram_mb"
