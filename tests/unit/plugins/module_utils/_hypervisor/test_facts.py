# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Fact gathering against libvirt's test:///default driver (one running domain "test": 8 GiB max, 2 vCPUs)."""

from __future__ import annotations

import datetime
import json
import os
import uuid

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._hypervisor import facts as hv
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import HostState

pytest.importorskip("libvirt")
TEST_URI = "test:///default"
TEST_DOMAIN = "6695eb01-f6a4-8304-79aa-97f2502e193f"
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def test_test_driver_state_in_nova_terms(tmp_path):
    f = hv.gather(TEST_URI, str(tmp_path), reserved_host_memory_mb=512, reserved_host_cpus=1, now=NOW)
    assert f["hypervisor_type"] == "TEST"
    assert f["total_usable_ram_mb"] == 3072 and f["vcpus_total"] == 16
    assert f["free_ram_mb"] == 3072 - 512 - 8192  # the test domain's 8 GiB maximum counts, overcommitted
    assert f["vcpus_used"] == 1 + 2
    assert f["instances"] == [TEST_DOMAIN] and f["num_instances"] == 1
    assert ["i686", "test", "hvm"] in f["supported_instances"]
    assert [c["memory_mb"] for c in f["numa_topology"]["cells"]] == [2048, 4096]
    assert len(f["numa_topology"]["cells"][1]["cpus"]) == 8
    assert "HW_CPU_X86_PAE" in f["traits"]
    assert f["service"] == {"disabled": False, "forced_down": False, "last_seen_up": NOW.isoformat()}  # gather time
    assert f["failed_builds"] == 0  # documented: nothing on the host records a failed build
    st = os.statvfs(tmp_path)
    assert f["total_usable_disk_gb"] == st.f_blocks * st.f_frsize // hv.GIB
    assert json.loads(json.dumps(f)) == f  # plain JSON, as a fact must be
    HostState.from_dict(f)  # and the scheduler takes it as it is


def test_options_reach_the_fact(tmp_path):
    aggregates = [{"name": "ssd", "metadata": {"ssd": "true"}}]
    f = hv.gather(TEST_URI, str(tmp_path), reserved_host_disk_mb=100, cpu_allocation_ratio=2.0, availability_zone="az1",
                  aggregates=aggregates, traits=["CUSTOM_SSD"], disabled=True)
    assert (f["cpu_allocation_ratio"], f["availability_zone"], f["aggregates"]) == (2.0, "az1", aggregates)
    assert "CUSTOM_SSD" in f["traits"] and f["service"]["disabled"] is True
    assert f["free_disk_mb"] <= f["total_usable_disk_gb"] * 1024 - 100


def test_builds_under_way_count_as_io_ops(tmp_path):
    building = tmp_path / str(uuid.uuid4())
    building.mkdir()
    (building / "instance.json").write_text("{}")
    (tmp_path / str(uuid.uuid4())).mkdir()  # no journal: not a build
    (tmp_path / "_base").mkdir()
    running = tmp_path / TEST_DOMAIN  # has a domain: built
    running.mkdir()
    (running / "instance.json").write_text("{}")
    assert hv.gather(TEST_URI, str(tmp_path))["num_io_ops"] == 1


def test_missing_instances_path_measures_its_parent_filesystem(tmp_path):
    f = hv.gather(TEST_URI, str(tmp_path / "not" / "yet"))
    assert f["total_usable_disk_gb"] == hv.gather(TEST_URI, str(tmp_path))["total_usable_disk_gb"]
    assert f["num_io_ops"] == 0


def test_bad_input_and_unreachable_libvirt_fail_clearly(tmp_path):
    with pytest.raises(ValidationError, match="reserved_host_memory_mb must not be negative"):
        hv.gather(TEST_URI, str(tmp_path), reserved_host_memory_mb=-1)
    with pytest.raises(hv.HypervisorError, match="cannot connect to libvirt"):
        hv.gather("test:///" + str(tmp_path / "missing.xml"), str(tmp_path))


@pytest.mark.parametrize("kw, message", [
    ({"libvirt_uri": ""}, "libvirt_uri must be a non-empty URI"),
    ({"libvirt_uri": TEST_URI + "\0"}, "without control characters"),
    ({"instances_path": "relative"}, "instances_path must be an absolute path"),
    ({"instances_path": "/tmp/x\0"}, "instances_path must be an absolute path"),
    ({"ram_allocation_ratio": float("nan")}, "ram_allocation_ratio must be a finite number"),
    ({"cpu_allocation_ratio": 0}, "cpu_allocation_ratio must be greater than 0"),
    ({"disk_allocation_ratio": 0.0}, "disk_allocation_ratio must be greater than 0"),
    ({"ram_allocation_ratio": -1.5}, "ram_allocation_ratio must be greater than 0"),
    ({"reserved_host_cpus": 10 ** 30}, "must be at most 2147483647"),
    ({"availability_zone": ""}, "availability_zone must be a non-empty name"),
    ({"availability_zone": "az1:hv1"}, "without ':'"),
    ({"availability_zone": "az\0"}, "control characters"),
    ({"traits": ["lower_case"]}, "'lower_case' is not a trait name"),
    ({"traits": [""]}, "is not a trait name"),
    ({"pci_device_spec": [{"vendor": "10de"}]}, "pci_device_spec entries are {vendor_id, product_id}"),
    ({"pci_device_spec": ["10de"]}, "pci_device_spec entries are"),
    ({"pci_device_spec": [{"vendor_id": "0x10de"}]}, "vendor_id '0x10de' is not 4 hex digits"),
])
def test_bad_options_fail_before_libvirt_is_asked(tmp_path, kw, message):
    args = {"libvirt_uri": TEST_URI, "instances_path": str(tmp_path)}
    args.update(kw)
    with pytest.raises(ValidationError, match=message):
        hv.gather(**args)


def test_capabilities_parsing_of_a_kvm_host():
    xml = """<capabilities><host><cpu><arch>x86_64</arch><model>EPYC</model><vendor>AMD</vendor>
      <topology sockets='1' cores='2' threads='1'/><feature name='avx2'/><feature name='sse4.2'/></cpu></host>
      <guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>
      <guest><os_type>hvm</os_type><arch name='aarch64'><domain type='qemu'/></arch></guest></capabilities>"""
    cpu_info, supported, numa = hv.parse_capabilities(xml)
    assert supported == [["x86_64", "qemu", "hvm"], ["x86_64", "kvm", "hvm"], ["aarch64", "qemu", "hvm"]]
    assert cpu_info["topology"] == {"sockets": 1, "cores": 2, "threads": 1} and cpu_info["model"] == "EPYC"
    assert hv.cpu_traits(cpu_info) == ["HW_CPU_X86_AVX2", "HW_CPU_X86_SSE4_2"]
    assert numa is None


def pci_xml(vendor, product):
    return ("<device><name>pci_x</name><capability type='pci'><domain>0</domain><product id='0x%s'/>"
            "<vendor id='0x%s'/></capability></device>" % (product, vendor))


def test_pci_pools_count_devices_matching_the_device_spec():
    xmls = [pci_xml("10de", "1eb8"), pci_xml("10DE", "1eb8"), pci_xml("8086", "1572"), pci_xml("1af4", "1041"),
            "<device><capability type='pci'/></device>"]
    pools = hv.pci_pools(xmls, [{"vendor_id": "10de", "product_id": "1EB8"}, {"vendor_id": "8086"}])
    assert pools == [{"vendor_id": "10de", "product_id": "1eb8", "count": 2},
                     {"vendor_id": "8086", "product_id": "1572", "count": 1}]
    assert hv.pci_pools(xmls, [{"vendor_id": "dead"}]) == []


def test_no_device_spec_means_no_pci_pools(tmp_path):
    assert hv.gather(TEST_URI, str(tmp_path))["pci_stats"] == []


def test_a_domain_vanishing_while_counting_is_skipped():
    import libvirt

    class Gone:
        def info(self):
            err = libvirt.libvirtError("Domain not found")
            err.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 0, "", "", "", 0, 0)
            raise err

    class Kept:
        def info(self):
            return [1, 2048 * 1024, 0, 3, 0]

        def UUIDString(self):
            return TEST_DOMAIN.upper()

    class Conn:
        def listAllDomains(self, flags):
            return [Gone(), Kept()]

    assert hv.domain_usage(Conn()) == ([TEST_DOMAIN], 2048, 3)
