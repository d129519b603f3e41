#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_audit
short_description: Report servers left half-built on a hypervisor (orphaned domains, directories, claims and locks)
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Compares the libvirt domains named C(instance-<uuid>) with the server directories in O(instances_path)
    and reports what does not belong to a whole server, for example after a play was killed mid-build.
  - C(domains_without_dir) are domains whose instance directory is gone; C(dirs_without_domain) are
    instance directories (with their claim, disks, journal steps) that have no domain; C(stale_locks) are
    per-instance lock files of servers that have neither; C(stale_temp) are temporary files a killed step left.
  - Read-only. A server being built right now has a directory without a domain for a few seconds;
    O(min_age) leaves out entries younger than that.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nimbus.compute.connection
  - nimbus.compute.connection.instances_path
options:
  min_age:
    description: Seconds; directories, locks and temporary files modified more recently are not reported.
    type: float
    default: 0.0
  fail_on_orphans:
    description: Fail when anything orphaned is found (for checks in CI or after a rollback).
    type: bool
    default: false
notes:
  - Remove what it reports with M(nimbus.compute.domain) O(nimbus.compute.domain#module:state=absent),
    M(nimbus.compute.instance_disks) and M(nimbus.compute.instance_claim) with C(state=absent), or the
    C(nimbus.compute.server_delete) role, which do exactly that per server.
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Look for orphans on every hypervisor
  nimbus.compute.host_audit:
    libvirt_uri: qemu:///system
    instances_path: /var/lib/nimbus/instances
    min_age: 300
  register: audit

- name: Delete the servers whose domain is gone
  ansible.builtin.include_role:
    name: nimbus.compute.server_delete
  vars:
    server_delete_uuid: "{{ item.uuid }}"
  loop: "{{ audit.dirs_without_domain }}"
"""

RETURN = r"""
servers:
  description: UUIDs of the whole servers (domain and directory).
  returned: success
  type: list
  elements: str
domains_without_dir:
  description: Domains C(instance-<uuid>) without an instance directory, each with C(uuid), C(domain_name), C(state).
  returned: success
  type: list
  elements: dict
dirs_without_domain:
  description:
    - Instance directories without a domain, each with C(uuid), C(path), C(age) (seconds), C(steps) (journal steps),
      C(claim) (whether it still holds a claim) and C(files).
  returned: success
  type: list
  elements: dict
stale_locks:
  description: Lock files C(locks/<uuid>.lock) of servers that have neither a domain nor a directory.
  returned: success
  type: list
  elements: str
stale_temp:
  description: Temporary files and directories (C(.nimbus-*)) left by a killed step.
  returned: success
  type: list
  elements: str
orphans:
  description: How many entries the four lists hold together.
  returned: success
  type: int
  sample: 0
failed_step:
  description: V(host_audit) when the module failed.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._audit.orphans import STEP, audit
from ansible_collections.nimbus.compute.plugins.module_utils._common.args import CONNECTION_ARGS, INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure

ARGUMENT_SPEC = spec(
    CONNECTION_ARGS,
    INSTANCES_PATH_ARGS,
    min_age=dict(type="float", default=0.0),
    fail_on_orphans=dict(type="bool", default=False),
)


def main():
    module = AnsibleModule(ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        report = audit(p["instances_path"], p["libvirt_uri"], min_age=p["min_age"])
    except (NimbusError, OSError) as err:
        module.fail_json(**failure(err, STEP))
    if p["fail_on_orphans"] and report["orphans"]:
        module.fail_json(msg="%s: %d orphaned item(s) on this host" % (STEP, report["orphans"]), failed_step=STEP,
                         **report)
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
