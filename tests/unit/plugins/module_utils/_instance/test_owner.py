from __future__ import annotations

import os
import pwd

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._instance import owner


def _conf(tmp_path, text):
    path = tmp_path / "qemu.conf"
    path.write_text(text)
    return str(path)


def test_active_setting_wins_over_build_default(tmp_path):
    conf = _conf(tmp_path, '#user = "libvirt-qemu"\n#group = "libvirt-qemu"\nuser = "+0"\ngroup = "+0"\n')
    assert owner.qemu_owner(conf) == owner.Owner(0, 0, "root", "root")


def test_commented_build_default_is_used(tmp_path):
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    conf = _conf(tmp_path, '#       user = "qemu"   # an example, indented: not the default\n#user = "nobody"\n')
    found = owner.qemu_owner(conf)
    assert (found.uid, found.user, found.gid) == (entry.pw_uid, "nobody", entry.pw_gid)


def test_unknown_user_falls_back_to_known_users_or_root(tmp_path):
    found = owner.qemu_owner(_conf(tmp_path, 'user = "no-such-user-xyz"\n'))
    known = [u for u in owner.KNOWN_USERS if _exists(u)]
    assert found.user == (known[0] if known else "root")


def test_missing_conf_is_not_an_error(tmp_path):
    assert isinstance(owner.qemu_owner(str(tmp_path / "absent.conf")), owner.Owner)


def test_apply_owner_sets_ids(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    owner.apply_owner(str(target), owner.Owner(65534, 65534, "nobody", "nogroup"))
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)


def _exists(user):
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False
