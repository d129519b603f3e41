# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The user and group QEMU runs as, so instance dirs (0700) and disks (0600) stay reachable for it.

Read from /etc/libvirt/qemu.conf: an active ``user = "..."`` wins; otherwise the commented
``#user = "..."`` line, which libvirt's packaging fills with the build-time default
(Debian: libvirt-qemu); otherwise a known QEMU user; otherwise root.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass

QEMU_CONF = "/etc/libvirt/qemu.conf"
KNOWN_USERS = ("libvirt-qemu", "qemu")


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    user: str
    group: str


ROOT = Owner(0, 0, "root", "root")


def _conf_values(text, key):
    """(active value, commented build default) of ``key`` in qemu.conf text."""
    active = default = None
    for match in re.finditer(r'^(#?)%s\s*=\s*"([^"]*)"' % key, text, re.MULTILINE):
        if match.group(1):
            default = default or match.group(2)
        else:
            active = match.group(2)
    return active, default


def _user(value):
    """pwd entry for a name, "+uid" or a numeric string; None when unknown."""
    if value.startswith("+") and value[1:].isdigit():
        try:
            return pwd.getpwuid(int(value[1:]))
        except KeyError:
            return None
    try:
        return pwd.getpwnam(value)
    except KeyError:
        if value.isdigit():
            try:
                return pwd.getpwuid(int(value))
            except KeyError:
                return None
    return None


def _group_id(value):
    if value.startswith("+") and value[1:].isdigit():
        return int(value[1:])
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        return int(value) if value.isdigit() else None


def qemu_owner(conf_path=QEMU_CONF):
    try:
        with open(conf_path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        text = ""
    user_active, user_default = _conf_values(text, "user")
    group_active, group_default = _conf_values(text, "group")
    candidates = [v for v in (user_active, user_default) if v] + list(KNOWN_USERS)
    entry = next((e for e in (_user(v) for v in candidates) if e is not None), None)
    if entry is None:
        return ROOT
    gid = None
    for value in (group_active, group_default):
        if value:
            gid = _group_id(value)
            if gid is not None:
                break
    if gid is None:
        gid = entry.pw_gid
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return Owner(entry.pw_uid, gid, entry.pw_name, group)


def apply_owner(path, owner):
    """chown ``path`` (never following a symlink); only root can, elsewhere files stay ours."""
    if os.geteuid() != 0:
        return
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
        os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
