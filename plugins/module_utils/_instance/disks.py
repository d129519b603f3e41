# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The server's disks, laid out as Nova's libvirt driver does (DESIGN.md §1):

``disk`` qcow2 over the raw base in ``_base`` (``-F raw``, virtual size = root_gb, never smaller
than the image; root_gb 0 = the image's size), ``disk.local`` (ephemeral_gb, formatted when a file
system is asked for and its mkfs exists, else blank), ``disk.swap`` (swap MiB, mkswap'd),
``disk.config`` (config drive ISO). Existing disks are checked, never overwritten: they may hold
the user's data. Each file is built under a temporary name and renamed, and is recorded in the
journal before it appears, so a rollback or ``state: absent`` removes exactly what was made.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import (
    CommandError,
    NimbusError,
    ValidationError,
)
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandRunner
from ansible_collections.nimbus.compute.plugins.module_utils._disk import qemu_img
from ansible_collections.nimbus.compute.plugins.module_utils._instance import config_drive, layout
from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import GIB, MIB, validate_flavor
from ansible_collections.nimbus.compute.plugins.module_utils._instance.owner import apply_owner, qemu_owner

STEP = layout.STEP_DISKS
EPHEMERAL_LABEL = "ephemeral0"  # Nova's label for the first ephemeral disk
SECTOR = 512
# File systems whose mkfs takes the label the way _build passes it (-L, or -n for FAT).
EPHEMERAL_FORMATS = ("btrfs", "ext2", "ext3", "ext4", "msdos", "ntfs", "vfat", "xfs")


# The config drive and ephemeral disk options of instance_disks, and of each server of instance_prepare.
CONTENT_ARGS = dict(
    config_drive=dict(type="bool", default=False),
    name=dict(type="str"),
    meta_data=dict(type="dict"),
    user_data=dict(type="str", no_log=True),  # may carry secrets (passwords, keys): never echoed
    network_data=dict(type="dict"),
    ephemeral_format=dict(type="str"),
)


@dataclass
class PlannedDisk:
    name: str
    path: str
    format: str
    size: int
    backing_file: str | None = None
    mkfs: str | None = None  # file system, "swap", or None for a blank disk
    content: dict | None = None  # config drive files

    def contract(self):
        """The ``domain_disks`` entry other steps consume (domain_xml)."""
        return {"name": self.name, "path": self.path, "format": self.format, "device": "disk"}


def _validate_base(base_path, instances_path):
    # NUL: os.path.realpath raises a bare ValueError.
    if not isinstance(base_path, str) or not os.path.isabs(base_path) or "\0" in base_path:
        raise ValidationError("base_path must be an absolute path inside %s" % paths.base_dir(instances_path), step=STEP)
    real_base_dir = os.path.realpath(paths.base_dir(instances_path))
    real = os.path.realpath(base_path)
    if real == real_base_dir or not paths.inside(real, real_base_dir):
        raise ValidationError("base_path %s is not inside %s" % (base_path, paths.base_dir(instances_path)), step=STEP)
    if not os.path.isfile(real):
        raise ValidationError("base image %s does not exist (run image_cache first)" % base_path, step=STEP)
    size = os.stat(real).st_size  # raw: the file's length is the virtual size, no qemu-img needed
    if size == 0:
        raise ValidationError("base image %s is empty" % base_path, step=STEP)
    return real, size


def root_size(flavor, image_size):
    """root_gb in bytes; 0 means the image's own size (Nova); smaller than the image is an error."""
    if flavor["root_gb"] == 0:
        # qcow2 sizes are whole 512-byte sectors: qemu-img rounds up, so the check after must too.
        return -(-image_size // SECTOR) * SECTOR
    size = flavor["root_gb"] * GIB
    if size < image_size:
        raise ValidationError(
            "flavor %s root_gb %d GiB (%d bytes) is smaller than the image's virtual size %d bytes"
            % (flavor["name"], flavor["root_gb"], size, image_size),
            step=STEP,
        )
    return size


def _mkfs_tool(fs):
    return "mkswap" if fs == "swap" else "mkfs.%s" % fs


def plan(inst_dir, flavor, base, base_size, *, content=None, ephemeral_format=None):
    """The disks in Nova's order: disk, disk.local, disk.swap, disk.config."""
    disks = [PlannedDisk("disk", os.path.join(inst_dir, "disk"), "qcow2", root_size(flavor, base_size), backing_file=base)]
    if flavor["ephemeral_gb"]:
        disks.append(PlannedDisk("disk.local", os.path.join(inst_dir, "disk.local"), "qcow2",
                                 flavor["ephemeral_gb"] * GIB, mkfs=ephemeral_format))
    if flavor["swap"]:
        disks.append(PlannedDisk("disk.swap", os.path.join(inst_dir, "disk.swap"), "qcow2", flavor["swap"] * MIB, mkfs="swap"))
    if content is not None:
        disks.append(PlannedDisk("disk.config", os.path.join(inst_dir, "disk.config"), "raw", 0, content=content))
    for disk in disks:
        if os.path.islink(disk.path):
            raise ValidationError("%s is a symbolic link; refusing to use it" % disk.path, step=STEP)
        paths.require_inside(disk.path, inst_dir, step=STEP)
    return disks


def _problems(disk, entry):
    """Why an existing file is not the disk we would create ([] = it is)."""
    if disk.content is not None:
        if disk.path not in entry.get("created", []):
            return ["exists but was not created by nimbus.compute"]
        return []  # ours; rebuilt when its content changed (see _todo)
    try:
        info = qemu_img.info(disk.path, disk.format, step=STEP)
    except CommandError as exc:
        return ["is not a readable %s image (%s)" % (disk.format, exc.msg)]
    found = []
    if info.get("virtual-size") != disk.size:
        found.append("virtual size %s, expected %d" % (info.get("virtual-size"), disk.size))
    if info.get("backing-filename") != disk.backing_file:
        found.append("backing file %r, expected %r" % (info.get("backing-filename"), disk.backing_file))
    if disk.backing_file and info.get("backing-filename-format") != "raw":
        found.append("backing format %r, expected 'raw'" % info.get("backing-filename-format"))
    return found


def _todo(disks, journal):
    """The disks to (re)build; raises before any change when an existing file is not ours to use."""
    entry = journal.step(STEP)
    todo, wrong = [], []
    for disk in disks:
        if not os.path.lexists(disk.path):
            todo.append(disk)
            continue
        problems = _problems(disk, entry)
        if problems:
            wrong.append("%s %s" % (disk.path, "; ".join(problems)))
        elif disk.content is not None and entry.get("config_drive_sha256") != config_drive.digest(disk.content):
            todo.append(disk)  # only metadata changed: the drive is ours and holds no user data
    if wrong:
        raise NimbusError("existing disk does not match and will not be overwritten: %s" % " | ".join(wrong), step=STEP)
    return todo


def _build(disk, tmp, warnings):
    if disk.content is not None:
        config_drive.build(tmp, disk.content, step=STEP)
        return
    if disk.backing_file:
        qemu_img.create(tmp, disk.size, "qcow2", backing_file=disk.backing_file, backing_fmt="raw", step=STEP)
        return
    tool = disk.mkfs and shutil.which(_mkfs_tool(disk.mkfs))
    if disk.mkfs and not tool:
        warnings.append("%s not found: %s left blank" % (_mkfs_tool(disk.mkfs), disk.name))
    if not tool:
        qemu_img.create(tmp, disk.size, "qcow2", step=STEP)
        return
    # Like Nova's _create_ephemeral/_create_swap: format a raw image, then keep it as qcow2.
    scratch = tmp + ".raw"
    try:
        with open(scratch, "wb") as handle:
            handle.truncate(disk.size)
        if disk.mkfs == "swap":
            CommandRunner("mkswap", step=STEP).run([scratch])
        else:
            args = ["-t", disk.mkfs] + (["-F"] if disk.mkfs in ("ext3", "ext4", "ntfs") else [])
            label = ["-n" if disk.mkfs in ("msdos", "vfat") else "-L", EPHEMERAL_LABEL]
            CommandRunner("mkfs", step=STEP, timeout=300.0).run([*args, *label, scratch])
        qemu_img.convert(scratch, "raw", tmp, "qcow2", step=STEP, timeout=600.0, cpu_seconds=300)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def _create(inst_dir, todo, journal, *, digest, owner, dir_created, warnings):
    """Build each disk under a temp name, record it, rename; on failure undo this run only."""
    made = []
    try:
        for disk in todo:
            tmp = os.path.join(inst_dir, "%s%s.tmp" % (layout.TMP_PREFIX, disk.name))
            _build(disk, tmp, warnings)
            os.chmod(tmp, 0o600)
            apply_owner(tmp, owner)
            fields = {"config_drive_sha256": digest} if disk.content is not None else {}
            if os.path.lexists(disk.path):
                # A rebuilt config drive: its digest is recorded once the new content is in place.
                os.replace(tmp, disk.path)
                journal.record(STEP, **fields)
            else:
                # A new file is in the journal before it appears, so a killed run's rollback finds it.
                made.append(disk.path)
                journal.record(STEP, created=[disk.path], **fields)
                os.replace(tmp, disk.path)
    except BaseException:
        try:
            _undo(inst_dir, journal, made, dir_created)
        except OSError:
            pass  # report the original failure, not a failing cleanup on the same broken disk
        raise


def _undo(inst_dir, journal, made, dir_created):
    if dir_created:
        layout._remove_tree(inst_dir)
        return
    layout.remove_stale_tmp(inst_dir)
    for path in made:
        if os.path.lexists(path):
            os.unlink(path)
    entry = journal.data["steps"].get(STEP)
    if entry is not None:
        entry["created"] = [p for p in entry["created"] if p not in made]
        if entry["created"]:
            journal.save()
        else:
            journal.forget(STEP)


def _diff(inst_dir, disks, todo):
    after = [d.name for d in disks]
    before = [d.name for d in disks if os.path.lexists(d.path)]
    changed = [d.name for d in todo if d.name in before]
    return {
        "before_header": inst_dir,
        "after_header": inst_dir,
        "before": "".join("%s\n" % n for n in before),
        "after": "".join("%s%s\n" % (n, " (rebuilt)" if n in changed else "") for n in after),
    }


@dataclass
class DisksRequest:
    """A checked request: the server's disks planned, nothing on disk touched yet."""

    instance_uuid: str
    instances_path: str
    inst_dir: str
    disks: list
    digest: str | None


def ensure(instance_uuid, instances_path, flavor, base_path, *, config_drive_enabled=False, name=None, meta_data=None,
           user_data=None, network_data=None, ephemeral_format=None, check_mode=False, owner=None):
    """Create the missing disks; the module result (changed, instance_dir, domain_disks, diff, warnings)."""
    request = plan_request(instance_uuid, instances_path, flavor, base_path, config_drive_enabled=config_drive_enabled,
                           name=name, meta_data=meta_data, user_data=user_data, network_data=network_data,
                           ephemeral_format=ephemeral_format)
    return ensure_planned(request, check_mode=check_mode, owner=owner)


def plan_request(instance_uuid, instances_path, flavor, base_path, *, config_drive_enabled=False, name=None,
                 meta_data=None, user_data=None, network_data=None, ephemeral_format=None):
    """Check everything ``ensure`` needs and plan the disks; raises ValidationError, changes nothing."""
    flavor = validate_flavor(flavor, step=STEP)
    instance_uuid, inst_dir = layout.resolve_instance_dir(instances_path, instance_uuid, STEP)
    if ephemeral_format is not None and ephemeral_format not in EPHEMERAL_FORMATS:
        raise ValidationError("ephemeral_format %r is not one of %s" % (ephemeral_format, ", ".join(EPHEMERAL_FORMATS)),
                              step=STEP)
    base, base_size = _validate_base(base_path, instances_path)
    content = None
    if config_drive_enabled:
        content = config_drive.files(instance_uuid, name or paths.domain_name(instance_uuid), meta_data=meta_data,
                                     user_data=user_data, network_data=network_data, step=STEP)
    elif user_data is not None or meta_data or network_data:
        raise ValidationError("meta_data, user_data and network_data need config_drive: true", step=STEP)
    disks = plan(inst_dir, flavor, base, base_size, content=content, ephemeral_format=ephemeral_format)
    digest = config_drive.digest(content) if content is not None else None
    return DisksRequest(instance_uuid, instances_path, inst_dir, disks, digest)


def ensure_planned(request, check_mode=False, owner=None):
    """Create the missing disks of a request from ``plan_request``; the module result."""
    instance_uuid, instances_path, inst_dir = request.instance_uuid, request.instances_path, request.inst_dir
    disks, digest = request.disks, request.digest
    warnings = []
    if check_mode:
        todo = _todo(disks, Journal(inst_dir, step=STEP))
        rebuilt = [d.name for d in todo if os.path.lexists(d.path)]
        diff = _diff(inst_dir, disks, todo)
    else:
        owner = owner or qemu_owner()
        lock = layout.instance_lock(instances_path, instance_uuid, STEP)
        with lock:
            try:
                journal = Journal(inst_dir, step=STEP)
                todo = _todo(disks, journal)
                rebuilt = [d.name for d in todo if os.path.lexists(d.path)]
                diff = _diff(inst_dir, disks, todo)
                if todo:
                    dir_created = layout.ensure_instance_dir(inst_dir, owner)
                    layout.remove_stale_tmp(inst_dir)
                    if dir_created:
                        journal.record(STEP, created=[inst_dir])
                    _create(inst_dir, todo, journal, digest=digest, owner=owner, dir_created=dir_created, warnings=warnings)
            except BaseException:
                # _create removed the instance dir it made: nothing of the server is left, its lock file neither.
                if not os.path.isdir(inst_dir):
                    layout.unlink_lock(lock)
                raise
    return {
        "changed": bool(todo),
        "instance_dir": inst_dir,
        "domain_disks": [d.contract() for d in disks],
        # created: new files, which a rollback of this run may remove; rebuilt: files an earlier run made and this
        # one replaced (a changed config drive), which are not this run's to remove.
        "created": [d.name for d in todo if d.name not in rebuilt],
        "rebuilt": rebuilt,
        "diff": diff,
        "warnings": warnings,
    }


DISK_NAMES = ("disk", "disk.local", "disk.swap", "disk.config")


def _validate_names(names):
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValidationError("files must be a list of disk names (%s)" % ", ".join(DISK_NAMES), step=STEP)
    unknown = sorted(set(names) - set(DISK_NAMES))
    if unknown:
        raise ValidationError("unknown disk names %s in files (known: %s)" % (unknown, ", ".join(DISK_NAMES)), step=STEP)
    return list(names)


def remove(instance_uuid, instances_path, check_mode=False, files=None):
    """Remove exactly the files the journal says this step created, then the dir if unused.

    ``files`` (names such as ``disk.config``) narrows that to those files, for the rollback of one run: a
    re-run that only added or rebuilt ``disk.config`` must not take the older ``disk`` with it. Only files the
    journal lists are removed even then; the step stays in the journal while it still lists others."""
    instance_uuid, inst_dir = layout.resolve_instance_dir(instances_path, instance_uuid, STEP)
    only = None if files is None else _validate_names(files)
    result = {"changed": False, "instance_dir": inst_dir, "removed": [], "kept_because": []}
    if not os.path.isdir(inst_dir) or only == []:
        return result
    lock = layout.instance_lock(instances_path, instance_uuid, STEP) if not check_mode else None
    if lock:
        lock.acquire()
    try:
        journal = Journal(inst_dir, step=STEP)
        listed = [p for p in journal.created(STEP) if p != inst_dir]
        chosen = [p for p in listed if only is None or os.path.basename(p) in only]
        for path in chosen:
            paths.require_inside(path, inst_dir, step=STEP)
            if os.path.lexists(path):
                result["removed"].append(os.path.basename(path))
                if not check_mode:
                    os.unlink(path)
        left = [p for p in listed if p not in chosen]
        result["changed"] = bool(chosen) if left else STEP in journal.data["steps"]
        if check_mode:
            return result
        if left:
            entry = journal.data["steps"][STEP]
            entry["created"] = [p for p in entry["created"] if p not in chosen]
            journal.save()
        else:
            journal.forget(STEP)
        result["kept_because"] = layout.remove_if_unused(inst_dir, journal, lock_path=lock.path)
        if not result["kept_because"]:
            result["changed"] = True
    finally:
        if lock:
            lock.release()
    return result
