# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Nova's ``virt_type`` chosen at run time: kvm only where it can really run a guest.

A /dev/kvm that exists is not enough (LAB.md: a paravirtual host exposes /dev/kvm without the
vmx/svm CPU flag and guests hang in early boot). kvm needs the flag *and* a usable /dev/kvm.
"""

from __future__ import annotations

import os

VIRT_TYPES = ("auto", "kvm", "qemu")


def cpu_has_virtualization(cpuinfo_path="/proc/cpuinfo"):
    try:
        with open(cpuinfo_path, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    if "vmx" in flags or "svm" in flags:
                        return True
    except OSError:
        return False
    return False


def kvm_device_usable(device="/dev/kvm"):
    return os.path.exists(device) and os.access(device, os.R_OK | os.W_OK)


def detect_virt_type(requested="auto", cpuinfo_path="/proc/cpuinfo", device="/dev/kvm"):
    """Return ``(virt_type, reason)``; ``requested`` kvm or qemu is honoured as given."""
    if requested in ("kvm", "qemu"):
        return requested, "requested"
    has_flag = cpu_has_virtualization(cpuinfo_path)
    usable = kvm_device_usable(device)
    if has_flag and usable:
        return "kvm", "CPU has vmx/svm and %s is usable" % device
    if not has_flag:
        return "qemu", "CPU has no vmx/svm flag: TCG"
    return "qemu", "%s missing or not usable: TCG" % device
