#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_cache_cleanup
short_description: Remove cached base images that no instance on the host uses
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Nova's image cache manager for C(<instances_path>/_base).
  - A base image is in use when a disk in an instance directory has it as its backing file (read from the qcow2 header
    without running qemu-img), or when the instance's C(libvirt.xml) or C(instance.json) names it (a kernel or ramdisk
    for direct kernel boot).
  - Unused base images whose modification time is older than O(min_age) are removed, and C(.part) / C(.converting)
    leftovers of interrupted downloads older than O(part_min_age). M(nimbus.compute.image_cache) refreshes the
    modification time of a base image each time it is used.
  - Before each removal the image's lock is taken and age and use are checked again, so a concurrent
    M(nimbus.compute.image_cache) run is never undercut. Files in C(_base) that the cache did not name are never touched.
extends_documentation_fragment:
  - nimbus.compute.connection.instances_path
options:
  min_age:
    description:
      - Seconds since a base image was last used before an unused one may be removed (Nova's
        C(remove_unused_original_minimum_age_seconds)).
    type: int
    default: 86400
  part_min_age:
    description:
      - Seconds before a leftover C(.part) or C(.converting) file is removed.
    type: int
    default: 3600
  lock_timeout:
    description:
      - Seconds to wait for an image's lock; an image whose lock stays busy is kept and listed in RV(busy).
      - Above 0 and at most 604800 (a week).
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    description: Lists in RV(removed) what would be removed, removes nothing.
  diff_mode:
    support: none
    description: A base image is a new file, not an edit; there is nothing to show a diff of.
"""

EXAMPLES = r"""
- name: Remove base images unused for a day
  nimbus.compute.image_cache_cleanup:

- name: List what would go after one hour without use
  nimbus.compute.image_cache_cleanup:
    min_age: 3600
  check_mode: true
"""

RETURN = r"""
removed:
  description: Paths removed (in check mode, the paths that would be removed).
  returned: always
  type: list
  elements: str
in_use:
  description: Base images kept because an instance uses them.
  returned: always
  type: list
  elements: str
too_young:
  description: Base images and leftovers kept because they are younger than the threshold.
  returned: always
  type: list
  elements: str
busy:
  description: Files kept because their image lock was held by another run or they changed during the scan.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._image.cleanup import (
    DEFAULT_MIN_AGE,
    DEFAULT_PART_MIN_AGE,
    STEP_CLEANUP,
    cleanup,
)

ARGUMENT_SPEC = spec(
    INSTANCES_PATH_ARGS,
    min_age=dict(type="int", default=DEFAULT_MIN_AGE),
    part_min_age=dict(type="int", default=DEFAULT_PART_MIN_AGE),
    lock_timeout=dict(type="int", default=10),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        result = cleanup(
            params["instances_path"],
            min_age=params["min_age"],
            part_min_age=params["part_min_age"],
            lock_timeout=params["lock_timeout"],
            check_mode=module.check_mode,
        )
        module.exit_json(**result)
    except (NimbusError, OSError) as err:
        module.fail_json(**failure(err, STEP_CLEANUP))


if __name__ == "__main__":
    main()
