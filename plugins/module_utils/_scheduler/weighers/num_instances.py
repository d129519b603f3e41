# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""NumInstancesWeigher: Number of servers (off by default); raw weight = host.num_instances."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


class NumInstancesWeigher(BaseHostWeigher):
    name = "NumInstancesWeigher"
    multiplier_option = "num_instances_weight_multiplier"
    default_multiplier = 0.0

    field = "num_instances"
