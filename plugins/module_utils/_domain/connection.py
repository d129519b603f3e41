# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The libvirt connection for the domain steps, and the one error type of ``_domain``.

libvirt-python is imported lazily so that modules can report a clear error (not a traceback)
on a host without it.
"""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError
from ansible_collections.nimbus.compute.plugins.module_utils._common.libvirt_uri import validate_libvirt_uri


class DomainError(NimbusError):
    """A domain XML or lifecycle error; ``step`` is ``domain_xml`` or ``domain``."""

    step = "domain"


def libvirt_module(step="domain"):
    try:
        import libvirt
    except ImportError:
        raise DomainError("the libvirt Python bindings (libvirt-python) are not installed on this host", step=step)
    # libvirt's default handler prints every error to stderr; we raise them instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def open_connection(uri, step="domain"):
    """A read-write connection to ``uri``; an unreachable daemon is a retryable error naming the URI."""
    validate_libvirt_uri(uri, step)
    libvirt = libvirt_module(step)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise DomainError("cannot connect to libvirt at %s: %s" % (uri, exc.get_error_message()), step=step, retryable=True)
    if conn is None:  # older bindings return None instead of raising
        raise DomainError("cannot connect to libvirt at %s" % uri, step=step, retryable=True)
    return conn


class Connection:
    """``with Connection(uri) as conn:`` — closes the connection even when a step fails."""

    def __init__(self, uri, step="domain"):
        self.uri = uri
        self.step = step
        self.conn = None

    def __enter__(self):
        self.conn = open_connection(self.uri, self.step)
        return self.conn

    def __exit__(self, *exc):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # closing must never hide the real error
                pass
            self.conn = None
        return False
