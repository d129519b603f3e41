# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The scheduler's error types (one area, one family; see _common/errors.py)."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError


class SchedulerInputError(ValidationError):
    """A bad flavor, image, hint, host state or option: fix the request, do not retry."""

    step = "schedule"


class NoValidHost(NimbusError):
    """Every candidate was filtered out; ``filter_name`` removed the last ones."""

    step = "schedule"
    retryable = True

    def __init__(self, msg, filter_name=None, removed=0, candidates=0):
        super().__init__(msg)
        self.filter_name = filter_name
        self.removed = removed
        self.candidates = candidates

    def __str__(self):
        return self.msg
