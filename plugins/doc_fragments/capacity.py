# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations


class ModuleDocFragment:
    # Mirrors CAPACITY_ARGS in module_utils/_instance/claim.py: the claim's capacity rules (Nova's names and defaults).
    DOCUMENTATION = r"""
options:
  ram_allocation_ratio:
    description: Virtual RAM to physical RAM ratio.
    type: float
    default: 1.0
  disk_allocation_ratio:
    description: Virtual disk to physical disk ratio.
    type: float
    default: 1.0
  cpu_allocation_ratio:
    description: Virtual CPU to physical CPU ratio.
    type: float
    default: 4.0
  reserved_host_memory_mb:
    description: RAM kept for the host, in MiB.
    type: int
    default: 512
  reserved_host_disk_mb:
    description: Disk kept for the host, in MiB.
    type: int
    default: 0
  reserved_host_cpus:
    description: vCPUs kept for the host.
    type: int
    default: 0
  total_memory_mb:
    description: Host RAM in MiB. Read from libvirt C(getInfo) when not given.
    type: int
  total_disk_gb:
    description: Host disk in GiB. The size of the file system holding O(instances_path) when not given.
    type: int
  total_vcpus:
    description: Host CPUs. Read from libvirt C(getInfo) when not given.
    type: int
"""
