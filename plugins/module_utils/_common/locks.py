# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""One file-lock helper (fcntl.flock) with a bounded wait and a clear error.

Used for the per-image lock in ``_base``, the host claim lock and per-instance locks.
flock locks are released by the kernel when the holder dies, so a killed play never
leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import LockTimeout

# How often to make the lock directory again when it keeps vanishing before the open.
OPEN_ATTEMPTS = 5


class FileLock:
    """``with FileLock(path, timeout=60, what="image abc"):`` — exclusive, bounded wait."""

    def __init__(self, path, timeout=60.0, what=None, step="lock", poll=0.05):
        self.path = path
        self.timeout = float(timeout)
        self.what = what or path
        self.step = step
        self.poll = poll
        self._fd = None

    def acquire(self):
        fd = self._open()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if self._still_the_file(fd):
                    self._fd = fd
                    return self
                # The holder removed the lock file before releasing it (a refused claim, a released
                # server): this lock is on a file nobody else will open again. Lock the path's file.
                stale, fd = fd, None
                os.close(stale)
                fd = self._open()
                continue
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    if fd is not None:  # None: re-opening the path failed, the old file is closed already
                        os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockTimeout(
                    "could not lock %s within %.0f s (lock file %s is held by another run)"
                    % (self.what, self.timeout, self.path),
                    step=self.step,
                )
            time.sleep(self.poll)

    def _open(self):
        # A failed image_cache run on a fresh host removes the empty locks/ it made, maybe between another
        # step's makedirs and this open (or while this run waited on a lock file it then unlinked): make the
        # directory again rather than fail that step.
        for _attempt in range(OPEN_ATTEMPTS):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                self.make_directory(os.path.dirname(self.path))
        raise LockTimeout("could not lock %s: its directory %s kept disappearing" % (self.what, os.path.dirname(self.path)),
                          step=self.step)

    def make_directory(self, directory):
        """Make the lock file's directory; a subclass may record what it made (ImageLock)."""
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def _still_the_file(self, fd):
        try:
            path_stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        fd_stat = os.fstat(fd)
        return (path_stat.st_dev, path_stat.st_ino) == (fd_stat.st_dev, fd_stat.st_ino)

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
