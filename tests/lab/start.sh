#!/usr/bin/env bash
# Brings up libvirt + QEMU for the lab without systemd (with systemd where it is PID 1), only when
# not already answering; makes /dev/kvm usable by the QEMU user (LAB.md trap); reports what it found.
set -euo pipefail
URI=qemu:///system

answering() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }

if [ "$(id -u)" -ne 0 ]; then
  echo "nimbus lab: must run as root to start libvirtd" >&2; exit 2
fi
# libvirt re-probes QEMU on every start when /dev/kvm is root-only (48 s vs 0.44 s, LAB.md).
if [ -e /dev/kvm ]; then chmod 0666 /dev/kvm || true; fi

# Security groups filter bridged traffic through br_netfilter (docs/network.md).
for key in net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables; do
  [ -e "/proc/sys/${key//.//}" ] && sysctl -qw "$key=1" || true
done

if ! answering; then
  if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
    systemctl start virtlogd.socket libvirtd.socket libvirtd.service
  else
    # By pid file, not by name: the fleet's own libvirtd/virtlogd (tests/lab/fleet.py) share the names.
    running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
    running /run/virtlogd.pid || virtlogd -d
    if ! running /run/libvirtd.pid; then
      rm -f /run/libvirt/libvirt-sock /run/libvirtd.pid
      # Under a subreaper: where PID 1 reaps slowly, each domain destroy would wait for it (LAB.md).
      python3 "$(dirname "$0")/subreaper.py" libvirtd -d
    fi
  fi
  for _ in $(seq 1 60); do answering && break; sleep 0.5; done
fi
if ! answering; then
  echo "nimbus lab: libvirtd did not answer on $URI" >&2; exit 1
fi
vt=$(grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ] && echo kvm || echo qemu)
echo "nimbus lab: libvirt $(virsh -c "$URI" version --daemon | awk '/daemon/ {print $NF}') answering on $URI; virt_type auto -> $vt"
