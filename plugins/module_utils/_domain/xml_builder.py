# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The domain XML, built with lxml from the flavor, the image properties and the host (Nova's
``LibvirtDriver._get_guest_config`` in our words).

Everything is validated before anything is written; the output is deterministic (no timestamps) so
that the same request always gives the same bytes and a re-run is ``changed=false``. Names and
paths come from the instance UUID; user text (display name, flavor name, owner) only goes into
``<metadata>``, where lxml escapes it.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import ipaddress
import mmap
import os
import re
import tempfile

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.args import LIBVIRT_URI_DEFAULT, given
from ansible_collections.nimbus.compute.plugins.module_utils._common.atomic import read_bytes, write_atomic
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._common.libvirt_uri import validate_libvirt_uri
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandRunner
from ansible_collections.nimbus.compute.plugins.module_utils._domain.compare import _etree, parse
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import Connection, DomainError, libvirt_module
from ansible_collections.nimbus.compute.plugins.module_utils._domain.metadata import METADATA_NS, METADATA_PREFIX
from ansible_collections.nimbus.compute.plugins.module_utils._domain.virt_type import detect_virt_type
from ansible_collections.nimbus.compute.plugins.module_utils._instance import numa
from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import validate_flavor

STEP = "domain_xml"

# Target device prefix per bus (Nova's blockinfo.get_dev_prefix_for_disk_bus).
DISK_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd"}
DISK_FORMATS = ("qcow2", "raw")
DISK_DEVICES = ("disk", "cdrom")
VIF_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet")
INTERFACE_TYPES = ("bridge", "ethernet")
FIRMWARE_TYPES = ("bios", "uefi")
CPU_MODES = ("auto", "host-model", "host-passthrough", "custom", "none")
DEFAULT_COMMAND_LINE = "console=ttyS0"
IDE_MAX = 4
# OVMF builds shipped by Debian/Ubuntu/Fedora, used when libvirt has no firmware descriptors.
OVMF_CANDIDATES = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
)
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")
DISK_NAME_RE = re.compile(r"^disk(\.[a-z0-9_-]+)?\Z")
# Characters XML 1.0 cannot carry (NUL, other C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF):
# lxml raises a bare ValueError on them, so text is checked before it reaches lxml.
# The complement of XML 1.0's Char production, spelled out: the same set as [^\t\n\r\x20-\ud7ff
# \ue000-\ufffd\U00010000-\U0010ffff], which costs 8 ms to compile on every module run.
XML_UNSAFE_RE = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\ud800-\udfff\ufffe\uffff]")


@dataclasses.dataclass
class HostInfo:
    """What the XML needs to know about the hypervisor (from libvirt's domain capabilities)."""

    arch: str = "x86_64"
    machine: str | None = None  # canonical machine type, e.g. pc-i440fx-7.2
    efi_firmware: bool = False  # libvirt can pick an EFI firmware itself (firmware descriptors)
    ovmf: tuple | None = None  # (code, vars) found on disk when libvirt has no descriptors
    vhost_net: bool = False
    direct_io: bool = True


def host_info_from_domcaps(domcaps_xml, vhost_net=False, direct_io=True, ovmf=None):
    """Parse ``virConnect.getDomainCapabilities`` output (arch, canonical machine, EFI support)."""
    etree = _etree()
    root = etree.fromstring(domcaps_xml.encode("utf-8"), etree.XMLParser(resolve_entities=False, no_network=True))
    firmware = root.xpath("/domainCapabilities/os/enum[@name='firmware']/value/text()")
    return HostInfo(
        arch=(root.findtext("arch") or "x86_64").strip(),
        machine=(root.findtext("machine") or "").strip() or None,
        efi_firmware="efi" in firmware,
        ovmf=ovmf,
        vhost_net=vhost_net,
        direct_io=direct_io,
    )


def find_ovmf(candidates=OVMF_CANDIDATES):
    for code, nvram_template in candidates:
        if os.path.isfile(code) and os.path.isfile(nvram_template):
            return code, nvram_template
    return None


def supports_direct_io(directory):
    """Whether files in ``directory`` can be opened with O_DIRECT (cache='none' needs it; tmpfs
    refuses it). Like Nova's ``_supports_direct_io``: write one aligned block to a temp file."""
    while directory and not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    if not hasattr(os, "O_DIRECT"):
        return False
    fd, probe = tempfile.mkstemp(prefix=".directio.", dir=directory or None)
    os.close(fd)
    try:
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_DIRECT)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False
            raise
        try:
            block = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
            os.write(fd, block)
            return True
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False
            raise
        finally:
            os.close(fd)
    finally:
        os.unlink(probe)


def probe_host(conn, virt_type, machine=None, disk_dir=None, step=STEP):
    """HostInfo for ``virt_type`` from a live connection; an unknown machine type is a clear error."""
    libvirt = libvirt_module(step)
    try:
        domcaps = conn.getDomainCapabilities(None, None, machine, virt_type, 0)
    except libvirt.libvirtError as exc:
        if machine:
            raise ValidationError("machine type %r is not available for %s on this host: %s"
                                  % (machine, virt_type, exc.get_error_message()), step=step)
        raise DomainError("cannot read the domain capabilities for %s: %s" % (virt_type, exc.get_error_message()), step=step)
    return host_info_from_domcaps(
        domcaps,
        vhost_net=os.path.exists("/dev/vhost-net"),
        direct_io=supports_direct_io(disk_dir) if disk_dir else True,
        ovmf=find_ovmf(),
    )


def validate_xml(xml_bytes, step=STEP):
    """Check against libvirt's RelaxNG schema with ``virt-xml-validate`` when it is installed."""
    runner = CommandRunner("virt-xml-validate", step=step, timeout=30)
    try:
        runner.path()
    except CommandError:
        return False  # not installed: validation is best effort, as documented
    with tempfile.NamedTemporaryFile(suffix=".xml") as handle:
        handle.write(xml_bytes)
        handle.flush()
        result = runner.run([handle.name, "domain"], check=False)
    if result.rc != 0:
        detail = (result.stderr.strip() or result.stdout.strip())[-1500:]
        raise DomainError("generated domain XML does not match libvirt's schema: %s" % detail, step=step)
    return True


# ---------------------------------------------------------------------------------------------
# Request validation: everything is checked before anything is written.


def _int(value, what, minimum=0, maximum=None):
    if isinstance(value, bool):
        raise ValidationError("%s must be an integer, got %r" % (what, value), step=STEP)
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError("%s must be an integer, got %r" % (what, value), step=STEP)
    if number < minimum:
        raise ValidationError("%s must be >= %d, got %d" % (what, minimum, number), step=STEP)
    if maximum is not None and number > maximum:
        raise ValidationError("%s must be <= %d, got %d" % (what, maximum, number), step=STEP)
    return number


def _choice(value, choices, what):
    if value not in choices:
        raise ValidationError("unknown %s %r (one of: %s)" % (what, value, ", ".join(choices)), step=STEP)
    return value


def _text(value, what):
    """``value`` as a str XML can carry (None stays None); a control character or NUL is a ValidationError."""
    if value is None:
        return None
    # A number from YAML is its text; a list or dict would end up in the XML as its Python repr.
    if isinstance(value, (bool, bytes, dict, list, tuple, set)):
        raise ValidationError("%s must be a string, got %r" % (what, value), step=STEP)
    text = str(value)
    bad = XML_UNSAFE_RE.search(text)
    if bad:
        raise ValidationError("%s contains %r at position %d, a character XML cannot hold (control characters and NUL "
                              "are refused)" % (what, bad.group(), bad.start()), step=STEP)
    return text


def _inside(path, instances_path, what):
    path = _text(path, what)  # before realpath, which raises a bare ValueError on NUL
    if not path or not os.path.isabs(path):
        raise ValidationError("%s must be an absolute path, got %r" % (what, path), step=STEP)
    if not paths.inside(path, instances_path):
        raise ValidationError("%s %s resolves outside instances_path %s" % (what, path, instances_path), step=STEP)
    return os.path.normpath(path)


@dataclasses.dataclass
class DomainRequest:
    instance_uuid: str
    instances_path: str
    flavor: dict
    virt_type: str
    name: str | None = None
    image: dict = dataclasses.field(default_factory=dict)
    disks: list = dataclasses.field(default_factory=list)
    interfaces: list = dataclasses.field(default_factory=list)
    kernel: str | None = None
    ramdisk: str | None = None
    owner: dict = dataclasses.field(default_factory=dict)
    vnc: bool = False
    vnc_listen: str = "127.0.0.1"
    cpu_mode: str = "auto"
    cpu_model: str | None = None

    @property
    def properties(self):
        return self.image.get("properties") or {}

    @property
    def instance_dir(self):
        return paths.instance_dir(self.instances_path, self.instance_uuid)


def validate_request(req):
    """Normalise and check a DomainRequest in place; raise ValidationError before any change."""
    req.instance_uuid = paths.validate_uuid(req.instance_uuid, step=STEP)
    paths.validate_instances_path(req.instances_path, step=STEP)
    _text(req.instances_path, "instances_path")
    _choice(req.virt_type, ("kvm", "qemu"), "virt_type")
    flavor = validate_flavor(req.flavor, step=STEP)
    flavor["extra_specs"] = dict(flavor["extra_specs"])
    _text(flavor["name"], "flavor name")
    req.flavor = flavor
    _topology(flavor)
    req.name = _text(req.name, "name")

    if not isinstance(req.image, dict):
        raise ValidationError("image must be a dict", step=STEP)
    _text(req.image.get("id"), "image id")
    props = req.properties
    if not isinstance(props, dict):
        raise ValidationError("image properties must be a dict", step=STEP)
    try:
        nodes = numa.requested_nodes(flavor["extra_specs"], props, flavor["vcpus"], flavor["memory_mb"])
    except ValueError as exc:
        raise ValidationError(str(exc), step=STEP) from None
    flavor["numa_cells"] = numa.guest_cells(nodes, flavor["vcpus"], flavor["memory_mb"])
    for key in ("os_command_line", "hw_machine_type"):
        if props.get(key) is not None:
            props[key] = _text(props[key], "image property %s" % key)
    req.cpu_model = _text(req.cpu_model, "cpu_model")
    _choice(props.get("hw_disk_bus", "virtio"), tuple(DISK_BUS_PREFIX), "hw_disk_bus")
    _choice(props.get("hw_cdrom_bus", "ide"), tuple(DISK_BUS_PREFIX), "hw_cdrom_bus")
    _choice(props.get("hw_vif_model", "virtio"), VIF_MODELS, "hw_vif_model")
    _choice(props.get("hw_firmware_type", "bios"), FIRMWARE_TYPES, "hw_firmware_type")
    _choice(req.cpu_mode, CPU_MODES, "cpu_mode")
    if req.cpu_mode == "custom" and not req.cpu_model:
        raise ValidationError("cpu_mode custom needs cpu_model", step=STEP)

    if req.kernel:
        req.kernel = _inside(req.kernel, req.instances_path, "kernel")
    if req.ramdisk:
        if not req.kernel:
            raise ValidationError("a ramdisk needs a kernel (direct kernel boot)", step=STEP)
        req.ramdisk = _inside(req.ramdisk, req.instances_path, "ramdisk")

    req.disks = [_disk(d, req) for d in req.disks or []]
    names = [d["name"] for d in req.disks]
    if len(set(names)) != len(names):
        raise ValidationError("disk names must be unique, got %s" % names, step=STEP)
    req.interfaces = [_interface(i, props) for i in req.interfaces or []]
    macs = [i["mac"] for i in req.interfaces]
    if len(set(macs)) != len(macs):
        raise ValidationError("interface MAC addresses must be unique, got %s" % macs, step=STEP)
    if req.vnc:
        try:
            # libvirt's listen address takes no IPv6 scope (::1%eth0).
            if getattr(ipaddress.ip_address(req.vnc_listen), "scope_id", None):
                raise ValueError("scoped")
        except ValueError:
            raise ValidationError("vnc_listen must be an IP address without a scope, got %r" % req.vnc_listen, step=STEP)
    req.owner = _owner(req.owner)
    return req


OWNER_KEYS = ("user_id", "user_name", "project_id", "project_name")
# The server role's documented shape {project, user}: both are names.
OWNER_ALIASES = {"user": "user_name", "project": "project_name"}


def _owner(owner):
    """``{user_id, user_name, project_id, project_name}`` from either shape; unknown keys are refused (an
    owner we silently drop is an empty ``<nimbus:owner/>``)."""
    if owner in (None, ""):
        return {}
    if not isinstance(owner, dict):
        raise ValidationError("owner must be a dict, got %r" % (owner,), step=STEP)
    unknown = sorted(str(k) for k in owner if k not in OWNER_KEYS and k not in OWNER_ALIASES)
    if unknown:
        raise ValidationError("unknown owner keys %s (known: %s)"
                              % (", ".join(unknown), ", ".join((*OWNER_ALIASES, *OWNER_KEYS))), step=STEP)
    normalised, given_as = {}, {}
    for key, value in owner.items():
        if value is None or value == "":
            continue
        if isinstance(value, (dict, list, bool)):
            raise ValidationError("owner %s must be a string, got %r" % (key, value), step=STEP)
        field = OWNER_ALIASES.get(key, key)
        if field in normalised:
            raise ValidationError("owner %s and %s both give the %s; use one" % (given_as[field], key, field.replace("_", " ")),
                                  step=STEP)
        normalised[field] = _text(value, "owner %s" % key)
        given_as[field] = key
    return normalised


def _topology(flavor):
    specs = flavor["extra_specs"]
    parts = [specs.get("hw:cpu_%s" % k) for k in ("sockets", "cores", "threads")]
    if all(p is None for p in parts):
        flavor["topology"] = None
        return
    names = ("sockets", "cores", "threads")
    # A part left out is 1; one given as 0 is an error, not 1.
    sockets, cores, threads = (_int(1 if p is None else p, "hw:cpu_%s" % k, 1) for p, k in zip(parts, names, strict=True))
    if sockets * cores * threads != flavor["vcpus"]:
        raise ValidationError(
            "CPU topology %d sockets x %d cores x %d threads does not match %d vcpus"
            % (sockets, cores, threads, flavor["vcpus"]), step=STEP)
    flavor["topology"] = (sockets, cores, threads)


def _disk(disk, req):
    if not isinstance(disk, dict):
        raise ValidationError("each disk must be a dict, got %r" % (disk,), step=STEP)
    name = disk.get("name")
    if not isinstance(name, str) or not DISK_NAME_RE.match(name):
        raise ValidationError("disk name %r is not a Nova disk name (disk, disk.local, disk.swap, disk.config ...)" % (name,),
                              step=STEP)
    device = _choice(disk.get("device") or "disk", DISK_DEVICES, "disk device")
    default_bus = req.properties.get("hw_cdrom_bus", "ide") if device == "cdrom" else req.properties.get("hw_disk_bus", "virtio")
    bus = _choice(disk.get("bus") or default_bus, tuple(DISK_BUS_PREFIX), "disk bus")
    if device == "cdrom" and bus == "virtio":
        raise ValidationError("a cdrom cannot use the virtio bus (use ide, sata or scsi)", step=STEP)
    return {
        "name": name,
        "path": _inside(disk.get("path"), req.instances_path, "disk %s path" % name),
        "format": _choice(disk.get("format") or "qcow2", DISK_FORMATS, "disk format"),
        "device": device,
        "bus": bus,
    }


def _interface(nic, props):
    if not isinstance(nic, dict):
        raise ValidationError("each interface must be a dict, got %r" % (nic,), step=STEP)
    kind = _choice(nic.get("type") or "bridge", INTERFACE_TYPES, "interface type")
    mac = str(nic.get("mac") or "").lower()
    if not MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise ValidationError("interface MAC %r is not a unicast MAC address" % nic.get("mac"), step=STEP)
    target = nic.get("target_dev")
    if target is not None and not IFNAME_RE.match(str(target)):
        raise ValidationError("interface target_dev %r is not a valid interface name (max 15 characters)" % target, step=STEP)
    if kind == "ethernet" and not target:
        raise ValidationError("an ethernet interface needs target_dev (the tap device)", step=STEP)
    bridge = nic.get("source_bridge")
    if kind == "bridge" and (not bridge or not IFNAME_RE.match(str(bridge))):
        raise ValidationError("a bridge interface needs a valid source_bridge, got %r" % bridge, step=STEP)
    mtu = nic.get("mtu")
    return {
        "type": kind,
        "mac": mac,
        "target_dev": target,
        "source_bridge": bridge,
        "model": _choice(nic.get("model") or props.get("hw_vif_model", "virtio"), VIF_MODELS, "interface model"),
        "mtu": _int(mtu, "interface mtu", 68, 65535) if mtu not in (None, "") else None,
        "port_id": nic.get("port_id"),
    }


# ---------------------------------------------------------------------------------------------
# XML construction.


def _sub(parent, tag, text=None, **attrs):
    etree = _etree()
    element = etree.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        element.text = str(text)
    return element


def _metadata(domain, req):
    etree = _etree()
    ns = "{%s}" % METADATA_NS
    meta = _sub(domain, "metadata")
    inst = etree.SubElement(meta, ns + "instance", nsmap={METADATA_PREFIX: METADATA_NS})
    if req.name is not None:
        etree.SubElement(inst, ns + "name").text = str(req.name)
    flavor = etree.SubElement(inst, ns + "flavor", name=str(req.flavor.get("name") or ""))
    for tag, key in (("memory", "memory_mb"), ("disk", "root_gb"), ("swap", "swap"), ("ephemeral", "ephemeral_gb"),
                     ("vcpus", "vcpus")):
        etree.SubElement(flavor, ns + tag).text = str(req.flavor[key])
    if req.owner:
        owner = etree.SubElement(inst, ns + "owner")
        for kind in ("user", "project"):
            if req.owner.get(kind + "_id") or req.owner.get(kind + "_name"):
                element = etree.SubElement(owner, ns + kind)
                if req.owner.get(kind + "_id"):
                    element.set("uuid", req.owner[kind + "_id"])
                element.text = req.owner.get(kind + "_name", "")
    if req.image.get("id"):
        etree.SubElement(inst, ns + "root", type="image", uuid=str(req.image["id"]))


def _os(domain, req, host):
    props = req.properties
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch=host.arch, machine=host.machine)
    if props.get("hw_firmware_type") == "uefi":
        if host.efi_firmware:
            os_el.set("firmware", "efi")
        elif host.ovmf:
            _sub(os_el, "loader", host.ovmf[0], readonly="yes", type="pflash")
            _sub(os_el, "nvram", template=host.ovmf[1])
        else:
            raise DomainError("image asks for hw_firmware_type uefi but no OVMF firmware is installed on this host "
                              "(install the ovmf package)", step=STEP)
    if req.kernel:
        _sub(os_el, "kernel", req.kernel)
        if req.ramdisk:
            _sub(os_el, "initrd", req.ramdisk)
        _sub(os_el, "cmdline", props.get("os_command_line") or DEFAULT_COMMAND_LINE)
    else:
        _sub(os_el, "boot", dev="hd")


def _cpu(domain, req):
    mode = req.cpu_mode
    if mode == "auto":
        # host-passthrough aborts QEMU on some nested hosts (LAB.md); TCG emulates its default model.
        mode = "host-model" if req.virt_type == "kvm" else "none"
    topology, cells = req.flavor.get("topology"), req.flavor.get("numa_cells")
    if mode == "none" and not topology and not cells:
        return
    cpu = _sub(domain, "cpu")
    if mode == "custom":
        cpu.set("mode", "custom")
        cpu.set("match", "exact")
        _sub(cpu, "model", req.cpu_model, fallback="allow")
    elif mode != "none":
        cpu.set("mode", mode)
    if topology:
        _sub(cpu, "topology", sockets=topology[0], dies=1, cores=topology[1], threads=topology[2])
    if cells:
        # The guest's NUMA nodes (hw:numa_nodes), in KiB as libvirt reports them back.
        numa_element = _sub(cpu, "numa")
        for index, (first, last, memory_mb) in enumerate(cells):
            cpus = str(first) if first == last else "%d-%d" % (first, last)  # as libvirt writes a CPU set back
            _sub(numa_element, "cell", id=index, cpus=cpus, memory=memory_mb * 1024, unit="KiB")


def _disks(devices, req, host):
    counters = {}
    for disk in req.disks:
        prefix = DISK_BUS_PREFIX[disk["bus"]]
        index = counters.get(prefix, 0)
        counters[prefix] = index + 1
        if prefix == "hd" and index >= IDE_MAX:
            raise ValidationError("the ide bus takes at most %d disks" % IDE_MAX, step=STEP)
        if index >= 26:
            raise ValidationError("too many disks on bus %s" % disk["bus"], step=STEP)
        element = _sub(devices, "disk", type="file", device=disk["device"])
        _sub(element, "driver", name="qemu", type=disk["format"], cache="none" if host.direct_io else "writeback")
        _sub(element, "source", file=disk["path"])
        _sub(element, "target", dev=prefix + chr(ord("a") + index), bus=disk["bus"])
        if disk["device"] == "cdrom":
            _sub(element, "readonly")
    if any(d["bus"] == "scsi" for d in req.disks):
        _sub(devices, "controller", type="scsi", index=0, model="virtio-scsi")


def _interfaces(devices, req, host):
    for nic in req.interfaces:
        element = _sub(devices, "interface", type=nic["type"])
        _sub(element, "mac", address=nic["mac"])
        if nic["type"] == "bridge":
            _sub(element, "source", bridge=nic["source_bridge"])
        if nic["target_dev"]:
            # ethernet: the tap was made (and is firewalled) by instance_network; libvirt must not recreate it.
            _sub(element, "target", dev=nic["target_dev"], managed="no" if nic["type"] == "ethernet" else None)
        _sub(element, "model", type=nic["model"])
        if nic["model"] == "virtio" and not host.vhost_net:
            _sub(element, "driver", name="qemu")
        if nic["mtu"]:
            _sub(element, "mtu", size=nic["mtu"])


def build(req, host):
    """The ``<domain>`` element for a validated request."""
    domain = _etree().Element("domain", type=req.virt_type)
    _sub(domain, "name", paths.domain_name(req.instance_uuid))
    _sub(domain, "uuid", req.instance_uuid)
    _metadata(domain, req)
    memory_kib = req.flavor["memory_mb"] * 1024  # KiB: the unit libvirt reports back
    _sub(domain, "memory", memory_kib, unit="KiB")
    _sub(domain, "currentMemory", memory_kib, unit="KiB")
    _sub(domain, "vcpu", req.flavor["vcpus"], placement="static")
    _os(domain, req, host)
    features = _sub(domain, "features")
    _sub(features, "acpi")  # guests need ACPI to power off
    _sub(features, "apic")
    _cpu(domain, req)
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    _disks(devices, req, host)
    _interfaces(devices, req, host)
    console_log = os.path.join(req.instance_dir, "console.log")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=console_log)
    _sub(serial, "target", port=0)
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=console_log)
    _sub(console, "target", type="serial", port=0)
    if req.vnc:
        graphics = _sub(devices, "graphics", type="vnc", autoport="yes", listen=req.vnc_listen)
        _sub(graphics, "listen", type="address", address=req.vnc_listen)
    return domain


def render(domain):
    """Deterministic bytes for a ``<domain>`` element (libvirt.xml and the module's ``xml``)."""
    return _etree().tostring(domain, pretty_print=True, encoding="utf-8")


def generate(req, host, volume_disks=()):
    """Validated request + host -> XML bytes (re-parsed with the safe parser as a last guard).
    ``volume_disks``: ``<disk>`` elements of attached volumes to keep (see ``attached_volume_disks``)."""
    domain = build(validate_request(req), host)
    if volume_disks:
        _keep_volume_disks(domain, volume_disks)
    xml = render(domain)
    parse(xml, step=STEP)
    return xml


def attached_volume_disks(req, old_xml):
    """The ``ua-volume-*`` disks of the current ``libvirt.xml`` whose volume the journal lists as attached.

    volume_attach adds a volume's ``<disk>`` to the domain and to ``libvirt.xml``; a re-run of this step
    (the server role run again) must keep it, or the domain step would redefine the domain without the
    volume and volume_attach would attach it again. Both have to agree: a disk the journal does not know
    is not ours to keep."""
    if not old_xml:
        return []
    from ansible_collections.nimbus.compute.plugins.module_utils._volume import xml as volume_xml  # imports us
    from ansible_collections.nimbus.compute.plugins.module_utils._volume.errors import STEP as VOLUME_STEP

    volumes = Journal(req.instance_dir, step=STEP).step(VOLUME_STEP).get("volumes") or {}
    if not volumes:
        return []
    try:
        root = parse(old_xml, step=STEP)
    except DomainError as exc:
        raise DomainError("%s (in %s, which holds the attached volumes %s)"
                          % (exc.msg, os.path.join(req.instance_dir, "libvirt.xml"), ", ".join(sorted(volumes))), step=STEP)
    aliases = {volume_xml.alias(volume_id) for volume_id in volumes}
    return [disk for disk in root.iterfind("devices/disk") if disk.find("alias") is not None
            and disk.find("alias").get("name") in aliases]


def _keep_volume_disks(domain, disks):
    from ansible_collections.nimbus.compute.plugins.module_utils._volume import xml as volume_xml  # imports us

    used = {t.get("dev") for t in domain.iterfind("devices/disk/target")}
    for disk in disks:  # in the file's order, which is the order they were inserted in
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev in used:
            raise ValidationError("attached volume %s is %s, which the generated disks now use too; detach it (volume_attach "
                                  "state=absent) before changing the disks" % (disk.findtext("serial"), dev), step=STEP)
        used.add(dev)
        volume_xml.insert_disk(domain, copy.deepcopy(disk))


REQUEST_FIELDS = ("instance_uuid", "instances_path", "flavor", "name", "image", "disks", "interfaces", "kernel", "ramdisk",
                  "owner", "vnc", "vnc_listen", "cpu_mode", "cpu_model")


def write_domain_xml(params, check_mode=False):
    """The ``domain_xml`` step: validate, probe the host, build, validate, write libvirt.xml if it changed."""
    return write_checked(check_params(params), check_mode=check_mode)


@dataclasses.dataclass
class CheckedDomain:
    """A validated request, its libvirt URI and why its virt_type was chosen; nothing probed or written yet."""

    req: DomainRequest
    uri: str
    virt_type_reason: str
    validate: bool = True  # with virt-xml-validate, when installed

    def probe_key(self):
        """Requests with the same key get the same host probe (instance_prepare probes once per key)."""
        return self.req.virt_type, self.req.properties.get("hw_machine_type"), self.uri


def check_params(params):
    """The module's options checked (raises ValidationError); nothing on the host is asked or changed."""
    virt_type, reason = detect_virt_type(params.get("virt_type") or "auto")
    req = validate_request(DomainRequest(virt_type=virt_type, **{k: params.get(k) for k in REQUEST_FIELDS if k in params}))
    uri = validate_libvirt_uri(given(params, "libvirt_uri", LIBVIRT_URI_DEFAULT), STEP)
    return CheckedDomain(req, uri, reason, validate=bool(params.get("validate", True)))


def probe_for(checked, check_mode=False):
    """The host probe for a checked request (a libvirt connection and an O_DIRECT test in its disks' dir)."""
    req = checked.req
    probe_dir = os.path.dirname(req.disks[0]["path"]) if req.disks else req.instance_dir
    if check_mode and not os.path.isdir(probe_dir):
        # The O_DIRECT probe writes a file; check mode does not create anything outside a dir we own (a
        # request checked before the server exists would probe the instances_path or its parents).
        probe_dir = None
    with Connection(checked.uri, step=STEP) as conn:
        return probe_host(conn, req.virt_type, machine=req.properties.get("hw_machine_type"), disk_dir=probe_dir)


def write_checked(checked, check_mode=False, host=None):
    """Probe the host (unless ``host`` is given), build, validate, write libvirt.xml if it changed."""
    req = checked.req
    virt_type, reason = req.virt_type, checked.virt_type_reason
    instances_path = req.instances_path
    path = os.path.join(req.instance_dir, "libvirt.xml")
    exists = os.path.isdir(req.instance_dir)
    if not exists and not check_mode:
        # Before the host probe, whose O_DIRECT test file would otherwise land in a parent directory.
        raise DomainError("instance directory %s does not exist (run instance_claim first)" % req.instance_dir, step=STEP)
    if host is None:
        host = probe_for(checked, check_mode)
    if exists:
        paths.require_inside(path, instances_path, step=STEP)
    old = read_bytes(path) if exists else None
    xml = generate(req, host, attached_volume_disks(req, old))
    validated = validate_xml(xml) if checked.validate else False
    changed = old != xml
    if changed and not check_mode:
        write_atomic(path, xml, mode=0o600)
        if old is None:
            Journal(req.instance_dir).record(STEP, created=[path])
    text = xml.decode("utf-8")
    return {
        "changed": changed,
        "xml": text,
        "path": path,
        "virt_type": virt_type,
        "virt_type_reason": reason,
        "machine_type": host.machine,
        "disk_cache": "none" if host.direct_io else "writeback",
        "validated": validated,
        "diff": {"before": (old or b"").decode("utf-8", "replace"), "after": text, "before_header": path, "after_header": path},
    }
