# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""iSCSI volumes, as os-brick's ISCSIConnector does it for Nova, in two ways:

* host-side login with ``iscsiadm`` (one runner) when the host kernel has the ``iscsi_tcp``
  transport; the domain then gets the block device ``/dev/disk/by-path/ip-...-lun-N``;
* QEMU's own initiator (libiscsi) otherwise: ``<disk type='network'><source protocol='iscsi'>``.

``initiator_for`` probes and picks. CHAP volumes always use QEMU's initiator: libvirt hands QEMU the
password from a libvirt secret, whereas ``iscsiadm`` would need it on its command line.
"""

from __future__ import annotations

import os
import re
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandRunner
from ansible_collections.nimbus.compute.plugins.module_utils._volume import common
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import STEP, VolumeError

DEFAULT_PORT = 3260
# SAM flat-space addressing: 14-bit LUNs.
MAX_LUN = 16383
INITIATORS = ("auto", "host", "qemu")
AUTH_METHODS = ("CHAP",)
# RFC 3720 names: iqn.YYYY-MM.reversed.domain[:anything], eui.<16 hex>, naa.<16|32 hex>. No '/' or space:
# QEMU's source name is "<iqn>/<lun>".
IQN_RE = re.compile(r"^(iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[^\s/]{1,200})?|eui\.[0-9a-f]{16}"
                    r"|naa\.([0-9a-f]{16}|[0-9a-f]{32}))\Z", re.IGNORECASE)
CHAP_USER_RE = re.compile(r"^[\x21-\x7e]{1,255}\Z")
TRANSPORT_PATHS = ("/sys/class/iscsi_transport/tcp", "/sys/module/iscsi_tcp")

ISCSIADM = CommandRunner("iscsiadm", step=STEP, timeout=30.0)
# iscsiadm exit codes that mean "already done" (ISCSI_ERR_SESS_EXISTS, ISCSI_ERR_NO_OBJS_FOUND).
SESSION_EXISTS = 15
NO_OBJECTS = 21


def parse_portal(value):
    """``host[:port]`` or ``[v6]:port``, with an optional ``,tpgt`` suffix as Nova passes it -> (host, port)."""
    text = str(value or "").strip().split(",", 1)[0]
    if not text:
        raise common.invalid("connection_info.data.target_portal is required (host:port)")
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise common.invalid("iSCSI portal %r is not [IPv6]:port (unclosed bracket or text after it)" % value)
        portnum = rest[1:] if rest else None
    elif text.count(":") == 1:
        address, portnum = text.split(":")
    else:
        address, portnum = text, None
    return common.host(address, "iSCSI portal"), common.port(portnum, "iSCSI portal port", DEFAULT_PORT)


def portal_text(host, portnum):
    return "[%s]:%d" % (host, portnum) if ":" in host else "%s:%d" % (host, portnum)


MULTIPATH_KEYS = (("target_portal", "target_portals"), ("target_iqn", "target_iqns"), ("target_lun", "target_luns"))


def single_path(data):
    """Cinder's multipath lists (``target_portals``/``target_iqns``/``target_luns``, one entry per path) -> the
    singular keys. Multipath is not supported: a singular key wins, and when it is missing the first path's
    entry is used, which is the path Cinder also names in the singular keys."""
    data = dict(data)
    lengths = set()
    for single, plural in MULTIPATH_KEYS:
        values = data.get(plural)
        if values is None:
            continue
        if not isinstance(values, list) or not values:
            raise common.invalid("connection_info.data.%s must be a non-empty list (one entry per path)" % plural)
        lengths.add(len(values))
        if data.get(single) is None or data.get(single) == "":
            data[single] = values[0]
    if len(lengths) > 1:
        raise common.invalid("connection_info.data target_portals, target_iqns and target_luns must have one entry "
                             "per path (got lengths %s)" % ", ".join(str(n) for n in sorted(lengths)))
    return data


def validate(data):
    """Nova's iSCSI ``connection_info.data`` -> (source spec, CHAP password or None)."""
    data = single_path(data)
    host, portnum = parse_portal(data.get("target_portal"))
    iqn = common.require_str(data, "target_iqn", "the target's IQN")
    if not IQN_RE.match(iqn):
        raise common.invalid("target_iqn %r is not an iSCSI name (iqn.YYYY-MM.domain[:id], eui. or naa.)" % iqn)
    lun = data.get("target_lun")
    lun = 0 if lun is None else lun
    if isinstance(lun, bool) or not isinstance(lun, (int, str)) or not str(lun).strip().isdigit():
        raise common.invalid("target_lun %r is not a LUN number" % (lun,))
    lun = int(str(lun).strip())
    if lun > MAX_LUN:
        raise common.invalid("target_lun %d is out of range (0-%d)" % (lun, MAX_LUN))
    method = data.get("auth_method") or None
    password = None
    username = None
    if method is not None and str(method).lower() != "none":
        if str(method).upper() not in AUTH_METHODS:
            raise common.invalid("auth_method %r is not supported (CHAP or none)" % method)
        username = common.require_str(data, "auth_username", "CHAP user name")
        if not CHAP_USER_RE.match(username):
            raise common.invalid("auth_username must be 1-255 printable characters without spaces")
        password = data.get("auth_password")
        if not isinstance(password, str) or not password:
            raise common.invalid("connection_info.data.auth_password (CHAP secret) is required with auth_method CHAP")
    return {
        "driver": "iscsi",
        "protocol": "iscsi",
        "name": "%s/%d" % (iqn, lun),
        "iqn": iqn,
        "lun": lun,
        "hosts": [(host, portnum)],
        "auth_username": username,
        "secret_type": "iscsi" if username else None,
    }, password


def host_login_supported():
    """(supported, reason): host-side login needs the kernel's iscsi_tcp transport and iscsiadm."""
    if not any(os.path.exists(p) for p in TRANSPORT_PATHS):
        return False, "the kernel has no iscsi_tcp transport (module not loaded; nimbus.compute never loads modules)"
    try:
        ISCSIADM.path()
    except CommandError as exc:
        return False, exc.msg
    return True, "iscsi_tcp transport and iscsiadm present"


def initiator_for(spec, wanted="auto", supported=None):
    """(``host``|``qemu``, reason). ``supported`` is host_login_supported()'s answer (probed when None)."""
    if wanted not in INITIATORS:
        raise common.invalid("iscsi_initiator %r is not one of %s" % (wanted, ", ".join(INITIATORS)))
    if wanted == "qemu":
        return "qemu", "requested"
    ok, reason = supported if supported is not None else host_login_supported()
    if spec["auth_username"]:
        if wanted == "host":
            raise common.invalid("CHAP volumes use QEMU's initiator: iscsiadm would need the secret on its command line")
        return "qemu", "CHAP secret stays in a libvirt secret"
    if ok:
        return "host", reason
    if wanted == "host":
        raise VolumeError("host-side iSCSI login is not possible here: %s" % reason)
    return "qemu", reason


def device_path(spec):
    """udev's stable name for a host-side LUN (what os-brick waits for)."""
    host, portnum = spec["hosts"][0]
    return "/dev/disk/by-path/ip-%s-iscsi-%s-lun-%d" % (portal_text(host, portnum), spec["iqn"], spec["lun"])


def _node(spec):
    host, portnum = spec["hosts"][0]
    return ["-m", "node", "-T", spec["iqn"], "-p", portal_text(host, portnum)]


def login(spec, timeout, runner=None, exists=os.path.exists, sleep=time.sleep):
    """Host-side login (no CHAP: see the module docstring) and a bounded wait for the LUN's device."""
    runner = runner or ISCSIADM
    runner.run([*_node(spec), "-o", "new"])
    result = runner.run([*_node(spec), "--login"], check=False, timeout=timeout)
    if result.rc not in (0, SESSION_EXISTS):
        runner.run([*_node(spec), "-o", "delete"], check=False)
        detail = (result.stderr.strip() or result.stdout.strip())[-500:]
        raise VolumeError("iSCSI login to %s on %s failed: %s" % (spec["iqn"], portal_text(*spec["hosts"][0]), detail))
    path = device_path(spec)
    deadline = time.monotonic() + timeout
    while not exists(path):
        if time.monotonic() >= deadline:
            logout(spec, runner=runner)
            raise VolumeError("LUN %d of %s did not appear as %s within %.0f s" % (spec["lun"], spec["iqn"], path, timeout))
        sleep(0.2)
    return path


def logout(spec, runner=None):
    """Log the host out of the target and forget the node record; already logged out is fine."""
    runner = runner or ISCSIADM
    result = runner.run([*_node(spec), "--logout"], check=False)
    if result.rc not in (0, NO_OBJECTS):
        raise VolumeError("iSCSI logout from %s failed: %s" % (spec["iqn"], (result.stderr.strip() or "no output")[-500:]))
    runner.run([*_node(spec), "-o", "delete"], check=False)
