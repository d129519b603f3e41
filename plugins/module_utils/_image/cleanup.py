# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Nova's image cache manager: remove base images no instance on this host uses.

A base image is in use when an instance's disk has it as its backing file (read from the qcow2
header by the pure-Python inspector, no qemu-img) or when the instance's ``libvirt.xml`` or
``instance.json`` names it (kernel and ramdisk for direct kernel boot are not backing files).
Unused base images older than ``min_age`` go, and ``.part``/``.converting`` leftovers of killed
runs older than ``part_min_age``. Each removal re-checks age and use under the image's lock.
"""

from __future__ import annotations

import os
import re
import stat
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import LockTimeout, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import (
    MAX_INT,
    validate_number,
    validate_seconds,
)
from ansible_collections.nimbus.compute.plugins.module_utils._image import format_inspector as inspector
from ansible_collections.nimbus.compute.plugins.module_utils._image.cache import TEMP_SUFFIXES, image_lock
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import ImageError

STEP_CLEANUP = "image_cache_cleanup"
BASE_NAME = re.compile(r"^([0-9a-f]{40})(\.part|\.converting)?\Z")
_REFERENCE = re.compile(r"_base/([0-9a-f]{40})(?![0-9a-f])")
REFERENCE_FILES = ("libvirt.xml", "instance.json")
MAX_REFERENCE_BYTES = 1 << 20
DEFAULT_MIN_AGE = 24 * 3600
DEFAULT_PART_MIN_AGE = 3600


def _instance_dirs(instances_path):
    for entry in os.scandir(instances_path):
        if entry.name in ("_base", "locks") or not entry.is_dir(follow_symlinks=False):
            continue
        yield entry.path


def _names_used_by(instance_path, base_dir):
    used = set()
    for entry in os.scandir(instance_path):
        try:
            if not entry.is_file():  # a symlinked disk counts: its target may have a backing file
                continue
            if entry.name in REFERENCE_FILES:
                with open(entry.path, "rb") as handle:
                    used.update(_REFERENCE.findall(handle.read(MAX_REFERENCE_BYTES).decode("utf-8", "replace")))
                continue
            backing = inspector.inspect_file(entry.path).backing_file
        except FileNotFoundError:
            continue  # removed while we scan (a server being deleted): it pins nothing
        except OSError as exc:
            # Fail closed: a disk we cannot read may well use a base image.
            raise ImageError("cannot tell which base image %s uses: %s; nothing was removed"
                             % (entry.path, exc.strerror or exc), step=STEP_CLEANUP)
        if backing:
            target = os.path.realpath(os.path.join(instance_path, backing))
            if os.path.dirname(target) == base_dir:
                used.add(os.path.basename(target))
    return used


def base_images_in_use(instances_path):
    """SHA-1 names of the base images that some instance on this host uses."""
    base_dir = os.path.realpath(paths.base_dir(instances_path))
    used = set()
    for instance_path in _instance_dirs(instances_path):
        used |= _names_used_by(instance_path, base_dir)
    return used


class _Policy:
    """When a file is old enough to go, and how long to wait for a busy image lock."""

    def __init__(self, now, min_age, part_min_age, lock_timeout):
        self.now = now
        self.min_age = min_age
        self.part_min_age = part_min_age
        self.lock_timeout = lock_timeout

    def old_enough(self, mtime, leftover):
        return self.now - mtime >= (self.part_min_age if leftover else self.min_age)


def cleanup(instances_path, *, min_age=DEFAULT_MIN_AGE, part_min_age=DEFAULT_PART_MIN_AGE, check_mode=False,
            lock_timeout=10.0, now=None):
    """Remove unused, old base images and old leftovers. Returns the module result:
    ``removed`` (would be removed in check mode), ``in_use``, ``too_young``, ``busy`` (lock held)."""
    # Ages may exceed a week (Nova's minimum age is often set to days or weeks), a lock wait may not.
    for name, value in (("min_age", min_age), ("part_min_age", part_min_age)):
        validate_number(value, "%s (seconds)" % name, STEP_CLEANUP, minimum=0, maximum=MAX_INT)
    lock_timeout = validate_seconds(lock_timeout, "lock_timeout", STEP_CLEANUP)
    paths.validate_instances_path(instances_path, step=STEP_CLEANUP)
    result = dict(changed=False, removed=[], in_use=[], too_young=[], busy=[])
    # A missing instances_path or _base is nothing to clean; one that is not a directory is a mistake.
    base_dir = paths.base_dir(instances_path)
    for what, path in (("instances_path", instances_path), ("_base", base_dir)):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValidationError("%s %s is not a directory" % (what, path), step=STEP_CLEANUP)
    if not os.path.isdir(base_dir):
        return result
    paths.require_inside(base_dir, instances_path, step=STEP_CLEANUP)
    policy = _Policy(time.time() if now is None else now, min_age, part_min_age, lock_timeout)
    used = base_images_in_use(instances_path)
    for entry in sorted(os.scandir(base_dir), key=lambda e: e.name):
        match = BASE_NAME.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue  # not ours: never touched
        name, leftover = match.group(1), match.group(2) in TEMP_SUFFIXES
        verdict = _verdict(entry.path, name, leftover, used, policy)
        if verdict == "remove" and not check_mode:
            verdict = _remove_locked(instances_path, entry.path, name, leftover, policy)
        result["removed" if verdict == "remove" else verdict].append(entry.path)
    result["changed"] = bool(result["removed"])
    return result


def _verdict(path, name, leftover, used, policy):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "busy"  # renamed or removed by a concurrent run
    if not stat.S_ISREG(info.st_mode):
        return "busy"
    if not leftover and name in used:
        return "in_use"
    if not policy.old_enough(info.st_mtime, leftover):
        return "too_young"
    return "remove"


def _remove_locked(instances_path, path, name, leftover, policy):
    os.makedirs(paths.locks_dir(instances_path), mode=0o755, exist_ok=True)
    try:
        with image_lock(instances_path, name, policy.lock_timeout):
            # Fresh look under the lock: an image_cache run may have just used or re-created it.
            used = set() if leftover else base_images_in_use(instances_path)
            verdict = _verdict(path, name, leftover, used, policy)
            if verdict == "remove":
                os.unlink(path)
            return verdict
    except LockTimeout:
        return "busy"
