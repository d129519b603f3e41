"""Volume back ends for the tests, on 127.0.0.1 only, started and stopped by the tests' fixtures.

* ``TgtTarget``: a private ``tgtd`` (its own control port and iSCSI port, so it never touches a tgtd the
  host may run) exporting one file-backed LUN, with or without CHAP.
* ``NbdExport``: ``qemu-nbd`` exporting a raw file (persistent, several clients).

``python tests/lab/volumes.py`` prints what runs on this machine (tgtd, qemu-nbd, host-side iSCSI).
The CHAP password of the *test target* is given to ``tgtadm`` on its command line: that is the
target's admin tool in a throwaway lab, not the collection's initiator side.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_listening(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s:%d after %.0f s" % (HOST, port, timeout))


def _stop(proc):
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class _Service:
    """``with Service(...) as svc:`` starts it and always stops it."""

    proc = None

    def start(self):
        raise NotImplementedError

    def stop(self):
        _stop(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class TgtTarget(_Service):
    def __init__(self, backing, iqn, lun=1, chap=None):
        self.backing = backing
        self.iqn = iqn
        self.lun = lun
        self.chap = chap  # (user, password) or None
        self.port = free_port()
        self.control = random.randint(1000, 32000)  # tgtd exits (34) above 32767
        self.proc = None

    @property
    def portal(self):
        return "%s:%d" % (HOST, self.port)

    def tgtadm(self, *args):
        proc = subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args], capture_output=True, text=True,
                              timeout=30, check=False)
        if proc.returncode != 0:
            raise RuntimeError("tgtadm %s: %s" % (" ".join(args[:4]), proc.stderr.strip()))
        return proc.stdout

    def start(self):
        self.proc = subprocess.Popen(["tgtd", "-f", "-C", str(self.control), "--iscsi", "portal=%s" % self.portal],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.proc)
        self.tgtadm("--mode", "target", "--op", "new", "--tid", "1", "--targetname", self.iqn)
        self.tgtadm("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", str(self.lun), "--backing-store",
                    self.backing)
        self.tgtadm("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL")
        if self.chap:
            self.tgtadm("--mode", "account", "--op", "new", "--user", self.chap[0], "--password", self.chap[1])
            self.tgtadm("--mode", "account", "--op", "bind", "--tid", "1", "--user", self.chap[0])
        return self

    def sessions(self):
        """How many initiators are logged in (tgt's I_T nexus list)."""
        text = self.tgtadm("--mode", "target", "--op", "show")
        return sum(1 for line in text.splitlines() if line.strip().startswith("I_T nexus:"))

    def connection_info(self, lun=None, **extra):
        data = {"target_portal": self.portal, "target_iqn": self.iqn, "target_lun": self.lun if lun is None else lun}
        if self.chap:
            data.update(auth_method="CHAP", auth_username=self.chap[0], auth_password=self.chap[1])
        data.update(extra)
        return {"driver_volume_type": "iscsi", "data": data}

    def stop(self):
        # tgtd ignores SIGTERM: it is stopped through its control port ("system delete").
        if self.proc is not None and self.proc.poll() is None:
            for args in (("--mode", "target", "--op", "delete", "--force", "--tid", "1"), ("--mode", "system", "--op", "delete")):
                try:
                    self.tgtadm(*args)
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
        _stop(self.proc)


class NbdExport(_Service):
    def __init__(self, backing, export="vol"):
        self.backing = backing
        self.export = export
        self.port = free_port()
        self.proc = None

    def start(self):
        # -t: keep serving after a client leaves; -e 4: the probe, the guest and a test may connect at once.
        self.proc = subprocess.Popen(["qemu-nbd", "-f", "raw", "-t", "-e", "4", "-b", HOST, "-p", str(self.port), "-x",
                                      self.export, "--cache=none", self.backing],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.proc)
        return self

    def connection_info(self, **extra):
        data = {"host": HOST, "port": self.port, "export": self.export}
        data.update(extra)
        return {"driver_volume_type": "nbd", "data": data}


def report(workdir="/tmp"):
    """What runs here: one target and one export brought up and torn down."""
    out = {"tgtd": shutil.which("tgtd"), "qemu-nbd": shutil.which("qemu-nbd"), "iscsiadm": shutil.which("iscsiadm"),
           "host_iscsi_tcp": any(os.path.exists(p) for p in ("/sys/class/iscsi_transport/tcp", "/sys/module/iscsi_tcp"))}
    backing = os.path.join(workdir, "nimbus-volumes-check.img")
    with open(backing, "wb") as handle:
        handle.truncate(8 << 20)
    try:
        for name, factory in (("tgt", lambda: TgtTarget(backing, "iqn.2026-11.compute.nimbus:check", chap=("u", "p" * 12))),
                              ("nbd", lambda: NbdExport(backing))):
            try:
                with factory():
                    out[name] = "works"
            except (OSError, RuntimeError) as exc:
                out[name] = "fails: %s" % exc
    finally:
        os.unlink(backing)
    return out


if __name__ == "__main__":
    json.dump(report(), sys.stdout, indent=2)
    print()
