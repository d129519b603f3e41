from __future__ import annotations

import errno
import os
import shutil

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._domain import compare, xml_builder
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import DomainError

UUID = "0b5c8d1e-3f0a-4d2b-9c7e-1a2b3c4d5e6f"
ROOT = "/srv/instances"
NS = {"n": xml_builder.METADATA_NS}

DOMCAPS = """<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>qemu</domain>
<machine>pc-i440fx-7.2</machine><arch>x86_64</arch>
<os supported='yes'><enum name='firmware'>%s</enum></os></domainCapabilities>"""


def host(**kw):
    base = dict(arch="x86_64", machine="pc-i440fx-7.2", vhost_net=False, direct_io=True)
    base.update(kw)
    return xml_builder.HostInfo(**base)


def request(**kw):
    base = dict(
        instance_uuid=UUID, instances_path=ROOT, virt_type="qemu", name="web-1",
        flavor={"name": "m1.tiny", "vcpus": 1, "memory_mb": 256, "root_gb": 1},
        image={"id": "img-1", "properties": {}},
        disks=[{"name": "disk", "path": ROOT + "/" + UUID + "/disk", "format": "qcow2"},
               {"name": "disk.local", "path": ROOT + "/" + UUID + "/disk.local", "format": "qcow2"},
               {"name": "disk.config", "path": ROOT + "/" + UUID + "/disk.config", "format": "raw"}],
    )
    base.update(kw)
    return xml_builder.DomainRequest(**base)


def build(req=None, **hostkw):
    return compare.parse(xml_builder.generate(req or request(), host(**hostkw)))


def test_basic_domain_shape():
    dom = build()
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "instance-" + UUID and dom.findtext("uuid") == UUID
    assert dom.find("memory").get("unit") == "KiB" and dom.findtext("memory") == str(256 * 1024)
    assert dom.find("features/acpi") is not None, "guests need ACPI to power off"
    assert dom.find("cpu") is None, "TCG keeps the emulator's default CPU"
    assert dom.find("devices/graphics") is None, "no graphics unless VNC is asked"
    assert dom.find("os/type").get("machine") == "pc-i440fx-7.2" and dom.find("os/boot").get("dev") == "hd"
    assert [t.get("dev") for t in dom.findall("devices/disk/target")] == ["vda", "vdb", "vdc"]
    assert [d.get("type") for d in dom.findall("devices/disk/driver")] == ["qcow2", "qcow2", "raw"]
    assert {d.get("cache") for d in dom.findall("devices/disk/driver")} == {"none"}
    log = ROOT + "/" + UUID + "/console.log"
    assert dom.find("devices/serial").get("type") == "file" and dom.find("devices/serial/source").get("path") == log
    assert dom.find("devices/console/target").get("type") == "serial"


def test_output_is_deterministic():
    assert xml_builder.generate(request(), host()) == xml_builder.generate(request(), host())


def test_kvm_uses_host_model_and_custom_model_is_honoured():
    assert build(request(virt_type="kvm")).find("cpu").get("mode") == "host-model"
    custom = build(request(cpu_mode="custom", cpu_model="qemu64")).find("cpu")
    assert custom.get("mode") == "custom" and custom.findtext("model") == "qemu64"


def test_topology_from_extra_specs():
    flavor = {"name": "m1.quad", "vcpus": 4, "memory_mb": 64, "extra_specs": {"hw:cpu_sockets": "2", "hw:cpu_cores": "2"}}
    topo = build(request(flavor=flavor)).find("cpu/topology")
    assert (topo.get("sockets"), topo.get("cores"), topo.get("threads")) == ("2", "2", "1")
    with pytest.raises(ValidationError, match="does not match 3 vcpus"):
        xml_builder.generate(request(flavor=dict(flavor, vcpus=3)), host())


def test_writeback_without_direct_io_and_qemu_driver_without_vhost():
    nic = {"type": "bridge", "source_bridge": "br0", "mac": "fa:16:3e:00:00:01", "target_dev": "tap12345678901"}
    dom = build(request(interfaces=[nic]), direct_io=False)
    assert {d.get("cache") for d in dom.findall("devices/disk/driver")} == {"writeback"}
    iface = dom.find("devices/interface")
    assert iface.find("driver").get("name") == "qemu" and iface.find("source").get("bridge") == "br0"
    assert iface.find("target").get("managed") is None
    with_vhost = build(request(interfaces=[nic]), vhost_net=True)
    assert with_vhost.find("devices/interface/driver") is None


def test_ethernet_tap_is_not_managed_by_libvirt():
    nic = {"type": "ethernet", "mac": "FA:16:3E:00:00:02", "target_dev": "tapabc", "model": "e1000", "mtu": 1450}
    iface = build(request(interfaces=[nic])).find("devices/interface")
    assert iface.find("target").attrib == {"dev": "tapabc", "managed": "no"}
    assert iface.find("mac").get("address") == "fa:16:3e:00:00:02" and iface.find("model").get("type") == "e1000"
    assert iface.find("mtu").get("size") == "1450" and iface.find("driver") is None


@pytest.mark.parametrize(("bus", "targets"), [
    ("scsi", ["sda", "sdb", "sdc"]), ("sata", ["sda", "sdb", "sdc"]), ("ide", ["hda", "hdb", "hdc"])])
def test_disk_bus_prefixes(bus, targets):
    dom = build(request(image={"properties": {"hw_disk_bus": bus}}))
    assert [t.get("dev") for t in dom.findall("devices/disk/target")] == targets
    assert {t.get("bus") for t in dom.findall("devices/disk/target")} == {bus}
    assert (dom.find("devices/controller[@model='virtio-scsi']") is not None) is (bus == "scsi")


def test_cdrom_config_drive_defaults_to_ide_and_is_readonly():
    disks = [{"name": "disk", "path": ROOT + "/" + UUID + "/disk"},
             {"name": "disk.config", "path": ROOT + "/" + UUID + "/disk.config", "format": "raw", "device": "cdrom"}]
    cdrom = build(request(disks=disks)).find("devices/disk[@device='cdrom']")
    assert cdrom.find("target").attrib == {"dev": "hda", "bus": "ide"} and cdrom.find("readonly") is not None


def test_direct_kernel_boot_and_command_line():
    image = {"properties": {"os_command_line": "console=ttyS0 x"}}
    req = request(kernel=ROOT + "/_base/k", ramdisk=ROOT + "/_base/r", image=image)
    os_el = build(req).find("os")
    assert os_el.findtext("kernel") == ROOT + "/_base/k" and os_el.findtext("initrd") == ROOT + "/_base/r"
    assert os_el.findtext("cmdline") == "console=ttyS0 x" and os_el.find("boot") is None
    assert build(request(kernel=ROOT + "/_base/k")).find("os").findtext("cmdline") == "console=ttyS0"


def test_vnc_listens_on_loopback():
    graphics = build(request(vnc=True)).find("devices/graphics")
    assert graphics.get("type") == "vnc" and graphics.get("listen") == "127.0.0.1"
    assert graphics.find("listen").get("address") == "127.0.0.1"


def test_uefi_needs_ovmf():
    req = request(image={"properties": {"hw_firmware_type": "uefi"}})
    with pytest.raises(DomainError, match="no OVMF firmware is installed"):
        xml_builder.generate(req, host())
    uefi = {"properties": {"hw_firmware_type": "uefi"}}
    assert build(request(image=uefi), efi_firmware=True).find("os").get("firmware") == "efi"
    loader = build(request(image=uefi), ovmf=("/c.fd", "/v.fd")).find("os/loader")
    assert loader.text == "/c.fd" and loader.get("type") == "pflash"


def test_user_text_is_escaped_into_metadata_only():
    evil = "</nimbus:name><devices><disk/></devices>&x;"
    dom = build(request(name=evil, owner={"user_id": "u-1", "user_name": "<bob>", "project_name": "p&q"},
                        flavor={"name": evil, "vcpus": 1, "memory_mb": 64}))
    meta = dom.find("metadata/n:instance", NS)
    assert meta.findtext("n:name", namespaces=NS) == evil
    assert meta.find("n:flavor", NS).get("name") == evil
    assert meta.findtext("n:owner/n:user", namespaces=NS) == "<bob>" and meta.find("n:owner/n:user", NS).get("uuid") == "u-1"
    assert meta.find("n:root", NS).get("uuid") == "img-1"
    assert len(dom.findall("devices/disk")) == 3 and dom.findtext("name") == "instance-" + UUID


@pytest.mark.parametrize(("change", "message"), [
    (dict(instance_uuid="not-a-uuid"), "not a valid UUID"),
    (dict(flavor={"name": "f", "vcpus": 1, "memory_mb": 0}), "memory_mb is 0, must be at least 16 MiB"),
    (dict(flavor={"name": "f", "vcpus": 0, "memory_mb": 64}), "vcpus is 0, must be at least 1"),
    (dict(flavor={"name": "f", "vcpus": "two", "memory_mb": 64}), "must be an integer"),
    (dict(flavor={"vcpus": 1, "memory_mb": 64}), "flavor name must be a non-empty string"),
    (dict(flavor={"name": "f", "vcpus": 1, "memory_mb": 64, "extra_specs": "hw:cpu_cores=2"}),
     "extra_specs must be a dictionary"),
    (dict(image={"properties": {"hw_disk_bus": "floppy"}}), "unknown hw_disk_bus 'floppy'"),
    (dict(image={"properties": {"hw_vif_model": "vmxnet9"}}), "unknown hw_vif_model"),
    (dict(disks=[{"name": "disk", "path": "/etc/passwd"}]), "resolves outside instances_path"),
    (dict(disks=[{"name": "../x", "path": ROOT + "/x"}]), "not a Nova disk name"),
    (dict(disks=[{"name": "disk", "path": ROOT + "/a"}, {"name": "disk", "path": ROOT + "/b"}]), "must be unique"),
    (dict(disks=[{"name": "disk", "path": ROOT + "/a", "device": "cdrom", "bus": "virtio"}]), "cannot use the virtio bus"),
    (dict(interfaces=[{"type": "bridge", "source_bridge": "br0", "mac": "01:00:5e:00:00:01"}]), "not a unicast MAC"),
    (dict(interfaces=[{"type": "ethernet", "mac": "fa:16:3e:00:00:01", "target_dev": "tap-name-far-too-long"}]),
     "max 15 characters"),
    (dict(interfaces=[{"type": "ethernet", "mac": "fa:16:3e:00:00:01"}]), "needs target_dev"),
    (dict(interfaces=[{"type": "bridge", "mac": "fa:16:3e:00:00:01"}]), "needs a valid source_bridge"),
    (dict(ramdisk=ROOT + "/_base/r"), "needs a kernel"),
    (dict(kernel="/boot/vmlinuz"), "outside instances_path"),
    (dict(vnc=True, vnc_listen="example.com"), "must be an IP address"),
    (dict(vnc=True, vnc_listen="::1%eth0"), "without a scope"),
    (dict(disks=[{"name": "disk", "path": ["a"]}]), "disk disk path must be a string"),
    (dict(disks=[{"name": "disk", "path": 5}]), "disk disk path must be an absolute path"),
    (dict(image={"id": ["x"]}), "image id must be a string"),
    (dict(image={"id": "img", "properties": {"hw_machine_type": ["pc"]}}), "image property hw_machine_type must be a string"),
    # A part given as 0 is an error; only a part left out counts as 1.
    (dict(flavor={"name": "f", "vcpus": 2, "memory_mb": 64, "extra_specs": {"hw:cpu_sockets": 0, "hw:cpu_cores": 2}}),
     "hw:cpu_sockets must be >= 1"),
    # "$" would match before a trailing newline.
    (dict(interfaces=[{"type": "bridge", "source_bridge": "br0\n", "mac": "fa:16:3e:00:00:01"}]), "needs a valid source_bridge"),
    (dict(interfaces=[{"type": "bridge", "source_bridge": "br0", "mac": "fa:16:3e:00:00:01\n"}]), "not a unicast MAC"),
    (dict(interfaces=[{"type": "bridge", "source_bridge": "br0", "mac": "fa:16:3e:00:00:01", "mtu": 10 ** 30}]),
     "interface mtu must be <= 65535"),
    (dict(cpu_mode="custom"), "needs cpu_model"),
])
def test_bad_input_is_a_validation_error(change, message):
    with pytest.raises(ValidationError, match=message) as info:
        xml_builder.generate(request(**change), host())
    assert info.value.step == "domain_xml" and info.value.retryable is False


@pytest.mark.parametrize("change, what", [
    (dict(name="web\x00-1"), "name"),
    (dict(name="bell\x07"), "name"),
    (dict(owner={"user_name": "a\x1bb"}), "owner user_name"),
    (dict(owner={"project_id": "\x00"}), "owner project_id"),
    (dict(image={"id": "img", "properties": {"os_command_line": "console=ttyS0\x00 init=/bin/sh"}}),
     "image property os_command_line"),
    (dict(image={"id": "img", "properties": {"hw_machine_type": "q35\x01"}}), "image property hw_machine_type"),
    (dict(image={"id": "img\x0b"}), "image id"),
    (dict(cpu_mode="custom", cpu_model="qemu64\x00"), "cpu_model"),
    (dict(flavor={"name": "m1\x02", "vcpus": 1, "memory_mb": 256}), "flavor name"),
    (dict(kernel=ROOT + "/_base/k\x00"), "kernel"),
    (dict(disks=[{"name": "disk", "path": ROOT + "/" + UUID + "/disk\x00"}]), "disk disk path"),
    (dict(name="lone \ud800 surrogate"), "name"),
])
def test_text_xml_cannot_hold_is_a_validation_error_not_a_traceback(change, what):
    # lxml raises a bare ValueError ("All strings must be XML compatible") on these.
    with pytest.raises(ValidationError, match="%s contains .* a character XML cannot hold" % what) as info:
        xml_builder.generate(request(**change), host())
    assert info.value.step == "domain_xml"


def _owner(dom):
    owner = dom.find("metadata/n:instance/n:owner", NS)
    return {el.tag.split("}")[1]: (el.text, el.get("uuid")) for el in owner} if owner is not None else None


def test_owner_in_the_server_roles_shape_is_written_not_dropped():
    # playbooks/demo.yml passes {project, user}: that used to give an empty <nimbus:owner/>.
    dom = build(request(owner={"project": "demo", "user": "alice"}))
    assert _owner(dom) == {"user": ("alice", None), "project": ("demo", None)}
    ids = build(request(owner={"user_id": "u-1", "user_name": "bob", "project_id": "p-1", "project": "demo"}))
    assert _owner(ids) == {"user": ("bob", "u-1"), "project": ("demo", "p-1")}
    assert _owner(build(request(owner={}))) is None and _owner(build(request(owner={"user": ""}))) is None


@pytest.mark.parametrize("owner, message", [
    ({"project": "demo", "tenant": "x"}, "unknown owner keys tenant"),
    ({"user": "alice", "user_name": "bob"}, "owner user and user_name both give the user name"),
    ({"project": {"name": "demo"}}, "owner project must be a string"),
    (["alice"], "owner must be a dict"),
])
def test_bad_owner_is_refused(owner, message):
    with pytest.raises(ValidationError, match=message):
        xml_builder.generate(request(owner=owner), host())


def test_tabs_newlines_and_non_ascii_are_fine():
    dom = build(request(name="tab\there\nnewline \u00e9\u4e2d \U0001f600"))
    assert dom.findtext("metadata/n:instance/n:name", namespaces=NS) == "tab\there\nnewline \u00e9\u4e2d \U0001f600"


def test_symlink_escaping_instances_path_is_refused(tmp_path):
    root = tmp_path / "instances"
    root.mkdir()
    (root / "evil").symlink_to("/etc")
    req = request(instances_path=str(root), disks=[{"name": "disk", "path": str(root / "evil" / "passwd")}])
    with pytest.raises(ValidationError, match="outside instances_path"):
        xml_builder.generate(req, host())


def test_host_info_from_domcaps():
    info = xml_builder.host_info_from_domcaps(DOMCAPS % "")
    assert (info.arch, info.machine, info.efi_firmware) == ("x86_64", "pc-i440fx-7.2", False)
    assert xml_builder.host_info_from_domcaps(DOMCAPS % "<value>bios</value><value>efi</value>").efi_firmware is True


def test_direct_io_probe(tmp_path, monkeypatch):
    assert isinstance(xml_builder.supports_direct_io(str(tmp_path / "missing" / "dir")), bool)
    assert os.listdir(tmp_path) == [], "the probe file is removed"
    real_open = os.open

    def refuse_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # what tmpfs on older kernels says
        return real_open(path, flags, *args)

    monkeypatch.setattr(xml_builder.os, "open", refuse_direct)
    assert xml_builder.supports_direct_io(str(tmp_path)) is False
    assert os.listdir(tmp_path) == []


def test_find_ovmf(tmp_path):
    code, nvram = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    assert xml_builder.find_ovmf([(str(code), str(nvram))]) is None
    code.write_bytes(b"x")
    nvram.write_bytes(b"y")
    assert xml_builder.find_ovmf([("/nonexistent", "/x"), (str(code), str(nvram))]) == (str(code), str(nvram))


@pytest.mark.skipif(shutil.which("virt-xml-validate") is None, reason="virt-xml-validate not installed")
def test_virt_xml_validate_accepts_ours_and_rejects_broken():
    assert xml_builder.validate_xml(xml_builder.generate(request(vnc=True), host())) is True
    with pytest.raises(DomainError, match="does not match libvirt's schema"):
        xml_builder.validate_xml(b"<domain type='qemu'><name>x</name><bogus/></domain>")


def _with_volume(xml, volume_id="vol-1", dev="vdb"):
    """libvirt.xml as volume_attach leaves it after attaching an NBD volume."""
    from ansible_collections.nimbus.compute.plugins.module_utils._volume import nbd
    from ansible_collections.nimbus.compute.plugins.module_utils._volume import xml as volume_xml

    tree = compare.parse(xml)
    spec = dict(nbd.validate({"host": "127.0.0.1", "port": 10809, "export": "e"}), secret_uuid=None)
    volume_xml.insert_disk(tree, volume_xml.disk_element(spec, dev, "virtio", volume_id))
    return compare._etree().tostring(tree, pretty_print=True, encoding="utf-8")


def test_a_rerun_keeps_the_attached_volume_disks_byte_for_byte(tmp_path):
    from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal

    root = str(tmp_path)
    (tmp_path / UUID).mkdir()
    one_disk = [{"name": "disk", "path": root + "/" + UUID + "/disk", "format": "qcow2"}]
    req = request(instances_path=root, disks=one_disk)
    old = _with_volume(_with_volume(xml_builder.generate(req, host())), "vol-2", "vdc")
    # Not in the journal (yet): not ours to keep.
    assert xml_builder.attached_volume_disks(req, old) == []
    Journal(str(tmp_path / UUID)).record("volume_attach", created=["volume:vol-1"],
                                         volumes={"vol-1": {"device": "vdb"}, "vol-2": {"device": "vdc"}})
    kept = xml_builder.attached_volume_disks(req, old)
    assert [d.find("alias").get("name") for d in kept] == ["ua-volume-vol-1", "ua-volume-vol-2"]
    assert xml_builder.generate(req, host(), kept) == old
    # The disks grew into the volume's device name: a clear error, not a domain with two vdb.
    two_disks = [*one_disk, {"name": "disk.local", "path": root + "/" + UUID + "/disk.local", "format": "qcow2"}]
    with pytest.raises(ValidationError, match="attached volume vol-1 is vdb, which the generated disks now use too"):
        xml_builder.generate(request(instances_path=root, disks=two_disks), host(), kept)
    with pytest.raises(DomainError, match="which holds the attached volumes vol-1, vol-2"):
        xml_builder.attached_volume_disks(req, b"<domain><devices>")


def _xml_char(code):
    """XML 1.0's Char production, straight from the spec."""
    return (code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def test_unsafe_text_pattern_is_the_complement_of_xml_chars():
    edges = {0, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE, 0x1F, 0x20, 0x7F, 0xD7FF, 0xD800, 0xDFFF, 0xE000,
             0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10FFFF}
    for code in sorted(edges | set(range(0, 0x10000, 7))):
        assert bool(xml_builder.XML_UNSAFE_RE.search(chr(code))) is not _xml_char(code), hex(code)


def test_numa_nodes_become_guest_cells():
    flavor = {"name": "m1.numa", "vcpus": 4, "memory_mb": 2048, "extra_specs": {"hw:numa_nodes": "2"}}
    cells = build(request(flavor=flavor)).findall("cpu/numa/cell")
    assert [(c.get("id"), c.get("cpus"), c.get("memory"), c.get("unit")) for c in cells] == [
        ("0", "0-1", str(1024 * 1024), "KiB"), ("1", "2-3", str(1024 * 1024), "KiB")]
    image = {"id": "img-1", "properties": {"hw_numa_nodes": "4"}}
    assert [c.get("cpus") for c in build(request(flavor=dict(flavor, extra_specs={}), image=image)).findall("cpu/numa/cell")] \
        == ["0", "1", "2", "3"]
    with_topology = dict(flavor, extra_specs={"hw:numa_nodes": "2", "hw:cpu_sockets": "2", "hw:cpu_cores": "2"})
    cpu = build(request(flavor=with_topology, virt_type="kvm")).find("cpu")
    assert cpu.get("mode") == "host-model" and cpu.find("topology") is not None and len(cpu.findall("numa/cell")) == 2


@pytest.mark.parametrize("specs, words", [({"hw:numa_nodes": "3"}, "must divide vcpus (4)"),
                                          ({"hw:numa_nodes": "2", "hw:numa_mem.0": "1024"}, "explicit NUMA split")])
def test_numa_nodes_that_cannot_be_given_fail_the_check(specs, words):
    flavor = {"name": "m1.numa", "vcpus": 4, "memory_mb": 2048, "extra_specs": specs}
    with pytest.raises(ValidationError) as caught:
        xml_builder.generate(request(flavor=flavor), host())
    assert words in caught.value.msg and caught.value.step == xml_builder.STEP
