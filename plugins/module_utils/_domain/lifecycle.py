# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Define, start (optionally paused), pause, shut down, destroy, reboot and undefine a domain.

Every wait is bounded; a timeout is a clear DomainError. ``ensure`` brings one domain to the wanted
state and says what it changed, honouring check mode. Conflicts are errors, never overwrites: a
different domain already holding our UUID or name is left alone.
"""

from __future__ import annotations

import os
import threading
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.args import LIBVIRT_URI_DEFAULT, given
from ansible_collections.nimbus.compute.plugins.module_utils._common.atomic import read_bytes
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._common.libvirt_uri import validate_libvirt_uri
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import validate_seconds
from ansible_collections.nimbus.compute.plugins.module_utils._domain import compare
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import Connection, DomainError, libvirt_module
from ansible_collections.nimbus.compute.plugins.module_utils._domain.metadata import METADATA_NS

STATES = ("defined", "running", "paused", "shutdown", "destroyed", "absent")
REBOOT_MODES = ("soft", "hard")
STEP = "domain"
POLL = 0.1
# Seconds between ACPI shutdown requests to a guest that has not powered off yet (Nova's SHUTDOWN_RETRY_INTERVAL).
SHUTDOWN_RETRY_INTERVAL = 10.0

# virDomainState numbers, named as libvirt names them.
STATE_NAMES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed",
               7: "pmsuspended"}
VIR_DOMAIN_XML_INACTIVE = 2
VIR_DOMAIN_START_PAUSED = 1
# managed save, snapshot and checkpoint metadata and NVRAM go with the domain (Nova's undefine).
UNDEFINE_FLAGS = 1 | 2 | 4 | 16
UNDEFINE_FLAGS_MINIMAL = 1 | 2


def _fail(msg, retryable=None):
    return DomainError(msg, step=STEP, retryable=retryable)


def _call(libvirt, what, fn, *args):
    try:
        return fn(*args)
    except libvirt.libvirtError as exc:
        raise _fail("%s failed: %s" % (what, exc.get_error_message()))


def find(conn, uuid=None, name=None):
    """The domain with this UUID (or name), or None."""
    libvirt = libvirt_module(STEP)
    try:
        return conn.lookupByUUIDString(uuid) if uuid else conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise _fail("looking up domain %s failed: %s" % (uuid or name, exc.get_error_message()))


def state_of(dom):
    return STATE_NAMES.get(dom.state()[0], "nostate") if dom is not None else "absent"


def _is_ours(xml_text):
    return METADATA_NS in xml_text


def wait_for(dom, wanted, timeout, what):
    """Poll until the domain's state is in ``wanted``; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if state_of(dom) in wanted:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def bounded(fn, timeout, what):
    """Run a blocking libvirt call in a thread and give up after ``timeout`` seconds."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except Exception as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise _fail("%s did not finish within %.0f s" % (what, timeout), retryable=True)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class Lifecycle:
    """Lifecycle operations on one connection, each bounded in time."""

    def __init__(self, conn, start_timeout=60.0, shutdown_timeout=60.0, force_after_timeout=True):
        self.conn = conn
        self.libvirt = libvirt_module(STEP)
        self.start_timeout = float(start_timeout)
        self.shutdown_timeout = float(shutdown_timeout)
        self.force_after_timeout = force_after_timeout

    def define(self, xml):
        return _call(self.libvirt, "defining the domain", self.conn.defineXML, xml)

    def start(self, dom, paused=False):
        flags = VIR_DOMAIN_START_PAUSED if paused else 0
        wanted = ("paused",) if paused else ("running", "blocked")
        started = time.monotonic()
        bounded(lambda: _call(self.libvirt, "starting %s" % dom.name(), dom.createWithFlags, flags),
                self.start_timeout, "starting %s" % dom.name())
        left = max(0.0, self.start_timeout - (time.monotonic() - started))
        if not wait_for(dom, wanted, left, "start"):
            raise _fail("%s did not reach state %s within %.0f s (now %s)"
                        % (dom.name(), wanted[0], self.start_timeout, state_of(dom)), retryable=True)

    def suspend(self, dom):
        _call(self.libvirt, "pausing %s" % dom.name(), dom.suspend)

    def resume(self, dom):
        _call(self.libvirt, "resuming %s" % dom.name(), dom.resume)

    def destroy(self, dom):
        try:
            dom.destroy()
        except self.libvirt.libvirtError as exc:
            if dom.isActive():  # it may have stopped by itself meanwhile
                raise _fail("destroying %s failed: %s" % (dom.name(), exc.get_error_message()))

    def shutdown(self, dom):
        """Graceful ACPI shutdown within shutdown_timeout, then destroy when force_after_timeout
        (Nova's clean shutdown). Returns True when it had to force."""
        if state_of(dom) == "paused":
            # A paused guest cannot see the power button.
            if not self.force_after_timeout:
                raise _fail("%s is paused and cannot shut down gracefully (force_after_timeout is false)" % dom.name())
            self.destroy(dom)
            return True
        # A guest still booting can miss the press (its ACPI is not up yet): press again every
        # SHUTDOWN_RETRY_INTERVAL seconds within the timeout, as Nova's compute manager does.
        deadline = time.monotonic() + self.shutdown_timeout
        while True:
            self._press_power_button(dom)
            left = max(0.0, deadline - time.monotonic())
            if wait_for(dom, ("shutoff", "crashed"), min(SHUTDOWN_RETRY_INTERVAL, left), "shutdown"):
                return False
            if time.monotonic() >= deadline:
                break
        if not self.force_after_timeout:
            raise _fail("%s did not shut down within %.0f s (the guest ignored ACPI; force_after_timeout is false)"
                        % (dom.name(), self.shutdown_timeout), retryable=True)
        self.destroy(dom)
        return True

    def _press_power_button(self, dom):
        try:
            dom.shutdown()  # default method: ACPI power button (guest agent when one is configured)
        except self.libvirt.libvirtError as exc:
            if dom.isActive():  # not when it went off meanwhile
                raise _fail("shutting down %s failed: %s" % (dom.name(), exc.get_error_message()))

    def undefine(self, dom):
        # Drivers without NVRAM or checkpoints (e.g. the test driver) refuse those flags: retry without.
        for flags in (UNDEFINE_FLAGS, UNDEFINE_FLAGS_MINIMAL):
            try:
                dom.undefineFlags(flags)
                return
            except self.libvirt.libvirtError as exc:
                code = exc.get_error_code()
                if code == self.libvirt.VIR_ERR_NO_DOMAIN:
                    return
                if code != self.libvirt.VIR_ERR_INVALID_ARG or flags == UNDEFINE_FLAGS_MINIMAL:
                    raise _fail("undefining %s failed: %s" % (dom.name(), exc.get_error_message()))

    def reboot(self, dom, mode):
        """Nova's reboot: soft = clean shutdown then start (hard when the guest ignores ACPI and
        force_after_timeout); hard = destroy then start from the persistent definition."""
        forced = True
        if mode == "soft":
            forced = self.shutdown(dom)
        else:
            self.destroy(dom)
        self.start(dom)
        return forced


def read_xml_identity(root):
    """(uuid, name) declared by a parsed ``<domain>``."""
    uuid = (root.findtext("uuid") or "").strip().lower()
    name = (root.findtext("name") or "").strip()
    if not name:
        raise ValidationError("domain XML has no <name>", step=STEP)
    return uuid, name


def ensure(conn, uuid, *, xml=None, state="running", start_paused=False, reboot=None, check_mode=False,
           start_timeout=60.0, shutdown_timeout=60.0, force_after_timeout=True, before_define=None):
    """Bring domain ``uuid`` to ``state``; returns a result dict (changed, state, diff, ...).
    ``before_define(name)`` runs just before a new domain is defined (not in check mode)."""
    uuid = paths.validate_uuid(uuid, step=STEP)
    if state not in STATES:
        raise ValidationError("unknown state %r (one of: %s)" % (state, ", ".join(STATES)), step=STEP)
    if reboot not in (None, *REBOOT_MODES):
        raise ValidationError("unknown reboot mode %r (soft or hard)" % reboot, step=STEP)
    # A reboot ends with the guest running: asking for another end state (or for a paused start, which
    # the reboot's own start would undo) is a contradiction, refused before anything changes.
    if reboot and state != "running":
        raise ValidationError("reboot %s needs state running, not %s" % (reboot, state), step=STEP)
    if reboot and start_paused:
        raise ValidationError("reboot cannot be combined with start_paused (the reboot starts the guest running)",
                              step=STEP)
    wanted = name = None
    if isinstance(xml, bytes):
        xml = _text(xml, "the XML")
    if xml is not None and state != "absent":
        wanted = compare.parse(xml, step=STEP)
        xml_uuid, name = read_xml_identity(wanted)
        if xml_uuid != uuid:
            raise ValidationError("the XML's <uuid> %r is not the requested uuid %s" % (xml_uuid or None, uuid), step=STEP)
        # We define only what we manage afterwards: a domain without our name or metadata would be refused
        # by every later call (see _check_ours).
        if name != paths.domain_name(uuid):
            raise ValidationError("the XML's <name> %r is not %s" % (name, paths.domain_name(uuid)), step=STEP)
        if not _is_ours(xml):
            raise ValidationError("the XML has no nimbus metadata (<metadata><nimbus:instance xmlns:nimbus='%s'>); "
                                  "build it with nimbus.compute.domain_xml" % METADATA_NS, step=STEP)
    ops = Lifecycle(conn, start_timeout, shutdown_timeout, force_after_timeout)
    dom = find(conn, uuid=uuid)
    # Every path, with or without XML and for every state (absent and destroyed included), acts only on
    # a domain that is ours; anything else holding the UUID is an error and is left untouched.
    _check_ours(dom, uuid)
    result = {"changed": False, "uuid": uuid, "previous_state": state_of(dom), "defined": False, "redefined": False,
              "pending_restart": False, "forced": False, "actions": []}
    if wanted is not None:
        _check_name_free(conn, uuid, name)
    if state == "absent":
        return _absent(ops, dom, result, check_mode)

    if wanted is not None:
        dom = _define(ops, dom, xml, wanted, result, check_mode=check_mode, before_define=before_define, name=name)
    elif dom is None:
        raise _fail("domain %s is not defined and no XML was given" % paths.domain_name(uuid))
    before = result["previous_state"]
    if dom is not None or check_mode:
        _transition(ops, dom, state, result, start_paused=start_paused, check_mode=check_mode)
    if reboot and before in ("running", "blocked", "paused", "pmsuspended"):
        # A paused guest was resumed by the transition above; it is rebooted like a running one.
        result["actions"].append("reboot %s" % reboot)
        result["changed"] = True
        if not check_mode:
            result["forced"] = ops.reboot(dom, reboot) or result["forced"]
            result["pending_restart"] = False
    elif reboot:
        # Not running: this call's start is already a fresh boot from the definition, which is what the
        # reboot was for; say so rather than pretend a reboot happened (or silently skip it).
        result["warnings"] = ["reboot %s not done: domain %s was %s, so it was started instead (a fresh boot)"
                              % (reboot, paths.domain_name(uuid), "not defined" if before == "absent" else before)]
    result["state"] = _expected(state, start_paused, dom) if check_mode else state_of(dom)
    return result


def _expected(state, start_paused, dom):
    return {"running": "paused" if start_paused and state_of(dom) in ("absent", "shutoff", "paused") else "running",
            "paused": "paused", "shutdown": "shutoff", "destroyed": "shutoff",
            "defined": state_of(dom) if dom is not None else "shutoff"}[state]


def _check_ours(dom, uuid):
    """The domain holding ``uuid`` (if any) must be ours: named instance-<uuid> and carrying nimbus metadata.
    Otherwise it is another tool's (or libvirt's own, like test:///default's ``test``) and is never touched."""
    if dom is None:
        return
    expected = paths.domain_name(uuid)
    if dom.name() != expected:
        raise _fail("UUID %s is already used by another domain named %r (ours would be %s): refusing to touch it"
                    % (uuid, dom.name(), expected))
    if not _is_ours(dom.XMLDesc(VIR_DOMAIN_XML_INACTIVE)):
        raise _fail("domain %s exists but was not created by nimbus.compute (no nimbus metadata): refusing to touch it"
                    % expected)


def _check_name_free(conn, uuid, name):
    by_name = find(conn, name=name)
    if by_name is not None and by_name.UUIDString().lower() != uuid:
        raise _fail("domain name %r is already used by another domain with UUID %s: refusing to overwrite it"
                    % (name, by_name.UUIDString()))


def _absent(ops, dom, result, check_mode):
    result["state"] = "absent"
    if dom is None:
        return result
    result["changed"] = True
    if dom.isActive():
        result["actions"].append("destroy")
        if not check_mode:
            ops.destroy(dom)
    if dom.isPersistent():
        result["actions"].append("undefine")
        if not check_mode:
            ops.undefine(dom)
    return result


def _define(ops, dom, xml, wanted, result, *, check_mode, before_define=None, name=None):
    if dom is not None and dom.isPersistent():
        same, before, after = compare.compare(dom.XMLDesc(VIR_DOMAIN_XML_INACTIVE), wanted)
        if same:
            return dom
        result["redefined"] = True
        result["actions"].append("redefine")
        result["pending_restart"] = bool(dom.isActive())
    else:
        before, after = "", compare.to_string(compare.canonical(wanted))
        result["defined"] = True
        result["actions"].append("define")
    result["changed"] = True
    result["diff"] = {"before": before, "after": after}
    if check_mode:
        return dom
    if result["defined"] and before_define is not None:
        before_define(name)
    return ops.define(xml)


def _transition(ops, dom, state, result, *, start_paused, check_mode):
    current = state_of(dom)
    if current == "shutdown":  # a guest powering off: let it finish before acting
        wait_for(dom, ("shutoff",), ops.shutdown_timeout, "shutdown")
        current = state_of(dom)
    active = current in ("running", "blocked", "paused", "pmsuspended")
    action = None
    if state == "running":
        if not active:
            action = "start paused" if start_paused else "start"
        elif current == "paused" and not start_paused:
            action = "resume"
    elif state == "paused":
        if not active:
            action = "start paused"
        elif current != "paused":
            action = "pause"
    elif state == "shutdown" and active:
        action = "shutdown"
    elif state == "destroyed" and active:
        action = "destroy"
    if action is None:
        return
    result["changed"] = True
    result["actions"].append(action)
    if check_mode:
        return
    if action.startswith("start"):
        ops.start(dom, paused=action == "start paused")
        result["pending_restart"] = False
    elif action == "resume":
        ops.resume(dom)
    elif action == "pause":
        ops.suspend(dom)
    elif action == "shutdown":
        result["forced"] = ops.shutdown(dom)
        result["pending_restart"] = False
    else:
        ops.destroy(dom)
        result["pending_restart"] = False


def run(params, check_mode=False, progress=None):
    """The ``domain`` step: XML from ``xml`` or ``<uuid>/libvirt.xml``, then ``ensure``; the journal
    records a domain this run defines (before ``defineXML``, so a failed start or a killed run still
    leaves it recorded) so that a rollback undefines exactly that.

    ``progress`` (a dict) gets ``defined: True`` when the domain this call defined exists, also when the
    call then fails (a start that failed): the module reports it in the failure for the rollback."""
    progress = {} if progress is None else progress
    uuid = paths.validate_uuid(params["uuid"], step=STEP)
    for key in ("start_timeout", "shutdown_timeout"):
        if params.get(key) is not None:
            validate_seconds(params[key], key, STEP)
    uri = validate_libvirt_uri(given(params, "libvirt_uri", LIBVIRT_URI_DEFAULT), STEP)
    instances_path = paths.validate_instances_path(given(params, "instances_path", paths.DEFAULT_INSTANCES_PATH), step=STEP)
    instance_dir = paths.instance_dir(instances_path, uuid)
    xml = params.get("xml")
    if xml is None and params.get("state") != "absent":
        xml_path = os.path.join(instance_dir, "libvirt.xml")
        if os.path.exists(xml_path):
            paths.require_inside(xml_path, instances_path, step=STEP)
            xml = _text(read_bytes(xml_path), xml_path)
    recorded = []

    def before_define(name):
        if os.path.isdir(instance_dir):
            journal = Journal(instance_dir, step=STEP)
            item = "domain:%s" % name
            if item not in journal.created(STEP):
                journal.record(STEP, created=[item])
                recorded.append(item)
        progress["defined"] = True

    with Connection(uri, step=STEP) as conn:
        try:
            result = ensure(
                conn, uuid, xml=xml, state=params.get("state") or "running", start_paused=bool(params.get("start_paused")),
                reboot=params.get("reboot"), check_mode=check_mode, start_timeout=params.get("start_timeout") or 60,
                shutdown_timeout=params.get("shutdown_timeout") or 60,
                force_after_timeout=params.get("force_after_timeout", True), before_define=before_define,
            )
        except Exception:
            if progress.get("defined") and not _exists(conn, uuid):
                # defineXML itself failed: nothing was created, so the journal does not keep the entry.
                progress["defined"] = False
                _unrecord(instance_dir, recorded)
            raise
    result["domain_name"] = paths.domain_name(uuid)
    if not check_mode and params.get("state") == "absent" and os.path.isdir(instance_dir):
        # Gone from libvirt: its definition copy (libvirt.xml) no longer describes anything, so
        # neither step holds the instance dir back from removal by the claim's release.
        journal = Journal(instance_dir, step=STEP)
        journal.forget(STEP)
        journal.forget("domain_xml")
    return result


def _text(data, what):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("%s is not UTF-8 text (byte %d): a domain XML is" % (what, exc.start), step=STEP)


def _exists(conn, uuid):
    """Whether the domain exists; True when libvirt cannot tell (keep the record: absent copes with none)."""
    try:
        return find(conn, uuid=uuid) is not None
    except DomainError:
        return True


def _unrecord(instance_dir, items):
    if not items or not os.path.isdir(instance_dir):
        return
    journal = Journal(instance_dir, step=STEP)
    entry = journal.data["steps"].get(STEP)
    if entry is None:
        return
    entry["created"] = [c for c in entry.get("created", []) if c not in items]
    if entry["created"]:
        journal.save()
    else:
        journal.forget(STEP)
