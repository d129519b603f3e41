"""The volume probe's child process: its answer, its time limit, and the clean-up after a kill."""

from __future__ import annotations

import os
import stat
import time

import libvirt
import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._volume import probe
from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import VolumeError

XML = "<domain type='test'><name>nimbus-volume-probe-unit</name><memory>16384</memory><os><type>hvm</type></os></domain>"


class NoSuchDomain(libvirt.libvirtError):
    def __init__(self):
        super().__init__("Domain not found")


class Conn:
    """lookupByName answers ``domain`` ``present`` times, then 'not found'."""

    def __init__(self, present=0, domain=None):
        self.present, self.domain, self.lookups = present, domain, 0

    def lookupByName(self, name):
        self.lookups += 1
        if self.lookups > self.present:
            raise NoSuchDomain()
        return self.domain


class Domain:
    def __init__(self):
        self.destroyed = 0

    def destroy(self):
        self.destroyed += 1


def fake_python(tmp_path, body):
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_real_child_reports_libvirts_own_message():
    # libvirt's test driver refuses the PAUSED|AUTODESTROY flags: the child must carry that message back.
    conn = libvirt.open("test:///default")
    try:
        error = probe.run(conn, "test:///default", "nimbus-volume-probe-unit", XML, 30, libvirt)
    finally:
        conn.close()
    assert error is not None and "unsupported flags (0x3)" in error


def test_child_that_opens_the_volume_answers_none(tmp_path):
    python = fake_python(tmp_path, "cat >/dev/null; echo '{\"ok\": true}'")
    assert probe.run(Conn(), "qemu:///system", "p", XML, 10, libvirt, python=python) is None


def test_silent_child_is_killed_in_time_and_its_domain_destroyed(tmp_path):
    python = fake_python(tmp_path, "exec sleep 60")
    domain = Domain()
    conn = Conn(present=2, domain=domain)
    started = time.monotonic()
    with pytest.raises(VolumeError, match=r"did not finish within 1 s \(is the target answering\?\)") as err:
        probe.run(conn, "qemu:///system", "p", XML, 1, libvirt, python=python)
    assert time.monotonic() - started < 5
    assert err.value.retryable is True
    assert domain.destroyed >= 1 and conn.lookups == 3  # destroyed, then seen gone


def test_probe_domain_that_never_goes_away_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "GONE_TIMEOUT", 1.0)
    python = fake_python(tmp_path, "exec sleep 60")
    conn = Conn(present=10 ** 6, domain=Domain())
    with pytest.raises(VolumeError, match="probe domain nimbus-volume-probe-x did not go away"):
        probe.run(conn, "qemu:///system", "nimbus-volume-probe-x", XML, 1, libvirt, python=python)


def test_child_without_an_answer_is_an_error_with_its_stderr(tmp_path):
    python = fake_python(tmp_path, "echo 'Traceback: boom' >&2; exit 3")
    with pytest.raises(VolumeError, match="exited with 3 without an answer: Traceback: boom"):
        probe.run(Conn(), "qemu:///system", "p", XML, 10, libvirt, python=python)


def test_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(VolumeError, match="cannot start the volume probe"):
        probe.run(Conn(), "qemu:///system", "p", XML, 10, libvirt, python=os.path.join(str(tmp_path), "nope"))
