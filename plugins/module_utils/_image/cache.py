# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The image cache: one raw base file per image in ``<instances_path>/_base/<sha1(image id)>``.

Fetch to ``<sha1>.part``, verify (checksum, pure-Python inspector, limits), ``qemu-img info`` and
``convert -O raw`` to ``<sha1>.converting``, fsync, rename. Everything runs under a per-image
file lock, so concurrent runs for one image do one download; the others wait and reuse it.
The lock files live in ``<instances_path>/locks/`` (not in ``_base`` as DESIGN.md first drew it)
so that a refused image leaves ``_base`` exactly as it was. On any failure the temporary files are removed,
and so are the lock file and the (empty) directories this run created: a failed run on a fresh host
leaves the host as it found it.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.atomic import fsync_dir
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.locks import FileLock
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import (
    MAX_INT,
    validate_number,
    validate_seconds,
)
from ansible_collections.nimbus.compute.plugins.module_utils._disk import qemu_img
from ansible_collections.nimbus.compute.plugins.module_utils._image import format_inspector as inspector
from ansible_collections.nimbus.compute.plugins.module_utils._image import source
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import STEP, ImageError, ImageRefused

FORMATS = inspector.DISK_FORMATS + inspector.KERNEL_FORMATS
GIB = 1 << 30
PART_SUFFIX = ".part"
CONVERTING_SUFFIX = ".converting"
TEMP_SUFFIXES = (PART_SUFFIX, CONVERTING_SUFFIX)
BASE_DIR_MODE = 0o755
BASE_FILE_MODE = 0o644
# C0 and C1 control characters (NUL included): an id is hashed into a file name and shown in messages.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IMAGE_LOCK_NAME = re.compile(r"image-[0-9a-f]{40}\.lock\Z")


def validate_image_id(image_id):
    """The image id as a str: non-empty, without control characters, encodable (it is hashed as UTF-8).
    A number from YAML is its text; a list or dict would be cached under the SHA-1 of its Python repr."""
    if isinstance(image_id, bool) or not isinstance(image_id, (str, int)):
        raise ValidationError("image_id must be a non-empty string, got %s %r" % (type(image_id).__name__, image_id),
                              step=STEP)
    text = str(image_id)
    if not text.strip():
        raise ValidationError("image_id must not be empty", step=STEP)
    bad = _CONTROL.search(text)
    if bad:
        raise ValidationError("image_id %r contains the control character %r (ids are strings without control "
                              "characters)" % (text, bad.group()), step=STEP)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("image_id %r is not valid Unicode text" % text, step=STEP)
    return text


class ImageRequest:
    """Validated options of one image_cache run."""

    def __init__(self, image_id, src, disk_format, *, instances_path=paths.DEFAULT_INSTANCES_PATH, checksum=None,
                 max_virtual_size_gb=None, timeout=30, download_timeout=3600, lock_timeout=3600, validate_certs=True,
                 url_username=None, url_password=None, file_src_dirs=None):
        image_id = validate_image_id(image_id)
        if disk_format not in FORMATS:
            raise ValidationError("disk_format %r is not one of %s" % (disk_format, ", ".join(FORMATS)), step=STEP)
        # Bounded: 10**30 overflowed in the socket's settimeout, after _base and the lock file were created.
        timeout, download_timeout, lock_timeout = (
            validate_seconds(value, name, STEP)
            for name, value in (("timeout", timeout), ("download_timeout", download_timeout), ("lock_timeout", lock_timeout))
        )
        if max_virtual_size_gb is not None:
            validate_number(max_virtual_size_gb, "max_virtual_size_gb", STEP, minimum=0, maximum=MAX_INT)
        paths.validate_instances_path(instances_path, step=STEP)
        self.file_dirs = source.validate_file_dirs(file_src_dirs)
        source.check_file_src(source.validate_src(src), self.file_dirs)
        if url_password is not None and url_username is None:
            raise ValidationError("url_password needs url_username", step=STEP)
        self.credentials = (url_username, url_password or "") if url_username is not None else None
        self.checksum = source.parse_checksum(checksum)
        self.image_id = image_id
        self.src = src
        self.disk_format = disk_format
        self.instances_path = instances_path
        # 0 is Nova's root_gb=0: the disk takes the image's own size, so there is no limit.
        self.max_virtual_size = int(max_virtual_size_gb * GIB) if max_virtual_size_gb else None
        self.timeout = timeout
        self.download_timeout = download_timeout
        self.lock_timeout = lock_timeout
        self.validate_certs = validate_certs
        self.base_path = paths.base_path(instances_path, self.image_id)

    def refuse(self, rule, detail):
        return ImageRefused(self.image_id, rule, detail)


class ImageLock(FileLock):
    """The per-image FileLock. A failed run unlinks the lock file it created while it holds it, and may then
    remove the ``locks/`` directory it made when that is empty: a waiter on the old file (FileLock locks the
    path's new file then) or a run starting meanwhile makes the directory again, recorded in ``created_dirs``
    so that its own failure removes it too. ``created``: the file this run locked was made during this run."""

    def __init__(self, path, timeout, what, created_dirs=None):
        super().__init__(path, timeout=timeout, what=what, step=STEP)
        self.created = False
        self.created_dirs = [] if created_dirs is None else created_dirs
        self._replaced = False

    def acquire(self):
        self._replaced = False
        existed = os.path.lexists(self.path)
        super().acquire()
        self.created = not existed or self._replaced
        return self

    def make_directory(self, directory):
        _make_dir(directory, self.created_dirs)

    def _still_the_file(self, fd):
        same = super()._still_the_file(fd)
        # FileLock opens the path again next: the file it then locks is this run's.
        self._replaced = self._replaced or not same
        return same


def image_lock(instances_path, name, timeout, created_dirs=None):
    """The per-image lock shared by image_cache and image_cache_cleanup (``name`` is the SHA-1)."""
    path = os.path.join(paths.locks_dir(instances_path), "image-%s.lock" % name)  # see _IMAGE_LOCK_NAME
    return ImageLock(path, timeout, "image %s" % name, created_dirs)


def ensure_cached(request, check_mode=False):
    """Make sure the base image exists and is sound; returns the module result."""
    if check_mode:
        if os.path.lexists(request.base_path):
            return _reuse(request, check_mode)
        return _result(request, None, None, changed=True,
                       msg="would fetch %s into %s" % (source.redact(request.src), request.base_path))
    created = []  # directories this run made, parents first: a failure removes them again when empty
    try:
        _make_dir(request.instances_path, created, what="instances_path")
        _make_dir(paths.locks_dir(request.instances_path), created)
        # Also taken for a cached image (uncontended it costs microseconds): cleanup re-checks use
        # and age under this lock, so it never deletes a base between our check and our touch.
        lock = image_lock(request.instances_path, paths.base_name(request.image_id), request.lock_timeout, created)
        with lock:
            try:
                _make_base_dir(request.instances_path, created)
                if os.path.lexists(request.base_path):
                    return _reuse(request, check_mode)
                return _fetch_and_convert(request)
            except BaseException:
                if lock.created:
                    # Unlinked while held: a run waiting on this file sees it gone and locks a new one.
                    _unlink(lock.path)
                raise
    except BaseException:
        _remove_empty_dirs(request.instances_path, created)
        raise


def _result(request, virtual_size, detected_format, changed, msg):
    return dict(changed=changed, image_id=request.image_id, base_path=request.base_path,
                virtual_size=virtual_size, detected_format=detected_format, msg=msg)


def _make_dir(path, created, what=None):
    """``os.makedirs`` that appends each directory it creates to ``created`` (parents first)."""
    path = os.path.normpath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        _make_dir(parent, created)
    try:
        os.mkdir(path, BASE_DIR_MODE)
    except FileExistsError:
        if os.path.isdir(path):
            return  # made by a concurrent run
        raise ImageError("%s %s is not a directory" % (what or "path", path))
    created.append(path)


def _make_base_dir(instances_path, created):
    base_dir = paths.base_dir(instances_path)
    _make_dir(base_dir, created)
    os.chmod(base_dir, BASE_DIR_MODE)  # mkdir applies the umask
    paths.require_inside(base_dir, instances_path, step=STEP)


def _remove_empty_dirs(instances_path, created):
    """After a failure: remove the directories this run created, children first, each only when empty
    (rmdir). ``_base`` stays while another run holds an image lock: it may be about to download into it."""
    base_dir, locks_dir = os.path.normpath(paths.base_dir(instances_path)), paths.locks_dir(instances_path)
    for directory in reversed(created):
        try:
            if directory == base_dir and _image_lock_held(locks_dir):
                continue
            os.rmdir(directory)
        except OSError:
            continue  # not empty (another run's lock or base), or already gone


def _image_lock_held(locks_dir):
    """True when some run holds an image lock in ``locks_dir`` (probed with a non-blocking shared flock)."""
    try:
        names = os.listdir(locks_dir)
    except FileNotFoundError:
        return False
    for name in names:
        if not _IMAGE_LOCK_NAME.match(name):
            continue
        try:
            fd = os.open(os.path.join(locks_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone since listdir (or not a plain file: no run locks it)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # also drops the probe's shared lock
    return False


# What a raw base may look like to the inspector: guest content can legitimately be an ISO or a
# whole-disk LUKS volume; a header that points at other files (qcow2, vmdk ...) means tampering.
GUEST_CONTENT_FORMATS = ("raw", "iso", "luks")


def verify_base(path, image_id, max_virtual_size=None):
    """Re-check a cached base file: a regular file (not a link), non-empty, raw, within the size
    limit. Returns (virtual size, detected format); raises ImageError if it is unsound."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ImageError("cached base image %s is not a regular file; remove it" % path)
    if info.st_size == 0:
        raise ImageError("cached base image %s is empty; remove it" % path)
    found = inspector.inspect_file(path)
    if found.format not in GUEST_CONTENT_FORMATS:
        raise ImageError("cached base image %s is no longer raw (detected %s); remove it" % (path, found.format))
    if max_virtual_size is not None and info.st_size > max_virtual_size:
        raise ImageRefused(image_id, "virtual-size",
                           "cached base is %d bytes, more than the limit of %d bytes" % (info.st_size, max_virtual_size))
    return info.st_size, found.format


def _reuse(request, check_mode):
    size, detected = verify_base(request.base_path, request.image_id, request.max_virtual_size)
    if not check_mode:
        os.utime(request.base_path)  # Nova's rule: a used base image is young, cleanup keeps it
    return _result(request, size, detected, changed=False, msg="base image %s is cached" % request.base_path)


def free_bytes(directory):
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


def _download_limit(request):
    """Bytes a download may have: a compressed or sparse format is never much larger than its
    virtual size, so allow the flavor's root disk plus metadata room."""
    if request.max_virtual_size is None:
        return None
    return request.max_virtual_size + request.max_virtual_size // 64 + (16 << 20)


def _fetch_and_convert(request):
    # Imported here: the HTTP/TLS stack costs every run ~30 ms, and most runs find the image cached.
    from ansible_collections.nimbus.compute.plugins.module_utils._image import fetch as fetching

    base = request.base_path
    part, converting = base + PART_SUFFIX, base + CONVERTING_SUFFIX
    for leftover in (part, converting):  # from a killed run: we hold the lock, nobody writes them
        _unlink(leftover)
    try:
        download = fetching.fetch(
            request.src, part, timeout=request.timeout, deadline=request.download_timeout,
            validate_certs=request.validate_certs, credentials=request.credentials, max_bytes=_download_limit(request),
            free_bytes=free_bytes(os.path.dirname(base)),
            algorithm=request.checksum[0] if request.checksum else None, image_id=request.image_id,
            # Only a file that becomes the base itself needs to be durable; a converted one is
            # read once by qemu-img (from the page cache) and deleted, its output is fsynced.
            fsync=inspector.QEMU_DRIVER.get(request.disk_format, "raw") == "raw", file_dirs=request.file_dirs,
        )
        if request.checksum and download.digest != request.checksum[1]:
            raise request.refuse("checksum-mismatch", "%s of the downloaded bytes is %s, expected %s"
                                 % (request.checksum[0], download.digest, request.checksum[1]))
        found = inspector.inspect_file(part)
        problem = inspector.refusal(found, request.disk_format, request.max_virtual_size)
        if problem:
            raise request.refuse(problem.rule, problem.detail)
        detected, virtual_size = found.format, found.size_of()
        final = part
        if request.disk_format not in inspector.KERNEL_FORMATS:  # kernels are stored byte for byte
            virtual_size = _qemu_agrees(request, part, found)
            if inspector.QEMU_DRIVER[detected] != "raw":
                _convert(request, part, converting, detected, virtual_size)
                final = converting
        os.chmod(final, BASE_FILE_MODE)
        os.rename(final, base)
        fsync_dir(os.path.dirname(base))
    finally:
        for leftover in (part, converting):
            _unlink(leftover)
    return _result(request, virtual_size, detected, changed=True,
                   msg="fetched %s (%s) into %s" % (source.redact(request.src), detected, base))


def _qemu_agrees(request, path, found):
    """``qemu-img info -f <detected>`` must see the same format and size and no external file."""
    detected = found.format
    driver = inspector.QEMU_DRIVER[detected]
    qemu_img.runner(STEP).path()  # a missing qemu-img is the host's fault, not the image's
    try:
        info = qemu_img.info(path, driver, step=STEP)
    except CommandError as err:
        # The inspector found nothing wrong but qemu cannot read it (or hit a resource limit).
        raise request.refuse("qemu-img-rejects", err.msg)
    ours, theirs = found.size_of(), info.get("virtual-size")
    data = (info.get("format-specific") or {}).get("data") or {}
    if info.get("format") != driver:
        problem = "qemu-img reports format %r, the inspector %r" % (info.get("format"), driver)
    elif info.get("backing-filename") or info.get("full-backing-filename"):
        problem = "qemu-img reports backing file %r" % info.get("backing-filename")
    elif data.get("data-file"):
        problem = "qemu-img reports data file %r" % data.get("data-file")
    elif not isinstance(theirs, int) or not _sizes_agree(detected, ours, theirs):
        problem = "qemu-img reports virtual size %r, the inspector %d" % (theirs, ours)
    else:
        return ours if driver == "raw" else theirs  # a raw base is the file itself
    raise request.refuse("qemu-img-disagrees", problem)


def _sizes_agree(detected, ours, theirs):
    if detected == "vhd":  # qemu may round down to the CHS geometry, never up
        return theirs <= ours
    if inspector.QEMU_DRIVER[detected] == "raw":  # qemu rounds a raw file up to whole sectors
        return theirs == -(-ours // 512) * 512
    return theirs == ours


def _convert(request, source, target, detected, virtual_size):
    free = free_bytes(os.path.dirname(target))
    if free < virtual_size:
        raise ImageError("not enough free space in %s to convert image %s: %d bytes free, %d needed"
                         % (os.path.dirname(target), request.image_id, free, virtual_size), retryable=True)
    qemu_img.convert(source, inspector.QEMU_DRIVER[detected], target, "raw", step=STEP)
    size = os.path.getsize(target)
    if size != virtual_size:
        raise ImageError("qemu-img convert of image %s wrote %d bytes, expected %d" % (request.image_id, size, virtual_size))
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
