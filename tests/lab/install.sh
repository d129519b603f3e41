#!/usr/bin/env bash
# Installs the Debian packages the collection and its tests need. Idempotent and quick when
# everything is there already (no apt-get run at all). Stops with a clear message where it cannot work.
set -euo pipefail

PACKAGES=(
  # libvirt + QEMU (LAB.md)
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc python3-dev python3-venv
  # the lab hypervisors run the modules on the system Python, as the hypervisor role sets up a real host
  python3-libvirt python3-lxml
  qemu-system-x86 qemu-utils qemu-block-extra
  # the embedded guest image: kernel from linux-image, busybox initramfs
  busybox-static cpio gzip
  # config drive (ISO 9660)
  xorriso e2fsprogs util-linux
  # networking and security groups
  iproute2 nftables bridge-utils
  # volumes: iSCSI target + initiator, NBD export
  tgt open-iscsi
  # XML validation against libvirt's schema ships in libvirt-clients (virt-xml-validate) + xmllint
  libxml2-utils curl openssl make git rsync
)

if [ "$(id -u)" -ne 0 ]; then
  echo "nimbus lab: must run as root (it installs packages and starts libvirtd); try: sudo make demo (or sudo make test)" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "nimbus lab: needs a Debian-family system with apt-get (Debian 12 is what we test on)" >&2
  exit 2
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "nimbus lab: all ${#PACKAGES[@]} Debian packages present"
  exit 0
fi
echo "nimbus lab: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "nimbus lab: installed ${#missing[@]} packages"
