"""Small helpers shared by the integration tests (imported as ``labtools``; conftest puts this
directory on sys.path)."""

from __future__ import annotations

import subprocess

LAB_URI = "qemu:///system"


def virsh(*args, check=True, uri=LAB_URI):
    """Run virsh against the lab; raise AssertionError with its stderr when ``check`` and it fails."""
    proc = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("virsh %s: %s" % (" ".join(args), proc.stderr))
    return proc
