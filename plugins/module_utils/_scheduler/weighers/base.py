# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The weigher interface: a raw number per host and a multiplier (Nova's BaseHostWeigher).

The engine clamps raw values to [minval, maxval] where set, normalises them to 0..1 over the
candidate hosts (all equal -> 0), multiplies by the host's multiplier and sums over weighers.
"""

from __future__ import annotations

from operator import attrgetter

# Multipliers beyond this make a weight overflow to inf (1e308 x a normalised 1.0 summed twice). Nova's largest
# default is build_failure_weight_multiplier, 1e6; this leaves room to raise it, and the weight stays finite.
# The registry refuses a configured multiplier above it; an aggregate's falls back to the configured one.
MAX_MULTIPLIER = 1e9


class BaseHostWeigher:
    name = "BaseHostWeigher"
    multiplier_option = None  # Nova's config option name, also read from aggregate metadata
    default_multiplier = 1.0
    negate_multiplier = False
    minimum_multiplier = None
    minval = None
    maxval = None
    field = None  # the HostState field that is the raw weight, for the simple weighers

    def __init__(self, config, multiplier=None):
        self.config = config
        self.multiplier = self.default_multiplier if multiplier is None else float(multiplier)

    def weight_multiplier(self, host):
        """The configured multiplier, overridden by the smallest value in the host's aggregates' metadata."""
        value = self.multiplier
        values = host.aggregate_values(self.multiplier_option) if host.aggregates else ()
        if values:
            try:
                value = min(float(v) for v in values)
            except ValueError:
                value = self.multiplier  # Nova logs a warning and uses the configured value
            if not abs(value) <= MAX_MULTIPLIER:
                # Unlike Nova: a nan/inf (or overflowing) weight would make every comparison meaningless.
                value = self.multiplier
        return -value if self.negate_multiplier else value

    def is_active(self, spec):
        """False when every host gets the same raw weight for this request (contributes nothing)."""
        return True

    def raw_weight(self, host, spec):
        return getattr(host, self.field)

    def raw_weights(self, hosts, spec):
        if self.field and type(self).raw_weight is BaseHostWeigher.raw_weight:
            return list(map(attrgetter(self.field), hosts))
        weigh = self.raw_weight
        return [weigh(h, spec) for h in hosts]
