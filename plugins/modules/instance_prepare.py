#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: instance_prepare
short_description: Claim resources, create the disks and write the domain XML of several servers on a hypervisor at once
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - For each server of O(instances), in order, does what M(nimbus.compute.instance_claim), then
    M(nimbus.compute.instance_disks) and, for a server with O(instances[].domain), M(nimbus.compute.domain_xml)
    do for one server, with the same code, so each claim counts the claims made before it. The host is
    probed for the XML once per virt type and machine type, not once per server.
  - One module run for all the servers a play places on a hypervisor, instead of several per server, as Ansible
    starts a Python process for every module task. C(create_server.yml) builds the servers without ports or
    volumes with it (and O(domain_state)); the M(nimbus.compute.server) role builds the others, and any server
    that failed here.
  - Every server is checked (UUID, flavor, base image, config drive content, the XML request) before anything
    changes; one bad server fails the run and nothing is claimed or created.
  - A server whose claim is refused or whose disks or XML cannot be made is reported in its entry of RV(instances)
    with C(failed=true), C(failed_step) and C(reschedule), and keeps nothing on the host (its disks and claim
    are removed again). The other servers go on; the module itself does not fail for them.
  - With O(domain_state), it then also does what M(nimbus.compute.domain) does for each server prepared here (it defines
    the domain from its XML and brings it to that state). The servers start in parallel (up to 8 at once), as a start
    mostly waits for QEMU. A server whose domain step fails keeps nothing on the host either (its domain, disks and
    claim are removed again) and is reported with C(failed_step=domain).
  - Removing a server is M(nimbus.compute.domain), M(nimbus.compute.instance_disks) and M(nimbus.compute.instance_claim)
    with C(state=absent), as for a server built step by step.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nimbus.compute.connection
  - nimbus.compute.connection.instances_path
  - nimbus.compute.capacity
options:
  instances:
    description: The servers to claim and lay out, in the order to claim them.
    type: list
    elements: dict
    required: true
    suboptions:
      instance_uuid:
        description: UUID of the server, in canonical lower-case form.
        type: str
        required: true
      flavor:
        description:
          - The flavor, with keys C(name), C(vcpus), C(memory_mb), C(root_gb), C(ephemeral_gb), C(swap) (MiB)
            and C(extra_specs).
        type: dict
        required: true
      base_path:
        description: The raw base image in C(<instances_path>/_base) (the C(base_path) of M(nimbus.compute.image_cache)).
        type: path
        required: true
      config_drive:
        description: Whether to build the config drive C(disk.config).
        type: bool
        default: false
      name:
        description: Display name of the server for the config drive.
        type: str
      meta_data:
        description: Extra keys for the config drive's C(meta_data.json) (M(nimbus.compute.instance_disks)).
        type: dict
      user_data:
        description: The config drive's C(user_data). May hold secrets, so it is never logged.
        type: str
      network_data:
        description: The config drive's C(network_data.json).
        type: dict
      ephemeral_format:
        description: File system for C(disk.local) (M(nimbus.compute.instance_disks)); blank when not given.
        type: str
      domain:
        description:
          - When given, also writes the server's domain XML to C(<uuid>/libvirt.xml) as M(nimbus.compute.domain_xml)
            does, for the disks made here, without network interfaces (a server with ports gets its XML in its build).
          - The flavor, name and disks come from the server; these are the rest of M(nimbus.compute.domain_xml)'s options.
        type: dict
        suboptions:
          image:
            description:
              - The image record (C(id), C(properties)), as M(nimbus.compute.domain_xml)
                O(nimbus.compute.domain_xml#module:image).
            type: dict
            required: true
          kernel:
            description: Base path of the kernel for direct kernel boot.
            type: path
          ramdisk:
            description: Base path of the ramdisk for direct kernel boot.
            type: path
          owner:
            description: Owner for the domain metadata, as M(nimbus.compute.domain_xml) O(nimbus.compute.domain_xml#module:owner).
            type: dict
          virt_type:
            description: V(kvm), V(qemu), or V(auto) to probe the host.
            type: str
            default: auto
  domain_state:
    description:
      - After the XML, define each prepared server's domain and bring it to this state, as
        M(nimbus.compute.domain) O(nimbus.compute.domain#module:state) does. Every server needs O(instances[].domain).
      - Not given, the domains are left to the caller (M(nimbus.compute.domain)).
    type: str
    choices: [defined, running, paused, shutdown]
  start_timeout:
    description: Seconds to wait for each domain to reach O(domain_state) after its start.
    type: int
    default: 60
notes:
  - Supports check mode (reports what each server's claim, disks, XML and domain would be, changes nothing) and diff
    mode (the files, the XML and the domain definition of each server whose disks, XML or domain change).
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Claim and lay out the disks of two servers on this hypervisor in one run
  nimbus.compute.instance_prepare:
    instances:
      - instance_uuid: 6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b
        flavor: {name: m1.tiny, vcpus: 1, memory_mb: 512, root_gb: 1, ephemeral_gb: 0, swap: 0}
        base_path: "{{ cached.base_path }}"
        config_drive: true
        name: web-1
        domain:
          image: {id: cirros, properties: {hw_disk_bus: virtio}}
      - instance_uuid: 0b7c51e4-8d2f-4b0e-9a61-3c5d7e9f1a2b
        flavor: {name: m1.tiny, vcpus: 1, memory_mb: 512, root_gb: 1, ephemeral_gb: 0, swap: 0}
        base_path: "{{ cached.base_path }}"
        config_drive: true
        name: web-2
    total_memory_mb: 4096
  register: prepared

- name: Show the servers that need another host
  ansible.builtin.debug:
    msg: "{{ prepared.failed_instances }}"
"""

RETURN = r"""
instances:
  description:
    - One entry per server, in the order given, with C(instance_uuid), C(failed) and C(changed).
    - When it worked, C(claim), C(disks) and (with O(instances[].domain)) C(xml) hold what M(nimbus.compute.instance_claim),
      M(nimbus.compute.instance_disks) and M(nimbus.compute.domain_xml) return for the server (each with its own C(elapsed)),
      and with O(domain_state) C(domain) what M(nimbus.compute.domain) returns.
    - When it failed, C(msg), C(failed_step) (V(instance_claim), V(instance_disks), V(domain_xml) or V(domain)),
      C(reschedule) (true when another host may take the server), C(elapsed), C(resources) for a refused claim,
      and C(rollback_failed) when what was made for it could not be removed again (a list of C(step) and C(msg), as in
      the M(nimbus.compute.server) role's result).
  returned: always
  type: list
  elements: dict
failed_instances:
  description: UUIDs of the servers that failed (nothing of them is left on the host).
  returned: always
  type: list
  elements: str
elapsed:
  description: Seconds the module ran on the host.
  returned: always
  type: float
failed_step:
  description:
    - The step whose check refused the request (V(instance_prepare), V(instance_claim), V(instance_disks) or
      V(domain_xml)).
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import CONNECTION_ARGS, INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._instance import claim, disks, prepare

SERVER_OPTIONS = dict(
    disks.CONTENT_ARGS,
    instance_uuid=dict(type="str", required=True),
    flavor=dict(type="dict", required=True),
    base_path=dict(type="path", required=True),
    domain=dict(type="dict", options=dict(
        image=dict(type="dict", required=True),
        kernel=dict(type="path"),
        ramdisk=dict(type="path"),
        owner=dict(type="dict"),
        virt_type=dict(type="str", default="auto"),
    )),
)

ARGUMENT_SPEC = spec(
    CONNECTION_ARGS,
    INSTANCES_PATH_ARGS,
    claim.CAPACITY_ARGS,
    instances=dict(type="list", elements="dict", required=True, options=SERVER_OPTIONS),
    domain_state=dict(type="str", choices=list(prepare.DOMAIN_STATES)),
    start_timeout=dict(type="int", default=60),
)


def main():
    clock = StepClock()
    module = AnsibleModule(ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        result = prepare.prepare(p["instances"], p["instances_path"], libvirt_uri=p["libvirt_uri"],
                                 **claim.capacity_from_params(p), check_mode=module.check_mode,
                                 domain_state=p["domain_state"], start_timeout=p["start_timeout"])
    except (NimbusError, OSError) as err:
        module.fail_json(**clock.stamp(failure(err, prepare.STEP)))
    diffs = []
    for server in result["instances"]:
        for step in ("disks", "domain"):
            for warning in server.get(step, {}).pop("warnings", []):
                module.warn("%s: %s" % (server["instance_uuid"], warning))
        for step in ("disks", "xml", "domain"):
            done = server.get(step, {})
            diff = done.pop("diff", None)
            if diff and done.get("changed"):
                diffs.append(diff)
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**clock.stamp(result))


if __name__ == "__main__":
    main()
