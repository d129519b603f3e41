# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Text from the user that reaches a libvirt call, a command line or a file name.

A NUL makes the OS and the libvirt bindings raise a bare ValueError, and a newline or another C0
control character (or DEL) has no place in a URI, a namespace or a zone name.
"""

from __future__ import annotations

import re

CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def has_control_character(text):
    return CONTROL_CHARACTER.search(text) is not None
