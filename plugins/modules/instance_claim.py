#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: instance_claim
short_description: Claim RAM, disk and vCPUs for a server on the chosen hypervisor
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Re-checks, under a host lock, that the hypervisor can hold the flavor, as Nova's former
    C(RamFilter), C(DiskFilter) and C(CoreFilter) did - for each resource
    C(requested <= total * allocation_ratio - reserved - used), where C(used) sums the claims
    recorded in every C(<instances_path>/<uuid>/instance.json) on the host.
  - On success creates the instance directory (mode 0700, owned by the QEMU user) and records the
    claim in its C(instance.json). A refused claim fails with C(reschedule=true) so the
    orchestration can try an alternate host.
  - Claiming again for the same UUID and flavor changes nothing.
  - With O(state=absent) releases the claim, and removes the instance directory when nothing else
    of the server is left in it (only C(instance.json), C(libvirt.xml), C(console.log)).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nimbus.compute.connection
  - nimbus.compute.connection.instances_path
  - nimbus.compute.capacity
options:
  instance_uuid:
    description: UUID of the server, in canonical lower-case form.
    type: str
    required: true
  flavor:
    description:
      - The flavor, with keys C(name), C(vcpus), C(memory_mb), C(root_gb), C(ephemeral_gb), C(swap) (MiB) and C(extra_specs).
      - Required when O(state=present). vcpus >= 1, memory_mb >= 16, disk sizes >= 0.
    type: dict
  state:
    description: V(present) claims, V(absent) releases.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Supports check mode (reports whether the claim would fit without recording it).
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Claim resources for the server on this hypervisor
  nimbus.compute.instance_claim:
    instance_uuid: 6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b
    flavor: {name: m1.tiny, vcpus: 1, memory_mb: 512, root_gb: 1, ephemeral_gb: 0, swap: 0}
  register: claim

- name: Release the claim (server delete)
  nimbus.compute.instance_claim:
    instance_uuid: 6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b
    state: absent
"""

RETURN = r"""
instance_dir:
  description: The server's directory.
  returned: always
  type: str
  sample: /var/lib/nimbus/instances/6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b
elapsed:
  description: Seconds the module ran on the host for its step (the server role's per-step timings).
  returned: always
  type: float
claim:
  description: What was claimed - C(memory_mb), C(disk_mb) (root and ephemeral GiB plus swap MiB), C(vcpus), C(flavor).
  returned: state=present
  type: dict
  sample: {memory_mb: 512, disk_mb: 1024, vcpus: 1, flavor: m1.tiny}
resources:
  description:
    - Per resource (C(memory_mb), C(disk_mb), C(vcpus)) C(requested), C(total), C(allocation_ratio), C(reserved),
      C(used) by other claims, C(limit), C(free) and C(fits). Also returned when the claim is refused.
  returned: state=present
  type: dict
created:
  description:
    - True when this run made the first claim for the server on this host (the server is new here; in check mode, when
      it would). False when the claim was already there, unchanged or changed to another flavor (a resize), so a
      rollback of this run releases the claim only when this is true.
  returned: state=present
  type: bool
reschedule:
  description: True when the claim was refused for lack of resources (try another host).
  returned: always
  type: bool
failed_step:
  description: V(instance_claim) when the module failed.
  returned: failure
  type: str
kept_because:
  description: With O(state=absent), what kept the instance directory (other steps' resources, unknown files).
  returned: state=absent
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import CONNECTION_ARGS, INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._instance import claim

ARGUMENT_SPEC = spec(
    CONNECTION_ARGS,
    INSTANCES_PATH_ARGS,
    claim.CAPACITY_ARGS,
    instance_uuid=dict(type="str", required=True),
    flavor=dict(type="dict"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
)


def main():
    clock = StepClock()
    module = AnsibleModule(ARGUMENT_SPEC, supports_check_mode=True, required_if=[("state", "present", ("flavor",))])
    p = module.params
    try:
        if p["state"] == "absent":
            result = claim.release(p["instance_uuid"], p["instances_path"], check_mode=module.check_mode)
        else:
            result = claim.claim(p["instance_uuid"], p["flavor"], p["instances_path"], libvirt_uri=p["libvirt_uri"],
                                 **claim.capacity_from_params(p), check_mode=module.check_mode)
    except (NimbusError, OSError) as err:
        module.fail_json(**clock.stamp(failure(err, claim.STEP)))
    module.exit_json(**clock.stamp(result))


if __name__ == "__main__":
    main()
