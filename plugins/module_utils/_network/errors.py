# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The networking area's errors: all carry the step name ``instance_network``."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError

STEP = "instance_network"


class NetworkError(NimbusError):
    step = STEP


class NetworkValidationError(ValidationError):
    step = STEP


class UnsupportedError(NetworkError):
    """The host's kernel lacks a feature (VLAN devices, bridge netfilter): trying another host may help."""

    retryable = True


class LinkTakenError(NetworkError):
    """A link a plan was to create exists by the time its command runs: something else sharing the
    kernel (another agent, a build for another instances_path) made it after the plan was made."""
