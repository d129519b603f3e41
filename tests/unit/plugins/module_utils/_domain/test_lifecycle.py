"""Lifecycle logic against libvirt's built-in test driver (test:///default): fast, no QEMU."""

from __future__ import annotations

import time
import uuid as uuidlib

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._domain import lifecycle
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import DomainError, open_connection
from ansible_collections.nimbus.compute.plugins.module_utils._domain.xml_builder import METADATA_NS

libvirt = pytest.importorskip("libvirt")


def domain_xml(uuid, memory=65536, name=None, metadata=True):
    meta = "<metadata><nimbus:instance xmlns:nimbus='%s'/></metadata>" % METADATA_NS if metadata else ""
    return ("<domain type='test'><name>%s</name><uuid>%s</uuid>%s<memory unit='KiB'>%d</memory>"
            "<os><type>hvm</type></os></domain>" % (name or "instance-" + uuid, uuid, meta, memory))


@pytest.fixture
def conn():
    connection = open_connection("test:///default")
    yield connection
    connection.close()


@pytest.fixture
def uuid(conn):
    value = str(uuidlib.uuid4())
    yield value
    dom = lifecycle.find(conn, uuid=value)
    if dom is not None:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def test_state_machine_and_idempotence(conn, uuid):
    xml = domain_xml(uuid)
    expected = [("defined", "shutoff", True), ("defined", "shutoff", False), ("running", "running", True),
                ("running", "running", False), ("paused", "paused", True), ("running", "running", True),
                ("shutdown", "shutoff", True), ("shutdown", "shutoff", False), ("running", "running", True),
                ("paused", "paused", True), ("destroyed", "shutoff", True), ("destroyed", "shutoff", False)]
    for state, final, changed in expected:
        result = lifecycle.ensure(conn, uuid, xml=xml, state=state, shutdown_timeout=2)
        assert (result["state"], result["changed"]) == (final, changed), (state, result)
    assert lifecycle.ensure(conn, uuid, state="absent")["changed"] is True
    assert lifecycle.find(conn, uuid=uuid) is None
    assert lifecycle.ensure(conn, uuid, state="absent")["changed"] is False


def test_check_mode_changes_nothing(conn, uuid):
    result = lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="running", check_mode=True)
    assert result["changed"] and result["actions"] == ["define", "start"] and result["state"] == "running"
    assert lifecycle.find(conn, uuid=uuid) is None
    lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="running")
    result = lifecycle.ensure(conn, uuid, xml=domain_xml(uuid, memory=131072), state="absent", check_mode=True)
    assert result["actions"] == ["destroy", "undefine"]
    assert lifecycle.state_of(lifecycle.find(conn, uuid=uuid)) == "running"


def test_changed_xml_redefines_and_reports_pending_restart(conn, uuid):
    lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="running")
    result = lifecycle.ensure(conn, uuid, xml=domain_xml(uuid, memory=131072), state="running")
    assert result["redefined"] and result["pending_restart"] and "131072" in result["diff"]["after"]
    assert "65536" in result["diff"]["before"]
    assert lifecycle.ensure(conn, uuid, xml=domain_xml(uuid, memory=131072), state="running")["changed"] is False


def test_start_paused_satisfies_running(conn, uuid):
    # The test driver cannot start paused: the real start is covered by the integration tests.
    first = lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="running", start_paused=True, check_mode=True)
    assert first["state"] == "paused" and first["actions"] == ["define", "start paused"]
    lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="running")
    lifecycle.ensure(conn, uuid, state="paused")
    assert lifecycle.ensure(conn, uuid, state="running", start_paused=True)["changed"] is False
    assert lifecycle.ensure(conn, uuid, state="running")["actions"] == ["resume"]


def test_reboot_only_applies_to_a_running_domain(conn, uuid):
    started = lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="running", reboot="hard")
    assert "reboot hard" not in started["actions"], "a domain started by this call needs no reboot"
    assert started["warnings"] == ["reboot hard not done: domain instance-%s was not defined, so it was started instead "
                                   "(a fresh boot)" % uuid], "never silently ignored"
    again = lifecycle.ensure(conn, uuid, state="running", reboot="soft")
    assert again["changed"] and again["actions"] == ["reboot soft"] and again["state"] == "running"
    assert "warnings" not in again
    lifecycle.ensure(conn, uuid, state="destroyed")
    stopped = lifecycle.ensure(conn, uuid, state="running", reboot="hard")
    assert stopped["actions"] == ["start"] and "was shutoff" in stopped["warnings"][0]
    lifecycle.ensure(conn, uuid, state="paused")
    paused = lifecycle.ensure(conn, uuid, state="running", reboot="hard")
    assert paused["actions"] == ["resume", "reboot hard"] and paused["state"] == "running"


@pytest.mark.parametrize("kw, message", [
    (dict(state="shutdown"), "reboot hard needs state running, not shutdown"),
    (dict(state="paused"), "needs state running, not paused"),
    (dict(state="defined"), "needs state running, not defined"),
    (dict(state="absent"), "needs state running, not absent"),
    (dict(state="running", start_paused=True), "cannot be combined with start_paused"),
])
def test_reboot_with_another_end_state_is_refused_before_any_change(conn, uuid, kw, message):
    lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="running")
    with pytest.raises(ValidationError, match=message):
        lifecycle.ensure(conn, uuid, reboot="hard", **kw)
    assert lifecycle.state_of(lifecycle.find(conn, uuid=uuid)) == "running"


def test_conflicts_are_errors(conn, uuid):
    other = str(uuidlib.uuid4())
    conn.defineXML(domain_xml(other, name="instance-" + uuid))
    try:
        with pytest.raises(DomainError, match="already used by another domain with UUID %s" % other):
            lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="defined")
    finally:
        lifecycle.find(conn, uuid=other).undefine()  # not named instance-<other>: not ours to remove
    conn.defineXML(domain_xml(uuid, name="not-ours", metadata=False))
    with pytest.raises(DomainError, match="named 'not-ours'"):
        lifecycle.ensure(conn, uuid, xml=domain_xml(uuid), state="defined")
    with pytest.raises(DomainError, match="named 'not-ours'"):
        lifecycle.ensure(conn, uuid, state="absent")
    lifecycle.find(conn, uuid=uuid).undefine()
    conn.defineXML(domain_xml(uuid, metadata=False))
    with pytest.raises(DomainError, match=r"not created by nimbus\.compute"):
        lifecycle.ensure(conn, uuid, xml=domain_xml(uuid, memory=131072), state="defined")


def test_bad_input(conn, uuid):
    with pytest.raises(ValidationError, match="is not the requested uuid"):
        lifecycle.ensure(conn, uuid, xml=domain_xml(str(uuidlib.uuid4())), state="defined")
    with pytest.raises(ValidationError, match="not a valid UUID"):
        lifecycle.ensure(conn, "nope", state="absent")
    with pytest.raises(ValidationError, match="unknown state"):
        lifecycle.ensure(conn, uuid, state="gone")
    with pytest.raises(DomainError, match="is not defined and no XML"):
        lifecycle.ensure(conn, uuid, state="running")
    with pytest.raises(ValidationError, match=r"start_timeout \(seconds\) must be greater than 0"):
        lifecycle.run({"uuid": uuid, "state": "running", "start_timeout": 0, "libvirt_uri": "test:///default"})


@pytest.mark.parametrize("params, message", [
    # 10**30 s overflowed time_t inside the start's wait, after defineXML.
    ({"start_timeout": 10 ** 30}, r"start_timeout \(seconds\) is 1000000000000000000000000000000, must be at most 604800"),
    ({"shutdown_timeout": float("nan")}, r"shutdown_timeout \(seconds\) must be a finite number"),
    ({"libvirt_uri": ""}, "libvirt_uri must be a non-empty URI"),
    ({"libvirt_uri": "test:///default\0"}, "without control characters"),
    ({"instances_path": ""}, "instances_path must be an absolute path"),
    ({"instances_path": "relative"}, "instances_path must be an absolute path"),
])
def test_bad_options_fail_before_the_domain_is_defined(conn, tmp_path, uuid, params, message):
    args = {"uuid": uuid, "instances_path": str(tmp_path), "libvirt_uri": "test:///default", "xml": domain_xml(uuid),
            "state": "running"}
    args.update(params)
    with pytest.raises(ValidationError, match=message):
        lifecycle.run(args)
    assert lifecycle.find(conn, uuid=uuid) is None


def test_a_libvirt_xml_that_is_not_utf8_is_a_validation_error(conn, tmp_path, uuid):
    (tmp_path / uuid).mkdir()
    (tmp_path / uuid / "libvirt.xml").write_bytes(b"<domain>\xff\xfe</domain>")
    with pytest.raises(ValidationError, match=r"libvirt\.xml is not UTF-8 text"):
        lifecycle.run({"uuid": uuid, "instances_path": str(tmp_path), "libvirt_uri": "test:///default", "state": "running"})
    assert lifecycle.find(conn, uuid=uuid) is None


def test_bounded_call_times_out():
    started = time.monotonic()
    with pytest.raises(DomainError, match="did not finish within 0 s") as info:
        lifecycle.bounded(lambda: time.sleep(2), 0.2, "sleeping")
    assert time.monotonic() - started < 1.5 and info.value.retryable is True


def test_unreachable_uri_is_retryable_and_names_the_uri():
    uri = "qemu+unix:///system?socket=/nonexistent/sock"
    with pytest.raises(DomainError) as info:
        open_connection(uri)
    assert uri in str(info.value) and info.value.retryable is True


# The test driver's own domain, always running on test:///default.
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


@pytest.mark.parametrize("state", ["absent", "destroyed", "shutdown", "running", "paused", "defined"])
def test_a_foreign_domain_with_the_uuid_is_never_touched(conn, state):
    dom = lifecycle.find(conn, uuid=TEST_DOMAIN_UUID)
    assert dom is not None and dom.name() == "test" and dom.isActive()
    with pytest.raises(DomainError, match=r"already used by another domain named 'test'.*refusing to touch it"):
        lifecycle.ensure(conn, TEST_DOMAIN_UUID, state=state, reboot="hard" if state == "running" else None)
    with pytest.raises(DomainError, match="named 'test'"):
        lifecycle.ensure(conn, TEST_DOMAIN_UUID, state=state, check_mode=True)
    assert lifecycle.state_of(lifecycle.find(conn, uuid=TEST_DOMAIN_UUID)) == "running"


@pytest.mark.parametrize("state", ["absent", "destroyed", "running"])
def test_our_name_without_our_metadata_is_never_touched(conn, uuid, state):
    conn.defineXML(domain_xml(uuid, metadata=False)).create()
    with pytest.raises(DomainError, match=r"not created by nimbus\.compute.*refusing to touch it"):
        lifecycle.ensure(conn, uuid, state=state)
    assert lifecycle.state_of(lifecycle.find(conn, uuid=uuid)) == "running"


def test_xml_we_would_not_manage_is_refused(conn, uuid):
    with pytest.raises(ValidationError, match="is not instance-"):
        lifecycle.ensure(conn, uuid, xml=domain_xml(uuid, name="web-1"), state="defined")
    with pytest.raises(ValidationError, match="no nimbus metadata"):
        lifecycle.ensure(conn, uuid, xml=domain_xml(uuid, metadata=False), state="defined")
    assert lifecycle.find(conn, uuid=uuid) is None


def _run(tmp_path, uuid, progress):
    (tmp_path / uuid).mkdir()
    return lifecycle.run({"uuid": uuid, "instances_path": str(tmp_path), "libvirt_uri": "test:///default",
                          "xml": domain_xml(uuid), "state": "running"}, progress=progress)


def _journaled(tmp_path, uuid):
    return Journal(str(tmp_path / uuid)).created("domain")


def test_the_domain_is_journaled_before_define_and_kept_when_the_start_fails(conn, tmp_path, uuid, monkeypatch):
    seen = {}
    real_define = lifecycle.Lifecycle.define

    def define(self, xml):
        seen["at define"] = _journaled(tmp_path, uuid)  # what a run killed here leaves behind
        return real_define(self, xml)

    def start(self, dom, paused=False):
        raise DomainError("starting %s failed: injected" % dom.name(), step="domain")

    monkeypatch.setattr(lifecycle.Lifecycle, "define", define)
    monkeypatch.setattr(lifecycle.Lifecycle, "start", start)
    progress = {}
    with pytest.raises(DomainError, match="injected"):
        _run(tmp_path, uuid, progress)
    assert seen["at define"] == ["domain:instance-" + uuid]
    assert progress == {"defined": True}, "the failure tells the rollback that this call defined the domain"
    assert lifecycle.find(conn, uuid=uuid) is not None and _journaled(tmp_path, uuid) == ["domain:instance-" + uuid]


def test_a_define_libvirt_refuses_leaves_no_journal_entry(conn, tmp_path, uuid, monkeypatch):
    def define(self, xml):
        assert _journaled(tmp_path, uuid) == ["domain:instance-" + uuid]
        raise DomainError("defining the domain failed: injected", step="domain")

    monkeypatch.setattr(lifecycle.Lifecycle, "define", define)
    progress = {}
    with pytest.raises(DomainError, match="injected"):
        _run(tmp_path, uuid, progress)
    assert progress == {"defined": False} and _journaled(tmp_path, uuid) == []
    assert lifecycle.find(conn, uuid=uuid) is None


class LateAcpiGuest:
    """A guest that powers off at the ``hears``-th ACPI press: the earlier ones came before its ACPI was up."""

    def __init__(self, hears):
        self.hears, self.presses, self.off, self.destroyed = hears, 0, False, False

    def state(self):
        return [5 if self.off else 1, 0]

    def shutdown(self):
        self.presses += 1
        self.off = self.presses >= self.hears

    def isActive(self):
        return not self.off

    def destroy(self):
        self.off = self.destroyed = True

    def name(self):
        return "late-acpi"


def test_shutdown_presses_again_until_the_guest_hears_it(conn, monkeypatch):
    monkeypatch.setattr(lifecycle, "SHUTDOWN_RETRY_INTERVAL", 0.05)
    guest = LateAcpiGuest(hears=3)
    assert lifecycle.Lifecycle(conn, shutdown_timeout=5).shutdown(guest) is False
    assert guest.presses == 3 and not guest.destroyed


def test_shutdown_of_a_deaf_guest_forces_once_the_timeout_is_over(conn, monkeypatch):
    monkeypatch.setattr(lifecycle, "SHUTDOWN_RETRY_INTERVAL", 0.1)
    guest = LateAcpiGuest(hears=10**6)
    started = time.monotonic()
    assert lifecycle.Lifecycle(conn, shutdown_timeout=0.35).shutdown(guest) is True
    assert guest.destroyed and 3 <= guest.presses <= 5 and time.monotonic() - started < 2
