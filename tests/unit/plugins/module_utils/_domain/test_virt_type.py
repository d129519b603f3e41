"""virt_type auto: kvm only with the vmx/svm flag and a usable /dev/kvm (LAB.md), else TCG."""

from __future__ import annotations

import os

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._domain.virt_type import detect_virt_type

FLAGS = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr %s sse2 hypervisor\n\n"


@pytest.fixture
def host(tmp_path):
    def make(flag, device_mode):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(FLAGS % flag)
        device = tmp_path / "kvm"
        if device_mode is not None:
            device.write_bytes(b"")
            os.chmod(device, device_mode)
        return dict(cpuinfo_path=str(cpuinfo), device=str(device))
    return make


@pytest.mark.parametrize("flag, mode, expected, reason", [
    ("vmx", 0o666, "kvm", "vmx/svm"),
    ("svm", 0o666, "kvm", "vmx/svm"),
    ("pae", 0o666, "qemu", "no vmx/svm"),     # a paravirtual host: /dev/kvm without the flag
    ("vmx", None, "qemu", "missing or not usable"),
])
def test_auto_picks_kvm_only_where_it_can_run(host, flag, mode, expected, reason):
    virt_type, why = detect_virt_type("auto", **host(flag, mode))
    assert virt_type == expected
    assert reason in why


def test_an_unreadable_cpuinfo_means_tcg(tmp_path):
    assert detect_virt_type("auto", cpuinfo_path=str(tmp_path / "none"), device=str(tmp_path / "none"))[0] == "qemu"


@pytest.mark.parametrize("requested", ["kvm", "qemu"])
def test_an_explicit_virt_type_is_honoured(host, requested):
    assert detect_virt_type(requested, **host("pae", None)) == (requested, "requested")


def test_this_lab_machine_gets_tcg_when_it_has_no_vmx_or_svm():
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        if any(word in handle.read().split() for word in ("vmx", "svm")):
            pytest.skip("this CPU has vmx/svm: kvm may be right here")
    assert detect_virt_type("auto")[0] == "qemu"
