# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The one error type of ``_volume``."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError

STEP = "volume_attach"


class VolumeError(NimbusError):
    """A volume could not be connected, attached or detached; nothing it made is left behind."""

    step = STEP
