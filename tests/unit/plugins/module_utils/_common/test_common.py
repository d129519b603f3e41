from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common import atomic, locks, paths, runner
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import (
    CommandError,
    LockTimeout,
    ValidationError,
)
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal


def test_write_atomic_replaces_and_sets_mode(tmp_path):
    target = tmp_path / "f"
    atomic.write_atomic(str(target), "one", mode=0o640)
    atomic.write_atomic(str(target), b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(tmp_path) == ["f"], "no temp file left behind"


def test_lock_times_out_with_clear_message(tmp_path):
    path = str(tmp_path / "x.lock")
    with locks.FileLock(path, what="image abc"):
        with pytest.raises(LockTimeout) as info:
            locks.FileLock(path, timeout=0.2, what="image abc", step="image_cache").acquire()
    assert "image_cache: could not lock image abc" in str(info.value)


def test_lock_serialises_threads(tmp_path):
    path = str(tmp_path / "y.lock")
    inside = []

    def worker():
        with locks.FileLock(path, timeout=5):
            inside.append(1)
            assert len(inside) == 1
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=worker) for _unused in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == []


def test_a_waiter_does_not_keep_a_lock_file_its_holder_removed(tmp_path):
    """A refused claim removes its lock file while holding it. A run that was waiting on that file must
    then lock the path's new file, or it and the next run would both hold "the" lock."""
    path = str(tmp_path / "z.lock")
    first = locks.FileLock(path).acquire()
    waiting = locks.FileLock(path, timeout=5, poll=0.01)
    waiter = threading.Thread(target=waiting.acquire)
    waiter.start()
    time.sleep(0.1)  # the waiter has opened the old file and is polling it
    os.unlink(path)
    first.release()
    waiter.join()
    assert waiting._fd is not None and os.fstat(waiting._fd).st_ino == os.stat(path).st_ino
    with pytest.raises(LockTimeout):
        locks.FileLock(path, timeout=0.2).acquire()
    waiting.release()


def test_a_lock_whose_directory_was_removed_makes_it_again(tmp_path):
    # A failed image_cache run on a fresh host removes the empty locks/ it made; a claim that had just
    # made the directory itself must still get its lock, not a FileNotFoundError.
    path = str(tmp_path / "locks" / "host.lock")
    with locks.FileLock(path, timeout=1):
        assert os.path.isfile(path)
    assert oct(os.stat(tmp_path / "locks").st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("bad", ["", "x", "1234", "../etc", "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5"])
def test_validate_uuid_rejects(bad):
    with pytest.raises(ValidationError):
        paths.validate_uuid(bad)


def test_validate_uuid_canonical():
    assert paths.validate_uuid("6F1E8B2A-0C1D-4E5F-8A9B-0C1D2E3F4A5B") == "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"


def test_inside_follows_symlinks(tmp_path):
    root = tmp_path / "inst"
    root.mkdir()
    (root / "link").symlink_to("/etc")
    assert paths.inside(str(root / "a" / "b"), str(root))
    assert not paths.inside(str(root / "link" / "passwd"), str(root))
    assert not paths.inside(str(tmp_path / "inst2"), str(root))


def test_base_path_is_sha1_of_image_id():
    # sha1("cirros"), as Nova's imagecache names base files
    assert paths.base_path("/i", "cirros") == "/i/_base/b931697135326754611a326506cbf74d295e7404"


def test_runner_reports_stderr_and_exit():
    with pytest.raises(CommandError) as info:
        runner.CommandRunner("sh", step="t").run(["-c", "echo boom >&2; exit 3"])
    assert "exit 3" in str(info.value) and "boom" in str(info.value)


def test_runner_missing_binary():
    with pytest.raises(CommandError, match="not installed"):
        runner.CommandRunner("no-such-tool-xyz", step="t").run([])


def test_runner_timeout():
    with pytest.raises(CommandError, match="timed out"):
        runner.CommandRunner("sleep", step="t", timeout=0.2).run(["5"])


def test_runner_cpu_limit_kills():
    with pytest.raises(CommandError, match="signal"):
        runner.CommandRunner("sh", step="t", cpu_seconds=1).run(["-c", "while :; do :; done"], timeout=20)


def test_journal_records_and_reloads(tmp_path):
    j = Journal(str(tmp_path))
    j.record("instance_disks", created=["disk", "disk.local"])
    j.record("instance_disks", created=["disk"])
    again = Journal(str(tmp_path))
    assert again.created("instance_disks") == ["disk", "disk.local"]
    assert oct((tmp_path / "instance.json").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("content, reason", [
    (b'{"steps": {', "not JSON"), (b"\xff", "not UTF-8"), (b"[1]", "a JSON list, not an object"),
    (b'{"steps": {"domain": 1}}', "'steps' is not an object of objects"),
])
def test_corrupt_journal_is_a_clean_error_that_is_still_a_value_error(tmp_path, content, reason):
    from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError
    from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import JournalError

    (tmp_path / "instance.json").write_bytes(content)
    with pytest.raises(JournalError, match=reason) as err:
        Journal(str(tmp_path), step="volume_attach")
    assert isinstance(err.value, NimbusError) and isinstance(err.value, ValueError)  # old callers caught ValueError
    assert err.value.step == "volume_attach" and str(tmp_path / "instance.json") in err.value.msg
    assert (tmp_path / "instance.json").read_bytes() == content
    assert Journal(str(tmp_path / "missing")).data == {"steps": {}}


def test_failure_turns_os_errors_into_one_message():
    from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import failure

    err = PermissionError(13, "Permission denied", "/var/lib/nimbus/instances/x")
    result = failure(err, "instance_disks")
    assert result == {"msg": "instance_disks: Permission denied: /var/lib/nimbus/instances/x",
                      "failed_step": "instance_disks", "reschedule": False}
    assert failure(OSError(28, "No space left on device"), "image_cache", retryable=True)["reschedule"] is True
    assert failure(ValidationError("bad flavor", step="instance_claim"), "ignored")["failed_step"] == "instance_claim"


def test_step_clock_stamps_the_seconds_since_it_started(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    clock = StepClock()
    now[0] = 101.23456
    result = clock.stamp({"changed": True})
    assert result == {"changed": True, "elapsed": 1.235}


@pytest.mark.parametrize("value", ["6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b", "6F1E8B2A-0C1D-4E5F-8A9B-0C1D2E3F4A5B"])
def test_validate_uuid_canonical_input_needs_no_uuid_module(value, monkeypatch):
    # The fast path: a canonical UUID is accepted by the pattern alone (the uuid module is not consulted).
    monkeypatch.setitem(sys.modules, "uuid", None)
    assert paths.validate_uuid(value) == value.lower()


@pytest.mark.parametrize("value", ["{6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b}", "6f1e8b2a0c1d4e5f8a9b0c1d2e3f4a5b"])
def test_validate_uuid_names_a_non_canonical_form(value):
    with pytest.raises(ValidationError, match="canonical 8-4-4-4-12"):
        paths.validate_uuid(value)
