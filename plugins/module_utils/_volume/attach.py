# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Attach and detach a volume (Nova's ``attach_volume`` / ``detach_volume`` in our words).

Attach: validate everything, refuse a volume that another domain (or this one, under another id) already
uses, read ``libvirt.xml`` and the journal (a file that cannot be read fails here, before any change),
store a CHAP secret in libvirt, connect (host-side iSCSI login or nothing: QEMU connects itself), check
that the volume opens, record it in the journal (write-ahead), then ``attachDeviceFlags`` with CONFIG
(+ LIVE on an active domain), and last insert the same ``<disk>`` into ``<uuid>/libvirt.xml`` so the
domain step stays ``changed=false``. Any failure, of any kind (a full disk too), undoes what this call
made (attachment, journal entry, session, secret): no half-attached volume.

A volume is checked before it is attached, on a running server too: a transient paused domain holding
only that disk is started and destroyed by a child process (``probe.py``), with the same XML and
secret QEMU will use, bounded by the timeout. A target that accepts TCP but never answers would block
QEMU's open (and libvirt's call) without limit: the probe catches it before the server is touched.

Detach: the same files are read first; then live (waiting, bounded, for the guest to release the
device), the persistent config, libvirt.xml, the secret, a host-side session, and the journal entry
last. Each step is idempotent: after a failure half-way, a re-run finishes. A volume that is not
attached is ``changed=false``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import time
import uuid as uuidlib

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.args import LIBVIRT_URI_DEFAULT, given
from ansible_collections.nimbus.compute.plugins.module_utils._common.atomic import read_bytes, write_atomic
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._common.libvirt_uri import validate_libvirt_uri
from ansible_collections.nimbus.compute.plugins.module_utils._common.locks import FileLock
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import validate_seconds
from ansible_collections.nimbus.compute.plugins.module_utils._domain import compare
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import Connection, DomainError, libvirt_module
from ansible_collections.nimbus.compute.plugins.module_utils._domain.lifecycle import find
from ansible_collections.nimbus.compute.plugins.module_utils._domain.xml_builder import DISK_BUS_PREFIX
from ansible_collections.nimbus.compute.plugins.module_utils._instance.layout import LOCK_TIMEOUT, instance_lock
from ansible_collections.nimbus.compute.plugins.module_utils._volume import common, iscsi, nbd, rbd, secrets
from ansible_collections.nimbus.compute.plugins.module_utils._volume import probe as volume_probe
from ansible_collections.nimbus.compute.plugins.module_utils._volume import xml as volume_xml
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import STEP, VolumeError

STATES = ("present", "absent")
DRIVERS = {"iscsi": iscsi.validate, "nbd": nbd.validate, "rbd": rbd.validate}
ACCESS_MODES = ("rw", "ro")
# A libvirt user alias is ua-[A-Za-z0-9_-]+; Cinder volume ids are UUIDs.
VOLUME_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
VIR_DOMAIN_AFFECT_LIVE = 1
VIR_DOMAIN_AFFECT_CONFIG = 2
VIR_DOMAIN_XML_INACTIVE = 2
LIBVIRT_XML = "libvirt.xml"
DETACH_RETRY = 5.0
POLL = 0.2


@dataclasses.dataclass
class Request:
    instance_uuid: str
    volume_id: str
    state: str = "present"
    spec: dict | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    device: str | None = None
    bus: str = "virtio"
    boot_index: int | None = None
    iscsi_initiator: str = "auto"
    connect_timeout: float = 10.0
    detach_timeout: float = 30.0
    instances_path: str = paths.DEFAULT_INSTANCES_PATH
    libvirt_uri: str = "qemu:///system"

    @property
    def instance_dir(self):
        return paths.instance_dir(self.instances_path, self.instance_uuid)


def validate(params):
    """Every check on the input, before anything is touched; returns a Request."""
    uuid = paths.validate_uuid(params.get("instance_uuid"), step=STEP)
    volume_id = params.get("volume_id")
    if not isinstance(volume_id, str) or not VOLUME_ID_RE.match(volume_id):
        raise common.invalid("volume_id %r must be 1-64 letters, digits, '-' or '_' (a Cinder volume UUID)" % (volume_id,))
    state = params.get("state") or "present"
    if state not in STATES:
        raise common.invalid("state %r is not one of %s" % (state, ", ".join(STATES)))
    bus = params.get("bus") or "virtio"
    if bus not in volume_xml.BUSES:
        raise common.invalid("bus %r is not one of %s" % (bus, ", ".join(volume_xml.BUSES)))
    req = Request(
        instance_uuid=uuid, volume_id=volume_id, state=state, bus=bus,
        iscsi_initiator=params.get("iscsi_initiator") or "auto",
        # Bounded: 10**30 overflowed time.monotonic() + timeout deep inside a wait, after the domain changed.
        connect_timeout=validate_seconds(given(params, "connect_timeout", 10), "connect_timeout", STEP),
        detach_timeout=validate_seconds(given(params, "detach_timeout", 30), "detach_timeout", STEP),
        instances_path=paths.validate_instances_path(given(params, "instances_path", paths.DEFAULT_INSTANCES_PATH),
                                                     step=STEP),
        libvirt_uri=validate_libvirt_uri(given(params, "libvirt_uri", LIBVIRT_URI_DEFAULT), STEP),
    )
    if req.iscsi_initiator not in iscsi.INITIATORS:
        raise common.invalid("iscsi_initiator %r is not one of %s" % (req.iscsi_initiator, ", ".join(iscsi.INITIATORS)))
    if state == "absent":
        return req
    info = params.get("connection_info")
    if not isinstance(info, dict) or not isinstance(info.get("data") or {}, dict):
        raise common.invalid("connection_info must be a dict {driver_volume_type: ..., data: {...}}")
    driver = info.get("driver_volume_type")
    if driver not in DRIVERS:
        raise common.invalid("unknown driver_volume_type %r (one of: %s)" % (driver, ", ".join(sorted(DRIVERS))))
    data = info.get("data") or {}
    if data.get("encrypted"):
        raise common.invalid("encrypted volumes are not supported (no LUKS front end yet)")
    result = DRIVERS[driver](data)
    req.spec, req.password = result if isinstance(result, tuple) else (result, None)
    access = data.get("access_mode") or "rw"
    if access not in ACCESS_MODES:
        raise common.invalid("access_mode %r is not rw or ro" % (access,))
    req.spec["read_only"] = access == "ro"
    req.spec["discard"] = bool(data.get("discard"))
    if params.get("device"):
        req.device = volume_xml.check_device(params["device"], bus)
    boot_index = params.get("boot_index")
    if boot_index is not None:
        if isinstance(boot_index, bool) or not isinstance(boot_index, int) or boot_index < 0:
            raise common.invalid("boot_index %r must be an integer >= 0" % (boot_index,))
        req.boot_index = boot_index
    return req


# ---------------------------------------------------------------------------------------------
# libvirt helpers


def _call(what, fn, *args):
    libvirt = libvirt_module(STEP)
    try:
        return fn(*args)
    except libvirt.libvirtError as exc:
        raise VolumeError("%s failed: %s" % (what, _qemu_reason(exc.get_error_message())))


def _qemu_reason(message):
    """QEMU's own words at the end of libvirt's message, without the -blockdev JSON before them."""
    return message.rsplit("}: ", 1)[-1].strip() if "-blockdev" in message else message


def _parse(xml):
    return compare.parse(xml, step=STEP)


def _domain_xmls(dom):
    """(persistent config, live XML or None) of a domain, parsed."""
    config = _parse(_call("reading the domain XML", dom.XMLDesc, VIR_DOMAIN_XML_INACTIVE))
    live = _parse(_call("reading the live domain XML", dom.XMLDesc, 0)) if dom.isActive() else None
    return config, live


def _to_text(element):
    return compare._etree().tostring(element, encoding="unicode")


def _find_domain(conn, uuid):
    try:
        return find(conn, uuid=uuid)
    except DomainError as exc:
        raise VolumeError(exc.msg)


def check_not_attached_elsewhere(conn, req, key):
    """Refuse a volume another domain holds (by alias/serial or by the same source)."""
    for other in _call("listing domains", conn.listAllDomains, 0):
        if other.UUIDString() == req.instance_uuid:
            continue
        for root in _domain_xmls(other):
            if root is None:
                continue
            if volume_xml.volume_disks(root, req.volume_id) or any(
                    volume_xml.source_key(d) == key for d in root.iterfind("devices/disk")):
                raise VolumeError("volume %s is already attached to domain %s; detach it there first "
                                  "(multi-attach is not supported)" % (req.volume_id, other.name()))


def probe(conn, uri, disk, arch, timeout):
    """Open the volume the way QEMU will at boot: a transient, paused, auto-destroyed domain with only this
    disk, started by a child process (see ``probe.py``). Its failure is QEMU's own reason (no such LUN,
    CHAP refused, no such export)."""
    etree = compare._etree()
    name = "nimbus-volume-probe-%s" % uuidlib.uuid4().hex[:12]
    root = etree.Element("domain", type="qemu")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "memory", unit="MiB").text = "16"
    etree.SubElement(root, "vcpu").text = "1"
    os_el = etree.SubElement(root, "os")
    etree.SubElement(os_el, "type", arch=arch).text = "hvm"
    devices = etree.SubElement(root, "devices")
    probe_disk = copy.deepcopy(disk)
    for boot in probe_disk.findall("boot"):
        probe_disk.remove(boot)
    devices.append(probe_disk)
    error = volume_probe.run(conn, uri, name, _to_text(root), timeout, libvirt_module(STEP))
    if error is not None:
        raise VolumeError("the volume cannot be opened: %s" % _qemu_reason(error))


def _wait_detached(dom, volume_id, timeout):
    """Poll the live XML until the guest released the device, re-asking it now and then (a guest that was
    still booting may have missed the first unplug request)."""
    libvirt = libvirt_module(STEP)
    deadline = time.monotonic() + timeout
    next_retry = time.monotonic() + DETACH_RETRY
    while True:
        try:
            if not dom.isActive():
                return
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            # Undefined and destroyed meanwhile (or libvirtd went away): say so, not a traceback.
            what = ("the domain went away" if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
                    else "reading the live domain XML failed")
            raise VolumeError("%s while waiting for the guest to release volume %s: %s; run state=absent again to "
                              "remove what is left" % (what, volume_id, exc.get_error_message()))
        disks = volume_xml.volume_disks(_parse(xml), volume_id)
        if not disks:
            return
        now = time.monotonic()
        if now >= deadline:
            raise VolumeError("the guest did not release volume %s within %.0f s (is it still in use in the guest?); "
                              "it stays attached" % (volume_id, timeout), retryable=True)
        if now >= next_retry:
            next_retry = now + DETACH_RETRY
            try:
                dom.detachDeviceFlags(_to_text(disks[0]), VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError:
                pass  # "already in the process of unplug" is fine
        time.sleep(POLL)


# ---------------------------------------------------------------------------------------------
# libvirt.xml and the journal


def _libvirt_xml_path(req):
    path = os.path.join(req.instance_dir, LIBVIRT_XML)
    return paths.require_inside(path, req.instances_path, step=STEP)


def edit_libvirt_xml(req, edit, check_mode):
    """Apply ``edit(root) -> bool`` to ``<uuid>/libvirt.xml`` (atomically); returns (changed, before, after)."""
    path = _libvirt_xml_path(req)
    old = read_bytes(path)
    if old is None:
        return False, "", ""
    root = _parse(old)
    if not edit(root):
        text = old.decode("utf-8")
        return False, text, text
    new = compare._etree().tostring(root, pretty_print=True, encoding="utf-8")
    if not check_mode:
        write_atomic(path, new, mode=0o600)
    return True, old.decode("utf-8"), new.decode("utf-8")


def _same(a, b):
    return compare.to_string(compare.canonical(a)) == compare.to_string(compare.canonical(b))


def _insert_edit(disk, volume_id):
    def edit(root):
        present = volume_xml.volume_disks(root, volume_id)
        if len(present) == 1 and _same(present[0], disk):
            return False
        volume_xml.remove_volume(root, volume_id)
        volume_xml.insert_disk(root, copy.deepcopy(disk))
        return True
    return edit


def _remove_edit(volume_id):
    return lambda root: volume_xml.remove_volume(root, volume_id) > 0


def load_journal(req):
    """The instance's journal, read and checked before anything changes: attach and detach record in it
    after changing the domain, and a journal that cannot be read then would leave a volume half-done."""
    journal = Journal(req.instance_dir, step=STEP)
    entry = journal.data["steps"].get(STEP)
    volumes = entry.get("volumes", {}) if entry is not None else {}
    if entry is not None and (not isinstance(volumes, dict) or not all(isinstance(v, dict) for v in volumes.values())
                              or not isinstance(entry.get("created", []), list)):
        raise VolumeError("the build journal %s has a malformed %s entry (volumes must be an object, created a list): "
                          "repair it first" % (journal.path, STEP))
    return journal


def _journal_add(journal, req, record, created):
    entry = journal.step(STEP)
    volumes = dict(entry.get("volumes", {}))
    volumes[req.volume_id] = record
    journal.record(STEP, created=created, volumes=volumes)


def _journal_restore(journal, raw):
    """Put ``instance.json`` back as it was (``raw`` None: there was none)."""
    if raw is None:
        if os.path.exists(journal.path):
            os.unlink(journal.path)
    else:
        write_atomic(journal.path, raw, mode=0o600)


def _journal_remove(journal, req):
    """Forget the volume in the journal; returns its record (device, secret, session) or {}."""
    entry = journal.data["steps"].get(STEP)
    if not entry:
        return {}
    record = entry.get("volumes", {}).pop(req.volume_id, None) or {}
    gone = {"volume:%s" % req.volume_id, "secret:%s" % record.get("secret_uuid"), "iscsi-session:%s" % record.get("session")}
    entry["created"] = [item for item in entry.get("created", []) if item not in gone]
    if journal.exists():
        journal.save()
    return record


# ---------------------------------------------------------------------------------------------
# attach


def _wanted_key(req, initiator):
    if initiator == "host":
        return ("block", iscsi.device_path(req.spec))
    hosts = tuple(sorted((h, str(p)) for h, p in req.spec["hosts"]))
    return (req.spec["protocol"], req.spec.get("name"), hosts)


def _boot_order(req, config):
    # libvirt refuses per-device <boot order> next to <os><boot dev>; such a domain boots from its first disk.
    if req.boot_index is None or config.find("os/boot") is not None:
        return None
    return req.boot_index + 1


class _Undo:
    """What this call made, undone in reverse order when a later step fails."""

    def __init__(self):
        self.steps = []

    def push(self, what, fn):
        self.steps.append((what, fn))

    def run(self):
        """Undo everything (best effort: every step is tried); returns what could not be undone."""
        failed = []
        for what, fn in reversed(self.steps):
            try:
                fn()
            except Exception as exc:  # the original error is the one to report; this one is added to it
                failed.append("%s (%s)" % (what, getattr(exc, "msg", None) or exc))
        return failed


def _rolled_back(exc, undo, what):
    """Undo, then the error to raise: a NimbusError as it is, anything else (a full or read-only disk under
    libvirt.xml or the journal, a bug) as a VolumeError naming the step; plus what could not be undone."""
    failed = undo.run()
    if isinstance(exc, NimbusError) and not failed:
        return exc
    if isinstance(exc, NimbusError):
        msg = exc.msg
    elif isinstance(exc, OSError):
        msg = "%s failed: %s%s" % (what, exc.strerror or exc, ": %s" % exc.filename if exc.filename else "")
    else:
        msg = "%s failed: %s: %s" % (what, type(exc).__name__, exc)
    if failed:
        msg += "; rollback incomplete, left behind: %s" % ", ".join(failed)
    elif undo.steps:
        msg += "; rolled back (nothing this call made is left)"
    return VolumeError(msg, retryable=exc.retryable if isinstance(exc, NimbusError) else None)


def attach(conn, req, check_mode):
    libvirt_module(STEP)  # no bindings: a clear error before anything
    dom = _find_domain(conn, req.instance_uuid)
    if dom is None:
        raise VolumeError("domain %s is not defined: run nimbus.compute.domain state=defined first"
                          % paths.domain_name(req.instance_uuid))
    active = bool(dom.isActive())
    config, live = _domain_xmls(dom)
    initiator, reason = (iscsi.initiator_for(req.spec, req.iscsi_initiator) if req.spec["driver"] == "iscsi"
                         else (None, "QEMU connects itself"))
    key = _wanted_key(req, initiator)
    result = {"changed": False, "driver_volume_type": req.spec["driver"], "iscsi_initiator": initiator,
              "initiator_reason": reason, "live": active, "secret_uuid": None}
    if req.spec.get("auth_username"):
        result["secret_uuid"] = req.spec.get("secret_uuid") or secrets.secret_uuid(req.volume_id)
    mine = volume_xml.volume_disks(config, req.volume_id)
    for root in (config, live):
        for disk in (root.iterfind("devices/disk") if root is not None else ()):
            if volume_xml.source_key(disk) == key and not volume_xml.is_volume(disk, req.volume_id):
                raise VolumeError("this server already has a disk on the same source (%s); refusing to attach it twice"
                                  % disk.find("target").get("dev"))
    check_not_attached_elsewhere(conn, req, key)
    if mine:
        existing = mine[0]
        if volume_xml.source_key(existing) != key:
            raise VolumeError("volume %s is already attached to this server with another source; detach it first"
                              % req.volume_id)
        device = existing.find("target").get("dev")
        if req.device and req.device != device:
            raise VolumeError("volume %s is already attached as %s, not %s; detach it first"
                              % (req.volume_id, device, req.device))
        return _already_attached(conn, req, result, existing, initiator, check_mode)

    used = volume_xml.used_devs(config, live)
    device = req.device or volume_xml.next_free(used, req.bus)
    if req.boot_index == 0 and not req.device:
        # Boot from volume: the firmware boots the first disk and a kernel's root= names vda (Nova's root device).
        device = volume_xml.dev_name(DISK_BUS_PREFIX[req.bus], 0)
    if device in used:
        raise common.invalid("device %s is already used by another disk of this server" % device)
    result.update(device=device, bus=req.bus)
    spec = dict(req.spec)
    if spec["driver"] == "rbd" and spec.get("secret_uuid") and secrets.lookup(conn, spec["secret_uuid"]) is None:
        raise common.invalid("libvirt has no Ceph secret %s (define it on the host, as Nova's rbd_secret_uuid)"
                             % spec["secret_uuid"])
    if spec["driver"] != "rbd":
        host, portnum = spec["hosts"][0]
        common.check_reachable(host, portnum, req.connect_timeout,
                               "iSCSI portal" if spec["driver"] == "iscsi" else "NBD server")
    disk = volume_xml.disk_element(dict(spec, secret_uuid=result["secret_uuid"], device_path=None), device, req.bus,
                                   req.volume_id, _boot_order(req, config))
    # Read (and parse) libvirt.xml and the journal now: after the attach is too late to find them unreadable.
    changed, before, after = edit_libvirt_xml(req, _insert_edit(disk, req.volume_id), check_mode=True)
    journal = load_journal(req)
    if check_mode:
        result.update(changed=True, disk_xml=_to_text(disk), diff={"before": before, "after": after})
        return result
    journal_raw = read_bytes(journal.path)
    undo = _Undo()
    step = "preparing volume %s" % req.volume_id
    try:
        created = ["volume:%s" % req.volume_id]
        if spec["driver"] == "iscsi" and spec["auth_username"]:
            step = "storing the CHAP secret of volume %s" % req.volume_id
            uuid, made = secrets.define(conn, req.volume_id, req.password)
            if made:
                undo.push("libvirt secret %s" % uuid, lambda: secrets.undefine(conn, uuid))
                created.append("secret:%s" % uuid)
        record = {"driver": spec["driver"], "device": device, "initiator": initiator, "secret_uuid": result["secret_uuid"]}
        if initiator == "host":
            step = "logging in to iSCSI target %s" % spec["iqn"]
            spec["device_path"] = iscsi.login(spec, req.connect_timeout)
            undo.push("iSCSI session %s" % spec["iqn"], lambda: iscsi.logout(spec))
            record.update(session="%s,%s" % (spec["iqn"], iscsi.portal_text(*spec["hosts"][0])), iqn=spec["iqn"],
                          portal=iscsi.portal_text(*spec["hosts"][0]), lun=spec["lun"])
            created.append("iscsi-session:%s" % record["session"])
            disk = volume_xml.disk_element(dict(spec, secret_uuid=result["secret_uuid"]), device, req.bus, req.volume_id,
                                           _boot_order(req, config))
        text = _to_text(disk)
        if spec["driver"] != "rbd":
            # Also before a hot attach: a target that hangs QEMU's open must not hang the running server's QEMU.
            step = "opening volume %s" % req.volume_id
            probe(conn, req.libvirt_uri, disk, (config.find("os/type").get("arch") or "x86_64"), req.connect_timeout + 5)
        # Journal first (write-ahead): a disk that cannot take it fails here, before the domain changes, and a
        # run killed after the attach still leaves a record that state=absent cleans up.
        step = "recording volume %s in %s" % (req.volume_id, journal.path)
        undo.push("journal entry of volume %s in %s" % (req.volume_id, journal.path),
                  lambda: _journal_restore(journal, journal_raw))
        _journal_add(journal, req, record, created)
        flags = VIR_DOMAIN_AFFECT_CONFIG | (VIR_DOMAIN_AFFECT_LIVE if active else 0)
        step = "attaching volume %s as %s" % (req.volume_id, device)
        _call(step, dom.attachDeviceFlags, text, flags)
        undo.push("disk %s of domain %s" % (device, dom.name()), lambda: dom.detachDeviceFlags(text, flags))
        # Last, and atomic: when it fails the file is unchanged, and the undo above detaches the disk again.
        step = "updating %s after attaching volume %s" % (_libvirt_xml_path(req), req.volume_id)
        changed, before, after = edit_libvirt_xml(req, _insert_edit(disk, req.volume_id), check_mode=False)
    except BaseException as exc:  # any failure, not only libvirt's: nothing half-attached stays
        if not isinstance(exc, Exception):  # interrupted: undo, and let the interruption through
            undo.run()
            raise
        error = _rolled_back(exc, undo, step)
        if error is exc:
            raise
        raise error from exc
    result.update(changed=True, disk_xml=text, libvirt_xml_updated=changed, diff={"before": before, "after": after})
    return result


def _already_attached(conn, req, result, existing, initiator, check_mode):
    """Idempotent re-run: refresh a CHAP secret that went missing and the libvirt.xml copy; nothing else."""
    target = existing.find("target")
    device, bus = target.get("dev"), target.get("bus")
    result.update(device=device, bus=bus, disk_xml=_to_text(existing))
    changed = False
    if req.spec.get("auth_username") and req.spec["driver"] == "iscsi":
        if secrets.lookup(conn, result["secret_uuid"]) is None:
            changed = True
            if not check_mode:
                secrets.define(conn, req.volume_id, req.password)
    boot = existing.find("boot")
    spec = dict(req.spec, secret_uuid=result["secret_uuid"],
                device_path=iscsi.device_path(req.spec) if initiator == "host" else None)
    wanted = volume_xml.disk_element(spec, device, bus, req.volume_id, boot.get("order") if boot is not None else None)

    def edit(root):
        # libvirt formats a disk with more than we set: an equal source on the same device is the same disk.
        present = volume_xml.volume_disks(root, req.volume_id)
        if len(present) == 1 and volume_xml.source_key(present[0]) == volume_xml.source_key(wanted) \
                and present[0].find("target").get("dev") == device:
            return False
        return _insert_edit(wanted, req.volume_id)(root)

    xml_changed, before, after = edit_libvirt_xml(req, edit, check_mode)
    result.update(changed=changed or xml_changed, libvirt_xml_updated=xml_changed, diff={"before": before, "after": after})
    return result


# ---------------------------------------------------------------------------------------------
# detach


def detach(conn, req, check_mode):
    libvirt = libvirt_module(STEP)
    dom = _find_domain(conn, req.instance_uuid)
    result = {"changed": False, "live": False, "device": None}
    # Read (and parse) libvirt.xml and the journal first: once the disk is gone from the domain, a file that
    # cannot be read would stop the detach half-way.
    edit_libvirt_xml(req, _remove_edit(req.volume_id), check_mode=True)
    journal = load_journal(req)
    if dom is not None:
        config, live = _domain_xmls(dom)
        in_config = volume_xml.volume_disks(config, req.volume_id)
        in_live = volume_xml.volume_disks(live, req.volume_id) if live is not None else []
        found = (in_live or in_config)
        if found:
            result.update(changed=True, device=found[0].find("target").get("dev"), live=bool(in_live))
        if found and not check_mode:
            if in_live:
                _call("detaching volume %s from the running domain" % req.volume_id, dom.detachDeviceFlags,
                      _to_text(in_live[0]), VIR_DOMAIN_AFFECT_LIVE)
                _wait_detached(dom, req.volume_id, req.detach_timeout)
            if in_config:
                try:
                    dom.detachDeviceFlags(_to_text(in_config[0]), VIR_DOMAIN_AFFECT_CONFIG)
                except libvirt.libvirtError as exc:
                    raise VolumeError("removing volume %s from the domain definition failed: %s"
                                      % (req.volume_id, exc.get_error_message()))
    what = "updating %s" % _libvirt_xml_path(req)
    try:
        xml_changed, before, after = edit_libvirt_xml(req, _remove_edit(req.volume_id), check_mode)
    except OSError as exc:
        # The domain no longer has the disk; the rest is idempotent, so a re-run finishes it.
        raise VolumeError("volume %s is detached from the domain, but %s failed: %s; run state=absent again once "
                          "the disk is writable" % (req.volume_id, what, exc.strerror or exc))
    result.update(libvirt_xml_updated=xml_changed, diff={"before": before, "after": after})
    record = journal.step(STEP).get("volumes", {}).get(req.volume_id) or {}
    uuid = secrets.secret_uuid(req.volume_id)
    if secrets.lookup(conn, uuid) is not None:
        result["changed"] = True
        if not check_mode:
            secrets.undefine(conn, uuid)
    if record.get("session"):
        result["changed"] = True
        if not check_mode:
            iscsi.logout({"iqn": record["iqn"], "hosts": [iscsi.parse_portal(record["portal"])]})
    if not check_mode:
        # Last: until the secret and the session are gone, the journal still names them for a re-run.
        try:
            _journal_remove(journal, req)
        except OSError as exc:
            raise VolumeError("volume %s is detached, but updating the build journal %s failed: %s; run state=absent "
                              "again once the disk is writable" % (req.volume_id, journal.path, exc.strerror or exc))
    result["changed"] = result["changed"] or xml_changed
    return result


def run(params, check_mode=False):
    """The ``volume_attach`` step: one volume on one server, under the per-instance lock and the volume's
    own lock (two servers racing for one volume: one gets it, the other is refused). Check mode only reads,
    and takes no lock: it must create nothing, not even a lock file."""
    req = validate(params)
    step = attach if req.state == "present" else detach
    with Connection(req.libvirt_uri, step=STEP) as conn:
        if check_mode or not os.path.isdir(req.instances_path):
            return step(conn, req, check_mode)
        volume_lock = FileLock(os.path.join(paths.locks_dir(req.instances_path), "volume-%s.lock" % req.volume_id),
                               timeout=LOCK_TIMEOUT, what="volume %s" % req.volume_id, step=STEP)
        with instance_lock(req.instances_path, req.instance_uuid, STEP), volume_lock:
            return step(conn, req, check_mode)
