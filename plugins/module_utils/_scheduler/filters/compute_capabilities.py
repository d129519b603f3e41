# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""ComputeCapabilitiesFilter: flavor extra_specs (``capabilities:<field>[:<key>...]``) against host fields."""

from __future__ import annotations

import json

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.extra_specs_ops import match


def capability(host, scope):
    """Walk host fields and nested dicts (JSON strings are parsed) like Nova's _get_capabilities."""
    cap = host
    for depth, key in enumerate(scope):
        if isinstance(cap, str):
            try:
                cap = json.loads(cap)
            except ValueError:
                return None
            except RecursionError:  # '[' * 100000: json recurses once per nesting level
                raise SchedulerInputError("host %s: %s is JSON nested too deeply to read"
                                          % (host.hostname, ":".join(scope[:depth])))
        if cap is host:
            value = getattr(host, key, None) if key in type(host).__slots__ or key == "host" else None
            cap = value if value is not None else host.stats.get(key)
        elif isinstance(cap, dict):
            cap = cap.get(key)
        else:
            return None
        if cap is None:
            return None
    return cap


class ComputeCapabilitiesFilter(BaseHostFilter):
    name = "ComputeCapabilitiesFilter"
    label = "compute capabilities filter"
    run_filter_once_per_request = True

    def is_active(self, spec):
        return bool(spec.extra_specs)

    def host_passes(self, host, spec):
        especs = dict(spec.extra_specs)
        bits = especs.pop("hw:maxphysaddr_bits", None)
        if bits is not None:
            especs["capabilities:cpu_info:maxphysaddr:bits"] = ">= " + bits
        for key, req in especs.items():
            scope = key.split(":")
            if len(scope) == 1:
                # An unscoped key counts only when the host has such a field (Nova's backward compatibility).
                if not (key in type(host).__slots__ or key == "host" or key in host.stats):
                    continue
            elif scope[0] != "capabilities":
                continue
            else:
                scope = scope[1:]
            cap = capability(host, scope)
            if cap is None or not match(str(cap), req):
                return False
        return True
