# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""BuildFailureWeigher: Recent failed builds (the multiplier is negated); raw weight = host.failed_builds."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


class BuildFailureWeigher(BaseHostWeigher):
    name = "BuildFailureWeigher"
    multiplier_option = "build_failure_weight_multiplier"
    default_multiplier = 1000000.0
    negate_multiplier = True

    field = "failed_builds"
