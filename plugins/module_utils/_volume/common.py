# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Checks shared by the iSCSI, NBD and RBD connectors: host names, ports, a bounded TCP probe."""

from __future__ import annotations

import ipaddress
import re
import socket

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import STEP, VolumeError

LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(r"^(?=.{1,253}\Z)%s(\.%s)*\Z" % (LABEL, LABEL))


def invalid(msg):
    return ValidationError(msg, step=STEP)


def host(value, what):
    """An IP address or a DNS name (no URL, no spaces, nothing a shell or XML could misread)."""
    text = str(value or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not HOSTNAME_RE.match(text):
        raise invalid("%s %r is not an IP address or host name" % (what, value))
    return text


def port(value, what, default):
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise invalid("%s %r is not a port number" % (what, value))
    if not 1 <= number <= 65535:
        raise invalid("%s %d is out of range (1-65535)" % (what, number))
    return number


def require_str(data, key, what):
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise invalid("connection_info.data.%s (%s) is required" % (key, what))
    return value.strip()


def check_reachable(hostname, portnum, timeout, what):
    """Bounded TCP connect, so an unreachable portal is a clear error in ``timeout`` seconds, not a hang in QEMU."""
    def unreachable(reason):
        return VolumeError("%s %s port %d is not reachable: %s" % (what, hostname, portnum, reason), retryable=True)

    try:
        sock = socket.create_connection((hostname, portnum), timeout=timeout)
    except TimeoutError:
        raise unreachable("no answer within %.0f s" % timeout)
    except OSError as exc:
        raise unreachable(exc.strerror or str(exc))
    sock.close()
    return True
