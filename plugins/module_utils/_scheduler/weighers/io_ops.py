# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""IoOpsWeigher: Concurrent I/O operations (lightest host wins by default); raw weight = host.num_io_ops."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


class IoOpsWeigher(BaseHostWeigher):
    name = "IoOpsWeigher"
    multiplier_option = "io_ops_weight_multiplier"
    default_multiplier = -1.0
    minval = 0

    field = "num_io_ops"
