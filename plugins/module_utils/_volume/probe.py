# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Open a volume the way QEMU will, in a child process that can be killed.

QEMU opens a ``-blockdev`` before its monitor answers, and libvirt waits for that monitor without a
time limit: a portal that accepts TCP but never speaks iSCSI keeps ``createXML`` blocked for as long
as the target stays silent. A blocked libvirt call cannot be interrupted in-process (and a thread
left waiting on a shared connection can block that connection's later calls and its close), so the
probe domain is started by a separate Python process on its own connection. When the time is up the
child is killed: its connection drops, libvirtd auto-destroys the probe domain (it is started with
``AUTODESTROY``), and the parent checks, each call bounded, that no probe domain outlives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError
from ansible_collections.nimbus.compute.plugins.module_utils._domain.lifecycle import bounded
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import VolumeError

VIR_DOMAIN_START_PAUSED = 1
VIR_DOMAIN_START_AUTODESTROY = 2

# The child: reads {uri, xml} on stdin, starts the paused transient domain, destroys it, and prints
# {"ok": true} or {"error": "<libvirt's message>"}. Self-contained: it runs outside the module's zip.
CHILD = r"""
import json, sys
request = json.load(sys.stdin)
try:
    import libvirt
except ImportError:
    print(json.dumps({"error": "the libvirt Python bindings are not installed"}))
    sys.exit(0)
libvirt.registerErrorHandler(lambda ctx, err: None, None)
try:
    conn = libvirt.open(request["uri"])
    dom = conn.createXML(request["xml"], %d)
    try:
        dom.destroy()
    except libvirt.libvirtError:
        pass
    conn.close()
    print(json.dumps({"ok": True}))
except libvirt.libvirtError as exc:
    print(json.dumps({"error": exc.get_error_message() or str(exc)}))
""" % (VIR_DOMAIN_START_PAUSED | VIR_DOMAIN_START_AUTODESTROY)

GONE_TIMEOUT = 15.0


def _gone(conn, name, timeout, libvirt):
    """Destroy the probe domain if libvirtd still has it; True once it is gone (each call bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = max(1.0, deadline - time.monotonic())
        try:
            dom = bounded(lambda: conn.lookupByName(name), left, "looking up %s" % name)
        except libvirt.libvirtError:
            return True  # no such domain: auto-destroy already removed it
        except NimbusError:  # the lookup itself was blocked: try again until the deadline
            continue
        try:
            bounded(dom.destroy, max(1.0, deadline - time.monotonic()), "destroying %s" % name)
        except (libvirt.libvirtError, NimbusError):  # already going away, or still blocked: look again
            pass
        time.sleep(0.2)
    return False


def run(conn, uri, name, xml, timeout, libvirt, python=None):
    """Start the transient probe domain ``name`` from ``xml`` in a child; None when the volume opened,
    else libvirt's (QEMU's) message. A probe that does not finish in ``timeout`` s is a retryable error."""
    request = json.dumps({"uri": uri, "xml": xml}).encode("utf-8")
    try:
        proc = subprocess.run([python or sys.executable, "-c", CHILD], input=request, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        # subprocess.run killed the child: its connection is closed, so auto-destroy applies.
        if not _gone(conn, name, GONE_TIMEOUT, libvirt):
            raise VolumeError("opening the volume did not finish within %.0f s, and the probe domain %s did not go "
                              "away; destroy it with virsh" % (timeout, name), retryable=True)
        raise VolumeError("opening the volume did not finish within %.0f s (is the target answering?)" % timeout,
                          retryable=True)
    except OSError as exc:
        raise VolumeError("cannot start the volume probe (%s): %s" % (python or sys.executable, exc))
    try:
        answer = json.loads(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise VolumeError("the volume probe exited with %d without an answer: %s"
                          % (proc.returncode, proc.stderr.decode("utf-8", "replace")[-1000:]))
    return None if answer.get("ok") else answer.get("error", "unknown error")
