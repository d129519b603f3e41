"""Builds the embedded default guest image from Debian packages (LAB.md), cached in .cache/guest/.

Three Glance-style images, like Nova's AMI/AKI/ARI triple for direct kernel boot:
  root.qcow2   the root disk (qcow2, 16 MiB virtual, a marker in its first sector)
  vmlinux      the kernel (disk_format aki): the linux-image .deb's vmlinuz, extracted, never
               installed, and decompressed to the ELF image QEMU boots directly (PVH entry point)
  initrd.img   a busybox initramfs (disk_format ari) whose /init reports what the guest sees

The guest prints on its serial console (ttyS0):
  nimbus-guest: up
  nimbus-guest: root-label <marker>          first bytes of vda when they carry our marker
  nimbus-guest: disk <vdX> bytes=<n>         every virtio disk
  nimbus-guest: config-drive uuid=<uuid>     when a config-2 ISO holds openstack/latest/meta_data.json
  nimbus-guest: nic <ifname> mac=<mac> ip=<cidr>
  nimbus-guest: user-data: <line>            output of user_data when it starts with #!
  nimbus-guest: ready
and powers off only when its kernel command line has ``nimbus.poweroff``; otherwise it keeps
running and powers off on an ACPI power-button press (``virsh shutdown``).

Under TCG the compressed kernel's own xz decompressor costs a booting guest about 4 of its 8
CPU-seconds; QEMU boots the decompressed ELF through its PVH entry point instead (CONFIG_PVH,
on in Debian's kernels), so a guest reaches `ready` on half the CPU. vmlinuz stays beside it (for
UEFI, whose firmware needs the bzImage's EFI stub). A kernel without a PVH note keeps vmlinuz.

Writes .cache/guest/images.json: the image records (id, src, disk_format, checksum, properties)
that the demo and the tests pass to ``image_cache`` like any other image.
Re-running is instant when the outputs exist for the same kernel package and init script.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, ".cache", "guest")
ROOT_MARKER = b"NIMBUS-ROOT-DISK v1"
ROOT_VIRTUAL_SIZE = 16 << 20

# insmod order: dependencies first (the extracted tree has no modules.dep).
MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/cdrom/cdrom.ko",
    "fs/isofs/isofs.ko",
    "drivers/acpi/button.ko",
    "drivers/input/evdev.ko",
]

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "nimbus-guest: $*"; }
for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m" 2>/dev/null; done
say up
# Graceful shutdown: ACPI power button (virsh shutdown) -> poweroff.
# busybox acpid runs <conf dir>/PWRF/00000080 for the power-button event.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "nimbus-guest: acpi power button"\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
label=$(head -c 19 /dev/vda 2>/dev/null)
case "$label" in NIMBUS-ROOT-DISK*) say "root-label $label";; esac
for d in /sys/block/vd* /sys/block/sd*; do
  [ -e "$d" ] || continue
  say "disk ${d##*/} bytes=$(( $(cat "$d/size") * 512 ))"
done
mkdir -p /mnt/config
cfg=""
for d in /sys/block/vd* /sys/block/sd* /sys/block/sr*; do
  [ -e "$d" ] || continue
  if mount -t iso9660 -o ro "/dev/${d##*/}" /mnt/config 2>/dev/null; then
    if [ -f /mnt/config/openstack/latest/meta_data.json ]; then cfg=/mnt/config/openstack/latest; break; fi
    umount /mnt/config
  fi
done
if [ -n "$cfg" ]; then
  uuid=$(tr ',{}' '\n\n\n' < "$cfg/meta_data.json" | sed -n 's/^ *"uuid": *"\([^"]*\)".*/\1/p' | head -n 1)
  say "config-drive uuid=$uuid"
fi
ip link set lo up
# network_data.json (Nova's format): links give MACs, networks give static IPv4 per link.
if [ -n "$cfg" ] && [ -f "$cfg/network_data.json" ]; then
  tr -d '\n' < "$cfg/network_data.json" | tr '{}[]' '\n\n\n\n' | awk -F, '
    function val(k,   i, kv) {
      for (i = 1; i <= NF; i++) { if ($i ~ "\"" k "\" *:") { kv = $i; sub(/^[^:]*: */, "", kv); gsub(/"| /, "", kv); return kv } }
      return "" }
    { mac = val("ethernet_mac_address"); id = val("id")
      if (mac != "") { macs[id] = tolower(mac); next }
      ip = val("ip_address"); if (ip != "" && ip !~ /:/) { n = split(val("netmask"), o, "."); p = 0
        for (j = 1; j <= n; j++) { x = o[j] + 0; while (x > 0) { p += x % 2; x = int(x / 2) } }
        print val("link"), ip "/" p } }
    END { for (k in macs) print "MAC", k, macs[k] }' > /tmp/net.plan
  for nic in /sys/class/net/*; do
    ifname=${nic##*/}; [ "$ifname" = lo ] && continue
    mac=$(cat "$nic/address")
    link=$(awk -v m="$mac" '$1 == "MAC" && $3 == m {print $2}' /tmp/net.plan)
    [ -n "$link" ] || continue
    ip link set "$ifname" up
    for cidr in $(awk -v l="$link" '$1 == l {print $2}' /tmp/net.plan); do ip addr add "$cidr" dev "$ifname"; done
  done
fi
for nic in /sys/class/net/*; do
  ifname=${nic##*/}; [ "$ifname" = lo ] && continue
  addr=$(ip -4 -o addr show dev "$ifname" | awk '{print $4}' | head -n 1)
  say "nic $ifname mac=$(cat "$nic/address") ip=${addr:-none}"
done
if [ -n "$cfg" ] && [ "$(head -c 2 "$cfg/user_data" 2>/dev/null)" = "#!" ]; then
  cp "$cfg/user_data" /tmp/user_data; chmod +x /tmp/user_data
  /tmp/user_data 2>&1 | while IFS= read -r line; do say "user-data: $line"; done
fi
# acpid opens /dev/input/event* once at start: start it late, when evdev has made them.
mkdir -p /var/log; acpid -f -c /etc/acpi </dev/null >/dev/console 2>&1 &
say ready
case " $(cat /proc/cmdline) " in *" nimbus.poweroff "*) say poweroff; sync; poweroff -f;; esac
while :; do sleep 3600; done
"""


def run(argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def kernel_package():
    """The versioned package linux-image-amd64 depends on (e.g. linux-image-6.1.0-56-amd64)."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", out)
    if not match:
        cached = sorted(glob.glob(os.path.join(OUT, "debs", "linux-image-*.deb")))
        if cached:
            return os.path.basename(cached[-1]).split("_")[0]
        sys.exit("guest image: cannot find the linux-image package (run apt-get update?)")
    return match.group(1)


def fetch_kernel_deb(package):
    debs = os.path.join(OUT, "debs")
    os.makedirs(debs, exist_ok=True)
    found = glob.glob(os.path.join(debs, package + "_*.deb"))
    if not found:
        # apt's sandbox user cannot write here; download as root into a temp dir we own.
        run(["apt-get", "download", "-q", package], cwd=debs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = glob.glob(os.path.join(debs, package + "_*.deb"))
    if not found:
        sys.exit("guest image: apt-get download %s gave no file" % package)
    return found[0]


def extract_kernel_and_modules(deb, workdir):
    """Only the kernel and the few modules we need, straight from the .deb's data tar."""
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True).stdout
    kernel = None
    modules = {}
    wanted = {m: None for m in MODULES}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar:
            name = member.name.lstrip("./")
            if re.fullmatch(r"boot/vmlinuz-.*", name):
                kernel = tar.extractfile(member).read()
            else:
                for rel in wanted:
                    if name.endswith("/kernel/" + rel):
                        modules[rel] = tar.extractfile(member).read()
    missing = [m for m in MODULES if m not in modules]
    if kernel is None or missing:
        sys.exit("guest image: %s lacks %s" % (deb, "the kernel" if kernel is None else ", ".join(missing)))
    return kernel, modules


# Linux boot protocol (Documentation/arch/x86/boot.rst): where the compressed kernel lies in a bzImage.
SETUP_SECTS_AT = 0x1F1
HEADER_MAGIC_AT, HEADER_MAGIC = 0x202, b"HdrS"
PAYLOAD_AT = 0x248  # payload_offset, payload_length (protocol 2.08+), from the protected-mode code
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU looks for in an ELF kernel
PT_NOTE = 4


def _decompress(payload):
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    return None  # zstd, lz4 ...: not in the standard library


def has_pvh_note(elf):
    """True when a 64-bit little-endian ELF has Xen's PHYS32_ENTRY note (the PVH entry)."""
    if elf[:6] != b"\x7fELF\x02\x01":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        p_type, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + index * phentsize)
        if p_type != PT_NOTE:
            continue
        at, end = offset, offset + filesz
        while at + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, at)
            name = elf[at + 12:at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_kernel(bzimage):
    """The bzImage's decompressed ELF kernel when QEMU can boot it through PVH, else None."""
    if len(bzimage) < 0x250 or bzimage[HEADER_MAGIC_AT:HEADER_MAGIC_AT + 4] != HEADER_MAGIC:
        return None
    setup_sects = bzimage[SETUP_SECTS_AT] or 4
    offset, length = struct.unpack_from("<II", bzimage, PAYLOAD_AT)
    start = (setup_sects + 1) * 512 + offset
    try:
        elf = _decompress(bzimage[start:start + length])
    except (lzma.LZMAError, zlib.error):
        return None
    return elf if elf and has_pvh_note(elf) else None


def cpio_newc(entries):
    """A newc cpio archive from (path, mode, data-or-None-for-dir) tuples; no external cpio needed."""
    out = io.BytesIO()
    ino = 1
    for path, mode, content in [*entries, ("TRAILER!!!", 0, b"")]:
        data = content or b""
        name = path.encode() + b"\0"
        header = "070701" + "".join(
            "%08X" % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0)
        )
        out.write(header.encode() + name)
        out.write(b"\0" * ((4 - (110 + len(name)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
        ino += 1
    return out.getvalue()


def build_initrd(modules):
    with open("/bin/busybox", "rb") as handle:
        busybox = handle.read()
    order = "\n".join(os.path.basename(m) for m in MODULES) + "\n"
    entries = [(d, 0o40755, None) for d in ("bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "sys", "tmp")]
    entries += [
        ("bin/busybox", 0o100755, busybox),
        ("init", 0o100755, INIT.encode()),
        ("etc/modules.order", 0o100644, order.encode()),
    ]
    entries += [("lib/modules/" + os.path.basename(m), 0o100644, modules[m]) for m in MODULES]
    return gzip.compress(cpio_newc(entries), compresslevel=6, mtime=0)


def build_root_disk(path):
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        raw = os.path.join(tmp, "root.raw")
        with open(raw, "wb") as handle:
            handle.write(ROOT_MARKER.ljust(512, b"\0"))
            handle.truncate(ROOT_VIRTUAL_SIZE)
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path + ".tmp"])
        os.replace(path + ".tmp", path)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path, data):
    with open(path + ".tmp", "wb") as handle:
        handle.write(data)
    os.replace(path + ".tmp", path)


# Part of the build id: a change in how the kernel is packed must change the image ids, or a _base
# cached from the old kernel file would be reused under the same id.
KERNEL_PACKING = "pvh-elf-1"


def _build_id(package):
    return hashlib.sha256((package + INIT + "".join(MODULES) + KERNEL_PACKING).encode()).hexdigest()[:12]


def _cached_package(stamp, paths):
    """The kernel package of the cached build when its files are all there and the guest's init and
    modules are unchanged; None otherwise. A newer kernel in apt's lists alone does not rebuild (the
    image ids, and so a running demo server, stay the same); --force does."""
    try:
        with open(stamp, encoding="utf-8") as handle:
            build_id, package = handle.read().split()
    except (OSError, ValueError):
        return None
    fresh = build_id == _build_id(package) and all(map(os.path.exists, paths.values()))
    return package if fresh else None


def build(force=False):
    os.makedirs(OUT, exist_ok=True)
    paths = {name: os.path.join(OUT, name) for name in ("vmlinuz", "initrd.img", "root.qcow2")}
    stamp = os.path.join(OUT, "build-id")
    vmlinux = os.path.join(OUT, "vmlinux")  # written only for a kernel QEMU can boot through PVH
    package = None if force else _cached_package(stamp, paths)
    if package is None:
        package = kernel_package()
        build_id = _build_id(package)
        deb = fetch_kernel_deb(package)
        with tempfile.TemporaryDirectory(dir=OUT) as work:
            kernel, modules = extract_kernel_and_modules(deb, work)
        write_atomic(paths["vmlinuz"], kernel)
        elf = pvh_kernel(kernel)
        if elf is not None:
            write_atomic(vmlinux, elf)
        elif os.path.exists(vmlinux):
            os.unlink(vmlinux)  # from an earlier kernel: this one boots from vmlinuz
        write_atomic(paths["initrd.img"], build_initrd(modules))
        build_root_disk(paths["root.qcow2"])
        write_atomic(stamp, ("%s %s\n" % (build_id, package)).encode())
    if os.path.exists(vmlinux):
        paths["vmlinux"] = vmlinux
    return records(paths, _build_id(package), package)


def records(paths, build_id, package):
    """Image records as the demo, the role and the tests pass them to image_cache."""
    kernel_file = "vmlinux" if "vmlinux" in paths else "vmlinuz"  # the PVH ELF when the build made one
    files = {"root": "root.qcow2", "kernel": kernel_file, "ramdisk": "initrd.img"}

    def image(name, fmt, **props):
        # The PVH kernel gets its own id: a _base filled from vmlinuz must never serve vmlinux's id.
        kind = name + ("-pvh" if files[name] == "vmlinux" else "")
        return {
            "id": "nimbus-tiny-%s-%s" % (kind, build_id),
            "name": "nimbus tiny guest %s" % name,
            "src": "file://" + paths[files[name]],
            "disk_format": fmt,
            "checksum": "sha256:" + sha256(paths[files[name]]),
            "properties": props,
        }

    kernel = image("kernel", "aki")
    ramdisk = image("ramdisk", "ari")
    root = image(
        "root",
        "qcow2",
        kernel_id=kernel["id"],
        ramdisk_id=ramdisk["id"],
        os_command_line="console=ttyS0 panic=-1",
        hw_disk_bus="virtio",
        hw_vif_model="virtio",
        hw_architecture="x86_64",
    )
    result = {
        "nimbus_guest_build": {"id": build_id, "kernel_package": package},
        "nimbus_guest_image": root,
        "nimbus_guest_kernel": kernel,
        "nimbus_guest_ramdisk": ramdisk,
        "nimbus_guest_files": paths,
    }
    write_atomic(os.path.join(OUT, "images.json"), (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--print-json", action="store_true", help="print the image records")
    args = parser.parse_args()
    if not shutil.which("qemu-img") or not os.path.exists("/bin/busybox"):
        sys.exit("guest image: needs qemu-img and busybox-static (run: bash tests/lab/install.sh)")
    result = build(force=args.force)
    if args.print_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        files = result["nimbus_guest_files"].values()
        sizes = ", ".join("%s %.1f MB" % (os.path.basename(p), os.path.getsize(p) / 1e6) for p in files)
        info = result["nimbus_guest_build"]
        print("nimbus guest image %s (%s): %s" % (info["id"], info["kernel_package"], sizes))


if __name__ == "__main__":
    main()
