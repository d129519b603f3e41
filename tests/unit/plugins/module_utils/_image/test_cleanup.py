"""Nova's image cache manager rules on a fake host: qcow2 overlays crafted byte by byte."""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._image import cleanup
from ansible_collections.nimbus.compute.plugins.module_utils._image.cache import image_lock
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import ImageError

sys.path.insert(0, os.path.dirname(__file__))
import image_crafted as crafted

DAY = 24 * 3600


class Host:
    def __init__(self, root):
        self.root = str(root)
        self.base_dir = paths.base_dir(self.root)
        os.makedirs(self.base_dir)

    def base(self, image_id, age, suffix=""):
        path = paths.base_path(self.root, image_id) + suffix
        with open(path, "wb") as handle:
            handle.write(b"raw base bytes")
        then = time.time() - age
        os.utime(path, (then, then))
        return path

    def instance(self, uuid, backing=None, xml_reference=None):
        directory = os.path.join(self.root, uuid)
        os.makedirs(directory)
        with open(os.path.join(directory, "disk"), "wb") as handle:
            handle.write(crafted.qcow2(backing=backing))
        if xml_reference:
            with open(os.path.join(directory, "libvirt.xml"), "w") as handle:
                handle.write("<domain><os><kernel>%s</kernel></os></domain>" % xml_reference)
        return directory


def test_in_use_kept_unused_old_removed_fresh_kept(tmp_path):
    host = Host(tmp_path)
    used = host.base("used", age=3 * DAY)
    old = host.base("old", age=2 * DAY)
    fresh = host.base("fresh", age=3600)
    host.instance("11111111-1111-1111-1111-111111111111", backing="../_base/" + os.path.basename(used))
    result = cleanup.cleanup(host.root)
    assert result["removed"] == [old]
    assert result["in_use"] == [used]
    assert result["too_young"] == [fresh]
    assert result["changed"] is True
    assert sorted(os.listdir(host.base_dir)) == sorted(os.path.basename(p) for p in (used, fresh))


def test_absolute_backing_path_and_kernel_in_libvirt_xml_count_as_use(tmp_path):
    host = Host(tmp_path)
    root_disk = host.base("root", age=3 * DAY)
    kernel = host.base("kernel", age=3 * DAY)
    host.instance("22222222-2222-2222-2222-222222222222", backing=root_disk, xml_reference=kernel)
    result = cleanup.cleanup(host.root)
    assert result["removed"] == []
    assert sorted(result["in_use"]) == sorted([root_disk, kernel])


def test_leftovers_go_after_an_hour_foreign_files_never(tmp_path):
    host = Host(tmp_path)
    old_part = host.base("a", age=2 * 3600, suffix=".part")
    young_part = host.base("b", age=60, suffix=".converting")
    foreign = os.path.join(host.base_dir, "README")
    with open(foreign, "w") as handle:
        handle.write("not ours")
    os.utime(foreign, (0, 0))
    result = cleanup.cleanup(host.root)
    assert result["removed"] == [old_part]
    assert result["too_young"] == [young_part]
    assert os.path.exists(foreign)


def test_check_mode_lists_but_removes_nothing(tmp_path):
    host = Host(tmp_path)
    old = host.base("old", age=2 * DAY)
    result = cleanup.cleanup(host.root, check_mode=True)
    assert result["removed"] == [old]
    assert os.path.exists(old)
    assert not os.path.exists(paths.locks_dir(host.root)), "check mode creates no lock files"


def test_busy_image_lock_keeps_the_image(tmp_path):
    host = Host(tmp_path)
    old = host.base("old", age=2 * DAY)
    os.makedirs(paths.locks_dir(host.root))
    with image_lock(host.root, os.path.basename(old), timeout=1):
        result = cleanup.cleanup(host.root, lock_timeout=0.2)
    assert result["busy"] == [old]
    assert os.path.exists(old)


def test_use_is_rechecked_under_the_lock(tmp_path, monkeypatch):
    """An overlay created while cleanup waits for the image lock saves the base image."""
    host = Host(tmp_path)
    old = host.base("old", age=2 * DAY)
    os.makedirs(paths.locks_dir(host.root))
    scans = []
    real_scan = cleanup.base_images_in_use
    monkeypatch.setattr(cleanup, "base_images_in_use", lambda root: scans.append(real_scan(root)) or scans[-1])
    lock = image_lock(host.root, os.path.basename(old), timeout=1).acquire()
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(cleanup.cleanup(host.root, lock_timeout=10)))
    worker.start()
    deadline = time.monotonic() + 10
    while not scans and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scans == [set()], "the first scan saw the image unused"
    host.instance("33333333-3333-3333-3333-333333333333", backing=old)
    lock.release()
    worker.join(10)
    assert len(scans) == 2, "use is scanned again under the lock"
    assert outcome["in_use"] == [old]
    assert os.path.exists(old)


def test_missing_base_dir_is_nothing_to_do(tmp_path):
    assert cleanup.cleanup(str(tmp_path))["changed"] is False


def test_an_unreadable_disk_fails_closed(tmp_path, monkeypatch):
    host = Host(tmp_path)
    base = host.base("img", 2 * DAY)
    host.instance("11111111-1111-1111-1111-111111111111", backing=base)
    real = cleanup.inspector.inspect_file

    def unreadable(path):
        if path.endswith("/disk"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(cleanup.inspector, "inspect_file", unreadable)
    with pytest.raises(ImageError, match=r"cannot tell which base image .*/disk uses: Permission denied"):
        cleanup.cleanup(host.root)
    assert os.path.exists(base)


def test_a_symlinked_disk_pins_its_base(tmp_path):
    host = Host(tmp_path)
    base = host.base("img", 2 * DAY)
    directory = host.instance("22222222-2222-2222-2222-222222222222")
    elsewhere = tmp_path / "elsewhere.qcow2"
    elsewhere.write_bytes(crafted.qcow2(backing=base))
    os.symlink(str(elsewhere), os.path.join(directory, "disk.local"))
    assert cleanup.cleanup(host.root)["in_use"] == [base]


def test_relative_instances_path_is_refused():
    with pytest.raises(ValidationError, match="absolute path"):
        cleanup.cleanup("relative/instances")


@pytest.mark.parametrize(
    "options, words",
    [
        ({"lock_timeout": 0}, "lock_timeout (seconds) must be greater than 0"),
        ({"lock_timeout": -1}, "lock_timeout (seconds) must be greater than 0"),
        ({"lock_timeout": 10**30}, "lock_timeout (seconds) is"),
        ({"lock_timeout": float("nan")}, "lock_timeout (seconds) must be a finite"),
        ({"min_age": -1}, "min_age (seconds) must not be negative"),
        ({"min_age": float("nan")}, "min_age (seconds) must be a finite"),
        ({"min_age": float("inf")}, "min_age (seconds) must be a finite"),
        ({"min_age": None}, "min_age (seconds) must be a number"),
        ({"part_min_age": -0.5}, "part_min_age (seconds) must not be negative"),
        ({"part_min_age": float("-inf")}, "part_min_age (seconds) must be a finite"),
        ({"part_min_age": 10**30}, "part_min_age (seconds) is"),
    ],
)
def test_bad_ages_and_lock_timeouts_are_refused_before_anything(tmp_path, options, words):
    host = Host(tmp_path)
    old = host.base("old", age=2 * DAY)
    with pytest.raises(ValidationError) as info:
        cleanup.cleanup(host.root, **options)
    assert words in str(info.value)
    assert os.path.exists(old) and not os.path.exists(paths.locks_dir(host.root))


def test_an_age_of_weeks_is_fine(tmp_path):
    host = Host(tmp_path)
    old = host.base("old", age=2 * DAY)
    assert cleanup.cleanup(host.root, min_age=60 * DAY)["too_young"] == [old]


def test_instances_path_that_is_not_a_directory_is_refused(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    for path in ("/dev/null", str(tmp_path / "file")):
        with pytest.raises(ValidationError, match=re.escape("instances_path %s is not a directory" % path)):
            cleanup.cleanup(path)
    (tmp_path / "instances").mkdir()
    (tmp_path / "instances" / "_base").write_bytes(b"")
    with pytest.raises(ValidationError, match=r"_base .*/_base is not a directory"):
        cleanup.cleanup(str(tmp_path / "instances"))


def test_missing_instances_path_is_nothing_to_do(tmp_path):
    result = cleanup.cleanup(str(tmp_path / "missing"))
    assert result["changed"] is False and result["removed"] == []
    assert not os.path.exists(tmp_path / "missing")
