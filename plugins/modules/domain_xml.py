#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: domain_xml
short_description: Build a server's libvirt domain XML and write it to C(<instances_path>/<uuid>/libvirt.xml)
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Builds the domain XML with lxml from the flavor, the image properties and the host's libvirt domain capabilities,
    the way Nova's libvirt driver does, and writes it atomically to C(<instances_path>/<instance_uuid>/libvirt.xml).
  - The domain is named C(instance-<instance_uuid>); the display name, flavor, owner and image id only go into
    C(<metadata>) under the C(nimbus:instance) namespace.
  - Disks get virtio (or the image property C(hw_disk_bus)) targets C(vda), C(vdb) ... in the order given, the serial console
    is logged to C(<instances_path>/<instance_uuid>/console.log), and ACPI is always on so that guests can power off.
  - Disk cache is C(none) where the instance directory supports O_DIRECT, C(writeback) otherwise (tmpfs).
  - The result is validated with C(virt-xml-validate) when it is installed. Nothing is written when validation fails.
  - The output is deterministic, so running twice with the same input reports C(changed=false).
extends_documentation_fragment:
  - nimbus.compute.connection
  - nimbus.compute.connection.instances_path
options:
  instance_uuid:
    description: UUID of the server; names the domain and the instance directory.
    type: str
    required: true
  name:
    description: Display name of the server (metadata only).
    type: str
  flavor:
    description:
      - The flavor, with at least C(vcpus) (>= 1) and C(memory_mb) (>= 16).
      - C(name), C(root_gb), C(ephemeral_gb) and C(swap) are recorded in the metadata.
      - C(extra_specs) may set C(hw:cpu_sockets), C(hw:cpu_cores), C(hw:cpu_threads) (their product must equal C(vcpus)).
      - C(extra_specs) may set C(hw:numa_nodes) (or the image property C(hw_numa_nodes)), the guest's NUMA nodes. vCPUs and
        memory are split evenly over them, in order, so the count must divide both; an explicit C(hw:numa_cpus.N) or
        C(hw:numa_mem.N) split is refused.
    type: dict
    required: true
  image:
    description:
      - The image, as C(id), C(disk_format) and C(properties).
      - Properties honoured are C(hw_disk_bus) (virtio, scsi, sata, ide, usb), C(hw_cdrom_bus), C(hw_vif_model),
        C(hw_machine_type), C(hw_firmware_type) (bios or uefi; uefi needs OVMF on the host) and C(os_command_line).
    type: dict
    default: {}
  disks:
    description:
      - The disks in Nova's order, as returned by M(nimbus.compute.instance_disks) in C(domain_disks).
      - Each has C(name) (C(disk), C(disk.local), C(disk.swap), C(disk.config) ...), C(path) (inside O(instances_path)),
        C(format) (qcow2 or raw) and C(device) (disk or cdrom), optionally C(bus).
    type: list
    elements: dict
    default: []
  interfaces:
    description:
      - The NICs, as returned by M(nimbus.compute.instance_network) in C(domain_interfaces).
      - Each has C(type) (bridge or ethernet), C(mac), C(source_bridge) (bridge), C(target_dev) (required for ethernet,
        an existing tap that libvirt does not manage), C(model), C(mtu) and C(port_id).
    type: list
    elements: dict
    default: []
  kernel:
    description: Path of the kernel (aki) for direct kernel boot, inside O(instances_path) (normally in C(_base)).
    type: path
  ramdisk:
    description: Path of the initramfs (ari) for direct kernel boot; needs O(kernel).
    type: path
  virt_type:
    description:
      - C(kvm) or C(qemu) (TCG) for C(<domain type>); C(auto) picks kvm only when the CPU has vmx/svm and C(/dev/kvm) is usable.
    type: str
    choices: [auto, kvm, qemu]
    default: auto
  cpu_mode:
    description:
      - CPU mode. C(auto) is host-model under kvm and the emulator's default model under TCG.
    type: str
    choices: [auto, host-model, host-passthrough, custom, none]
    default: auto
  cpu_model:
    description: CPU model for O(cpu_mode=custom), for example C(qemu64).
    type: str
  owner:
    description:
      - Owner recorded in the metadata, with C(user_id), C(user_name), C(project_id), C(project_name).
      - C(user) and C(project) (the shape of the C(nimbus.compute.server) role's C(server_owner)) are accepted as the
        user and project names.
      - Any other key is an error.
    type: dict
    default: {}
  vnc:
    description: Add a VNC console.
    type: bool
    default: false
  vnc_listen:
    description: Address the VNC console listens on.
    type: str
    default: 127.0.0.1
  validate:
    description: Validate the XML with C(virt-xml-validate) when it is installed.
    type: bool
    default: true
notes:
  - Supports check mode and diff mode (the old and new C(libvirt.xml)).
"""

EXAMPLES = r"""
- name: Build the domain XML from the previous steps' results
  nimbus.compute.domain_xml:
    instance_uuid: "{{ server_uuid }}"
    name: web-1
    flavor: {name: m1.tiny, vcpus: 1, memory_mb: 256, root_gb: 1, ephemeral_gb: 0, swap: 0}
    image: {id: "{{ image_id }}", disk_format: qcow2, properties: {os_command_line: console=ttyS0}}
    disks: "{{ disks.domain_disks }}"
    interfaces: "{{ network.domain_interfaces | default([]) }}"
    kernel: "{{ kernel.base_path }}"
    ramdisk: "{{ ramdisk.base_path }}"
  register: domain_xml
"""

RETURN = r"""
xml:
  description: The domain XML.
  returned: success
  type: str
elapsed:
  description: Seconds the module ran on the host for its step (the server role's per-step timings).
  returned: always
  type: float
path:
  description: Path of the written C(libvirt.xml).
  returned: success
  type: str
virt_type:
  description: The domain type chosen (kvm or qemu).
  returned: success
  type: str
virt_type_reason:
  description: Why that virt type was chosen.
  returned: success
  type: str
machine_type:
  description: The canonical machine type used.
  returned: success
  type: str
disk_cache:
  description: The disk cache mode used (none or writeback).
  returned: success
  type: str
validated:
  description: Whether C(virt-xml-validate) checked the XML.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import CONNECTION_ARGS, INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._domain import xml_builder

ARGUMENT_SPEC = spec(
    CONNECTION_ARGS,
    INSTANCES_PATH_ARGS,
    instance_uuid=dict(type="str", required=True),
    name=dict(type="str"),
    flavor=dict(type="dict", required=True),
    image=dict(type="dict", default={}),
    disks=dict(type="list", elements="dict", default=[]),
    interfaces=dict(type="list", elements="dict", default=[]),
    kernel=dict(type="path"),
    ramdisk=dict(type="path"),
    virt_type=dict(type="str", choices=["auto", "kvm", "qemu"], default="auto"),
    cpu_mode=dict(type="str", choices=list(xml_builder.CPU_MODES), default="auto"),
    cpu_model=dict(type="str"),
    owner=dict(type="dict", default={}),
    vnc=dict(type="bool", default=False),
    vnc_listen=dict(type="str", default="127.0.0.1"),
    validate=dict(type="bool", default=True),
)


def main():
    clock = StepClock()
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = xml_builder.write_domain_xml(module.params, check_mode=module.check_mode)
    except (NimbusError, OSError) as err:
        module.fail_json(**clock.stamp(failure(err, xml_builder.STEP)))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**clock.stamp(result))


if __name__ == "__main__":
    main()
