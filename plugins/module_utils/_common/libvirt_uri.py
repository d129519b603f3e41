# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The libvirt URI a module connects to, checked before anything changes.

libvirt takes an empty URI for "the default connection" (often the system daemon, not the one
the play meant), and the Python bindings raise ValueError, not libvirtError, on a NUL byte.
"""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.text import has_control_character


def validate_libvirt_uri(uri, step, what="libvirt_uri"):
    if not isinstance(uri, str) or not uri.strip() or has_control_character(uri):
        raise ValidationError("%s must be a non-empty URI without control characters, got %r" % (what, uri), step=step)
    return uri
