# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The filter interface: Nova's BaseHostFilter, plus hooks the engine uses to skip work."""

from __future__ import annotations


class BaseHostFilter:
    """One rule a host must pass. Subclasses set name (the registry key) and label.

    run_filter_once_per_request: as in Nova, such a filter only runs for the first server of a
    multi-server request (its answer cannot change when a placement consumes resources).
    global_state: the answer for one host depends on where earlier servers went (affinity),
    so the engine re-runs it over every candidate after each placement.
    """

    name = "BaseHostFilter"
    label = "base filter"
    run_filter_once_per_request = False
    global_state = False

    def __init__(self, config):
        self.config = config

    def is_active(self, spec):
        """False when this filter passes every host for this request (the engine then skips it)."""
        return True

    def host_passes(self, host, spec):
        return bool(self.filter_all([host], spec))

    def filter_all(self, hosts, spec):
        """The hosts that pass, in order. Override either this or host_passes."""
        passes = self.host_passes
        return [h for h in hosts if passes(h, spec)]

    def why_none_passed(self, hosts, spec):
        """A hint for the NoValidHost message when this filter removed every one of ``hosts``, or None."""
        return None


class CountLimitFilter(BaseHostFilter):
    """A host passes while one of its counters is below a configured limit (Nova's NumInstances/IoOps filters)."""

    field = None
    limit_option = None

    def filter_all(self, hosts, spec):
        limit, field = self.config[self.limit_option], self.field
        return [h for h in hosts if getattr(h, field) < limit]
