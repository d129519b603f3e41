# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The instance directory ``<instances_path>/<uuid>/``: where it is, the per-instance lock,
creating it (0700, QEMU owner) and removing it once nothing of the server remains."""

from __future__ import annotations

import os

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import JOURNAL_NAME
from ansible_collections.nimbus.compute.plugins.module_utils._common.locks import FileLock
from ansible_collections.nimbus.compute.plugins.module_utils._instance.owner import apply_owner

STEP_CLAIM = "instance_claim"
STEP_DISKS = "instance_disks"
# Files other steps or libvirt leave in the dir that die with the server (Nova removes the whole
# dir on delete): the defined XML's copy and the serial console log.
BYPRODUCTS = ("libvirt.xml", "console.log")
# Our temporary files and dirs start with this, so a killed run's leftovers are recognisable.
TMP_PREFIX = ".nimbus-"
LOCK_TIMEOUT = 120.0


def resolve_instance_dir(instances_path, instance_uuid, step):
    """Validate the UUID and return the absolute instance dir, refusing symlinks and escapes."""
    instance_uuid = paths.validate_uuid(instance_uuid, step=step)
    paths.validate_instances_path(instances_path, step=step)
    path = paths.instance_dir(os.path.normpath(instances_path), instance_uuid)
    if os.path.islink(path):
        raise ValidationError("instance dir %s is a symbolic link; refusing to use it" % path, step=step)
    paths.require_inside(path, instances_path, step=step)
    return instance_uuid, path


def instance_lock(instances_path, instance_uuid, step):
    """Two runs for the same server never interleave (RELIABILITY.md)."""
    directory = paths.locks_dir(instances_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return FileLock(os.path.join(directory, "%s.lock" % instance_uuid), timeout=LOCK_TIMEOUT,
                    what="instance %s" % instance_uuid, step=step)


def unlink_lock(lock):
    """Remove a held lock file (nothing of its server is left); waiters then lock the path anew (FileLock)."""
    try:
        os.unlink(lock.path)
    except FileNotFoundError:
        pass


def host_lock(instances_path, step):
    directory = paths.locks_dir(instances_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return FileLock(os.path.join(directory, "host.lock"), timeout=LOCK_TIMEOUT, what="host claims", step=step)


def ensure_instance_dir(path, owner):
    """Create the dir 0700 owned by the QEMU user (it must traverse it); True when created here."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
        created = True
    except FileExistsError:
        if not os.path.isdir(path) or os.path.islink(path):
            raise
        created = False
    os.chmod(path, 0o700)
    apply_owner(path, owner)
    return created


def remove_stale_tmp(path):
    """Drop what a killed run of ours left half-made (only our own prefix)."""
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.name.startswith(TMP_PREFIX):
            _remove_tree(entry.path)


def _remove_tree(path):
    if os.path.isdir(path) and not os.path.islink(path):
        for entry in os.scandir(path):
            _remove_tree(entry.path)
        os.rmdir(path)
    else:
        os.unlink(path)


def _step_finished(instance_dir, entry):
    """A step is finished when nothing it created is still there (apart from by-products)."""
    for item in entry.get("created", []):
        if not isinstance(item, str) or not os.path.isabs(item):
            return False  # a non-file resource (tap, rule...) its own step must undo and forget
        if os.path.dirname(item) == instance_dir and os.path.basename(item) in (*BYPRODUCTS, JOURNAL_NAME):
            continue
        if item != instance_dir and os.path.lexists(item):
            return False
    return True


def leftovers(instance_dir, journal):
    """What keeps the dir alive: a live claim, unfinished steps, unknown files."""
    reasons = []
    for name, entry in sorted(journal.data["steps"].items()):
        if name == STEP_CLAIM or not _step_finished(instance_dir, entry):
            reasons.append("step %s" % name)
    for entry in sorted(os.listdir(instance_dir)):
        if entry not in (*BYPRODUCTS, JOURNAL_NAME) and not entry.startswith(TMP_PREFIX):
            reasons.append(entry)
    return reasons


def remove_if_unused(instance_dir, journal, lock_path=None):
    """Remove the dir when only the journal and by-products remain; return what kept it."""
    if not os.path.isdir(instance_dir):
        return []
    reasons = leftovers(instance_dir, journal)
    if reasons:
        return reasons
    _remove_tree(instance_dir)
    if lock_path:
        # The per-instance lock file goes with the server, so delete leaves the host as before.
        # Unlinked while held: a waiter holding the old inode only finds nothing left to do.
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
    return []
