#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: instance_disks
short_description: Create a server's disks and config drive in its instance directory
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Lays out the server's disks as Nova's libvirt driver does, in
    C(<instances_path>/<instance_uuid>/) (mode 0700, disks 0600, owned by the QEMU user).
  - C(disk) - qcow2 whose backing file is the raw base image O(base_path) (C(-F raw)), virtual size
    the flavor's C(root_gb); C(root_gb=0) means the image's own size, a C(root_gb) smaller than the
    image is an error.
  - C(disk.local) - qcow2 of C(ephemeral_gb) GiB, formatted with O(ephemeral_format) when its C(mkfs) exists
    (label C(ephemeral0), as Nova), blank otherwise. C(disk.swap) - qcow2 of C(swap) MiB, formatted with C(mkswap).
  - C(disk.config) - with O(config_drive), an ISO 9660 config drive labelled C(config-2) holding
    C(openstack/latest/meta_data.json), C(user_data), C(network_data.json) (and C(openstack/2012-08-10/)),
    built with C(xorriso).
  - Existing disks with the right backing file, format and size are kept (C(changed=false)); an
    existing disk that differs is an error and is never overwritten. A config drive this module made is
    rebuilt when its content changes.
  - Every file is recorded in C(instance.json) before it appears; O(state=absent) removes exactly
    those files, then the directory when nothing else of the server is left. A failed run removes what it made.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nimbus.compute.connection.instances_path
options:
  instance_uuid:
    description: UUID of the server, in canonical lower-case form.
    type: str
    required: true
  state:
    description: V(present) creates the missing disks, V(absent) removes the ones this module created.
    type: str
    choices: [present, absent]
    default: present
  flavor:
    description:
      - The flavor, with keys C(name), C(vcpus), C(memory_mb), C(root_gb), C(ephemeral_gb), C(swap) (MiB).
      - Required when O(state=present).
    type: dict
  base_path:
    description:
      - The raw base image in C(<instances_path>/_base) (the C(base_path) returned by M(nimbus.compute.image_cache)).
      - Required when O(state=present).
    type: path
  config_drive:
    description: Whether to build the config drive C(disk.config).
    type: bool
    default: false
  name:
    description: Display name of the server for the config drive (C(name), and C(hostname) derived from it).
    type: str
  meta_data:
    description:
      - Extra keys for C(meta_data.json) (for example C(meta), C(public_keys), C(availability_zone)).
      - C(uuid) is always the instance UUID; C(name) and C(hostname) are filled in when missing.
    type: dict
  user_data:
    description:
      - User data for the guest (at most 65535 bytes). It may carry secrets, so it is C(no_log) and never echoed, neither
        in the result nor in the module invocation.
    type: str
  network_data:
    description: Content of C(network_data.json) (C(links), C(networks), C(services)).
    type: dict
  ephemeral_format:
    description:
      - File system for C(disk.local) - one of V(btrfs), V(ext2), V(ext3), V(ext4), V(msdos), V(ntfs), V(vfat), V(xfs).
      - Blank disk when not given or when its mkfs is missing.
    type: str
  files:
    description:
      - With O(state=absent), remove only these files (V(disk), V(disk.local), V(disk.swap), V(disk.config)), and only
        those this module created. This is the rollback of one run, given the RV(created) list it returned; older
        files stay. An empty list removes nothing.
      - When not given, O(state=absent) removes every file this module created (server delete).
    type: list
    elements: str
notes:
  - Supports check mode and diff mode (the list of files before and after).
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Create the server's disks with a config drive
  nimbus.compute.instance_disks:
    instance_uuid: "{{ server_uuid }}"
    flavor: {name: m1.small, vcpus: 1, memory_mb: 512, root_gb: 2, ephemeral_gb: 1, swap: 256}
    base_path: "{{ image.base_path }}"
    config_drive: true
    name: web-1
    user_data: |
      #!/bin/sh
      echo hello
    ephemeral_format: ext4
  register: disks

- name: Remove the disks this module created
  nimbus.compute.instance_disks:
    instance_uuid: "{{ server_uuid }}"
    state: absent

- name: Roll back one run - remove only the files it created
  nimbus.compute.instance_disks:
    instance_uuid: "{{ server_uuid }}"
    state: absent
    files: "{{ disks.created }}"
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
domain_disks:
  description: The disks in Nova's order (disk, disk.local, disk.swap, disk.config), for M(nimbus.compute.domain_xml).
  returned: state=present
  type: list
  elements: dict
  contains:
    name:
      description: V(disk), V(disk.local), V(disk.swap) or V(disk.config).
      type: str
    path:
      description: Absolute path of the file.
      type: str
    format:
      description: V(qcow2), or V(raw) for the config drive.
      type: str
    device:
      description: Always V(disk) (the config drive is attached as a disk).
      type: str
  sample:
    - {name: disk, path: /var/lib/nimbus/instances/6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b/disk, format: qcow2, device: disk}
created:
  description:
    - Names of the files this run created (new files only). A rollback of this run removes these with O(files).
  returned: state=present
  type: list
  elements: str
rebuilt:
  description: Names of the existing files this run rebuilt (a config drive whose content changed).
  returned: state=present
  type: list
  elements: str
removed:
  description: Names of the files removed.
  returned: state=absent
  type: list
  elements: str
kept_because:
  description: With O(state=absent), what kept the instance directory (the claim, other steps' resources, unknown files).
  returned: state=absent
  type: list
  elements: str
failed_step:
  description: V(instance_disks) when the module failed.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._instance import disks

ARGUMENT_SPEC = spec(
    INSTANCES_PATH_ARGS,
    instance_uuid=dict(type="str", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    flavor=dict(type="dict"),
    base_path=dict(type="path"),
    files=dict(type="list", elements="str"),
    **disks.CONTENT_ARGS,
)


def main():
    clock = StepClock()
    module = AnsibleModule(ARGUMENT_SPEC, supports_check_mode=True,
                           required_if=[("state", "present", ("flavor", "base_path"))])
    p = module.params
    try:
        if p["state"] == "absent":
            result = disks.remove(p["instance_uuid"], p["instances_path"], check_mode=module.check_mode, files=p["files"])
        else:
            result = disks.ensure(
                p["instance_uuid"], p["instances_path"], p["flavor"], p["base_path"],
                config_drive_enabled=p["config_drive"], name=p["name"], meta_data=p["meta_data"],
                user_data=p["user_data"], network_data=p["network_data"],
                ephemeral_format=p["ephemeral_format"], check_mode=module.check_mode,
            )
    except (NimbusError, OSError) as err:
        module.fail_json(**clock.stamp(failure(err, disks.STEP)))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**clock.stamp(result))


if __name__ == "__main__":
    main()
