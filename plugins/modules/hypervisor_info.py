#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: hypervisor_info
short_description: Gather a hypervisor's state for the scheduler, as Nova's HostState
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Reads libvirt (C(getInfo), C(getCapabilities), C(getFreeMemory), every defined domain) and the filesystem that holds
    O(instances_path), and returns the fact C(nimbus_hypervisor) with Nova's HostState field names, which the
    C(nimbus.compute.schedule) lookup reads for every host of its inventory group.
  - Accounting follows Nova's resource tracker - RAM and vCPUs in use are what the domains are given plus what is
    reserved for the host; free disk is the filesystem's available space minus O(reserved_host_disk_mb).
  - C(num_io_ops) counts instance directories that have a build journal but no domain yet (builds under way).
  - Live figures go to C(metrics) (C(memory.free_mb), C(disk.free_mb)) for the MetricsWeigher.
  - C(service.last_seen_up) is the time of gathering. The schedule lookup's ComputeFilter drops a host whose
    C(last_seen_up) is older than its C(service_down_time) option (60 s, Nova's default), so gather shortly before
    scheduling or raise C(service_down_time); when that removes every host, the lookup's error says the facts are stale
    and how old they are.
  - C(failed_builds) is always 0 - nothing on the host records a failed build (the server role's rollback removes the
    instance directory with its journal and reports the failure to the play). The BuildFailureWeigher acts on values
    given another way, for example the lookup's C(hosts) option or a C(nimbus_hypervisor) host variable.
  - Read-only; never changes anything.
extends_documentation_fragment:
  - nimbus.compute.connection
  - nimbus.compute.connection.instances_path
options:
  reserved_host_memory_mb:
    description: RAM kept for the host itself (Nova's reserved_host_memory_mb).
    type: int
    default: 512
  reserved_host_disk_mb:
    description: Disk kept for the host itself (Nova's reserved_host_disk_mb).
    type: int
    default: 0
  reserved_host_cpus:
    description: vCPUs kept for the host itself (Nova's reserved_host_cpus), counted as used.
    type: int
    default: 0
  cpu_allocation_ratio:
    description: vCPU overcommit ratio (Nova's initial value). Above 0, as M(nimbus.compute.instance_claim) requires.
    type: float
    default: 4.0
  ram_allocation_ratio:
    description: RAM overcommit ratio. Above 0.
    type: float
    default: 1.0
  disk_allocation_ratio:
    description: Disk overcommit ratio. Above 0.
    type: float
    default: 1.0
  availability_zone:
    description: The host's availability zone.
    type: str
    default: nova
  aggregates:
    description:
      - Host aggregates the host belongs to, each C({name, metadata}). Metadata feeds the aggregate filters
        (C(filter_tenant_id), extra specs, C(availability_zone)) and per-aggregate weight multipliers.
    type: list
    elements: dict
    default: []
  traits:
    description: Extra traits (for example C(CUSTOM_SSD)); CPU flag traits (C(HW_CPU_X86_AVX2) ...) are added.
    type: list
    elements: str
    default: []
  disabled:
    description: Report the compute service as disabled, so ComputeFilter schedules nothing here.
    type: bool
    default: false
  pci_device_spec:
    description:
      - PCI devices offered for passthrough (Nova's C([pci] device_spec)), each C({vendor_id, product_id}) in hex without
        C(0x); a missing key matches any. Matching host devices are counted into C(pci_stats) pools for the PCIWeigher.
    type: list
    elements: dict
    default: []
notes:
  - Set the options per host in the inventory (host or group vars) to give each hypervisor its own ratios, zone and
    aggregates.
requirements:
  - libvirt-python on the hypervisor
"""

EXAMPLES = r"""
- name: Gather scheduler facts from every hypervisor
  nimbus.compute.hypervisor_info:
    reserved_host_memory_mb: 2048
    cpu_allocation_ratio: "{{ hv_cpu_ratio | default(4.0) }}"
    availability_zone: "{{ hv_zone | default('nova') }}"
    aggregates: "{{ hv_aggregates | default([]) }}"
  delegate_facts: false

- name: Then choose a host on the controller
  ansible.builtin.set_fact:
    placement: "{{ query('nimbus.compute.schedule', flavor=flavor) | first }}"
  run_once: true
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: success
  type: dict
  contains:
    nimbus_hypervisor:
      description:
        - The host state - C(hostname), C(total_usable_ram_mb), C(free_ram_mb), C(total_usable_disk_gb), C(free_disk_mb),
          C(vcpus_total), C(vcpus_used), the three allocation ratios, C(availability_zone), C(aggregates),
          C(instances) (domain UUIDs), C(num_instances), C(num_io_ops), C(hypervisor_type), C(hypervisor_version),
          C(supported_instances) (C([arch, hv_type, vm_mode])), C(traits), C(failed_builds), C(numa_topology),
          C(metrics), C(pci_stats), C(cpu_info) and C(service) (C(disabled), C(forced_down), C(last_seen_up)).
      returned: success
      type: dict
      sample:
        hostname: hv1
        total_usable_ram_mb: 16474
        free_ram_mb: 15962
        total_usable_disk_gb: 251
        free_disk_mb: 68960
        vcpus_total: 2
        vcpus_used: 0
        hypervisor_type: QEMU
        hypervisor_version: 7002022
        supported_instances: [[x86_64, qemu, hvm], [x86_64, kvm, hvm]]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import CONNECTION_ARGS, INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._hypervisor.facts import gather

ARGUMENT_SPEC = spec(
    CONNECTION_ARGS,
    INSTANCES_PATH_ARGS,
    reserved_host_memory_mb=dict(type="int", default=512),
    reserved_host_disk_mb=dict(type="int", default=0),
    reserved_host_cpus=dict(type="int", default=0),
    cpu_allocation_ratio=dict(type="float", default=4.0),
    ram_allocation_ratio=dict(type="float", default=1.0),
    disk_allocation_ratio=dict(type="float", default=1.0),
    availability_zone=dict(type="str", default="nova"),
    aggregates=dict(type="list", elements="dict", default=[]),
    traits=dict(type="list", elements="str", default=[]),
    disabled=dict(type="bool", default=False),
    pci_device_spec=dict(type="list", elements="dict", default=[]),
)


def main():
    module = AnsibleModule(ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        facts = gather(p["libvirt_uri"], p["instances_path"],
                       **{k: v for k, v in p.items() if k not in ("libvirt_uri", "instances_path")})
    except (NimbusError, OSError) as err:
        # An unreadable host is worth trying elsewhere: reschedule on OS errors.
        module.fail_json(**failure(err, "hypervisor_info", retryable=True))
    module.exit_json(changed=False, ansible_facts={"nimbus_hypervisor": facts})


if __name__ == "__main__":
    main()
