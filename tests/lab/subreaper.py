# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Run a daemon-starting command under a child subreaper that reaps at once, then return.

    python3 tests/lab/subreaper.py libvirtd -d [args ...]

libvirtd daemonizes QEMU, so a QEMU process's parent is the nearest subreaper, normally PID 1.
`virDomainDestroy` returns only when the killed QEMU is reaped; where PID 1 is not an init that
reaps promptly (this sandbox's reaps about once a second) every destroy waits 1-2 s (LAB.md).
This process becomes that nearest subreaper (prctl PR_SET_CHILD_SUBREAPER) for everything the
command starts, waits on its children and exits when none is left. Without systemd only: under
systemd each daemon's unit reaps its own children.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _reap_until_alone():
    while True:
        try:
            os.wait()  # retried by Python itself when a signal interrupts it (PEP 475)
        except ChildProcessError:
            return


def main(argv):
    if not argv:
        sys.exit("usage: subreaper.py COMMAND [ARGS ...]")
    read_end, write_end = os.pipe()
    if os.fork():
        # Caller: wait until the command ran (its daemons have forked off), pass on its exit status.
        os.close(write_end)
        with os.fdopen(read_end, "rb") as status:
            code = status.read().strip()
        return int(code or b"1")
    os.close(read_end)
    os.setsid()
    _become_subreaper()
    devnull = os.open(os.devnull, os.O_RDWR)
    code = subprocess.call(argv, stdin=devnull)
    os.write(write_end, b"%d" % code)
    os.close(write_end)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _reap_until_alone()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
