# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""DiskWeigher: Free disk; raw weight = host.free_disk_mb."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


class DiskWeigher(BaseHostWeigher):
    name = "DiskWeigher"
    multiplier_option = "disk_weight_multiplier"
    default_multiplier = 1.0
    minval = 0

    field = "free_disk_mb"
