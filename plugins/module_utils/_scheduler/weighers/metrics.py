# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""MetricsWeigher: sum of host metrics x ratios from the option metrics_weight_setting ({name: ratio}).

A host missing a configured metric fails the request when metrics_required (default true, as Nova),
otherwise it gets metrics_weight_of_unavailable (-10000.0).
"""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import NoValidHost
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.weighers.base import BaseHostWeigher


class MetricsWeigher(BaseHostWeigher):
    name = "MetricsWeigher"
    multiplier_option = "metrics_weight_multiplier"

    def __init__(self, config, multiplier=None):
        super().__init__(config, multiplier)
        self.setting = list((config.get("metrics_weight_setting") or {}).items())

    def is_active(self, spec):
        return bool(self.setting)

    def raw_weight(self, host, spec):
        value = 0.0
        for name, ratio in self.setting:
            if name in host.metrics:
                value += float(host.metrics[name]) * ratio
            elif self.config.get("metrics_required", True):
                raise NoValidHost("host %s has no metric %s (metrics_required is true)" % (host.hostname, name))
            elif ratio * self.weight_multiplier(host) != 0:
                return self.config.get("metrics_weight_of_unavailable", -10000.0)
        return value
