#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: domain
short_description: Define a server's libvirt domain and manage its lifecycle
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Defines the domain C(instance-<uuid>) from the XML in memory (C(defineXML)), from O(xml) or else from
    C(<instances_path>/<uuid>/libvirt.xml), then brings it to O(state).
  - Identical XML reports C(changed=false). A changed XML redefines the domain and reports a diff of the fields the XML sets
    (libvirt's own defaults are ignored); for an active domain the change applies on its next boot and
    RV(pending_restart) is true.
  - A different domain already holding the UUID or the name is an error; it is never overwritten. Every state, with or
    without O(xml), acts only on a domain named C(instance-<uuid>) with nimbus.compute metadata; any other domain holding
    the UUID is an error and is left untouched.
  - O(state=absent) destroys and undefines the domain (with its NVRAM and managed save) and nothing else; the disks and
    the instance directory belong to M(nimbus.compute.instance_disks) and M(nimbus.compute.instance_claim).
  - Every wait is bounded by O(start_timeout) or O(shutdown_timeout).
extends_documentation_fragment:
  - nimbus.compute.connection
  - nimbus.compute.connection.instances_path
options:
  uuid:
    description: UUID of the server (the domain's C(<uuid>)).
    type: str
    required: true
  xml:
    description:
      - Domain XML to define. Its C(<uuid>) must be O(uuid), its C(<name>) C(instance-<uuid>), and it must carry the
        nimbus.compute metadata (as M(nimbus.compute.domain_xml) writes it).
      - When omitted, C(<instances_path>/<uuid>/libvirt.xml) is used if it exists, else the domain must already be defined.
    type: str
  state:
    description:
      - V(defined) defines the domain and leaves its run state alone.
      - V(running) starts a stopped domain and resumes a paused one.
      - V(paused) starts a stopped domain paused, or pauses a running one.
      - V(shutdown) asks the guest to power off (ACPI), again every 10 seconds as Nova does (a guest still booting misses
        the first request), then destroys it after O(shutdown_timeout) when O(force_after_timeout).
      - V(destroyed) powers the domain off at once.
      - V(absent) destroys and undefines it; C(changed=false) when it is already gone.
    type: str
    choices: [defined, running, paused, shutdown, destroyed, absent]
    default: running
  start_paused:
    description:
      - With O(state=running), start a stopped domain paused (so that firewall rules can be applied before it runs) and
        accept a paused domain as it is. Run again without it to resume.
    type: bool
    default: false
  reboot:
    description:
      - Reboot a domain that was already running (or paused, which is resumed first). V(soft) is a clean shutdown then start
        (forced when the guest ignores ACPI and O(force_after_timeout)); V(hard) destroys and starts it from its definition.
        Always C(changed=true).
      - Needs O(state=running) and cannot be combined with O(start_paused); anything else is an error before any change.
      - A domain that was shut off (or not defined) is started instead, which is a fresh boot, with a warning saying so.
    type: str
    choices: [soft, hard]
  start_timeout:
    description: Seconds to wait for the domain to run (or be paused) after a start. Above 0 and at most 604800 (a week).
    type: int
    default: 60
  shutdown_timeout:
    description: Seconds to wait for a graceful shutdown. Above 0 and at most 604800 (a week).
    type: int
    default: 60
  force_after_timeout:
    description: Destroy the domain when a graceful shutdown did not finish within O(shutdown_timeout) (Nova's clean shutdown).
    type: bool
    default: true
notes:
  - Supports check mode and diff mode.
"""

EXAMPLES = r"""
- name: Define the server and start it paused
  nimbus.compute.domain:
    uuid: "{{ server_uuid }}"
    xml: "{{ domain_xml.xml }}"
    state: running
    start_paused: true

- name: Resume it once the firewall rules are in place
  nimbus.compute.domain:
    uuid: "{{ server_uuid }}"
    state: running

- name: Delete the domain (disks are removed by instance_disks)
  nimbus.compute.domain:
    uuid: "{{ server_uuid }}"
    state: absent
"""

RETURN = r"""
state:
  description: The domain's state afterwards (running, paused, shutoff, absent ...); the expected one in check mode.
  returned: success
  type: str
elapsed:
  description: Seconds the module ran on the host for its step (the server role's per-step timings).
  returned: always
  type: float
previous_state:
  description: The domain's state before the call (absent when it was not defined).
  returned: success
  type: str
domain_name:
  description: The domain's name.
  returned: success
  type: str
defined:
  description:
    - Whether the domain was newly defined. Also returned on failure, true when this call defined the domain and then
      failed (for example its start), so that a rollback knows to remove it. The journal records the domain before
      C(defineXML), so a killed run leaves it recorded too.
  returned: always
  type: bool
redefined:
  description: Whether an existing definition was replaced by a changed XML.
  returned: success
  type: bool
pending_restart:
  description: The definition changed while the domain was active; the change applies on its next boot.
  returned: success
  type: bool
forced:
  description: A shutdown or soft reboot had to destroy the domain because the guest did not power off in time.
  returned: success
  type: bool
actions:
  description: What was done (or would be in check mode), in order, e.g. C(define), C(start paused), C(resume).
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import CONNECTION_ARGS, INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._domain import lifecycle

ARGUMENT_SPEC = spec(
    CONNECTION_ARGS,
    INSTANCES_PATH_ARGS,
    uuid=dict(type="str", required=True),
    xml=dict(type="str"),
    state=dict(type="str", choices=list(lifecycle.STATES), default="running"),
    start_paused=dict(type="bool", default=False),
    reboot=dict(type="str", choices=list(lifecycle.REBOOT_MODES)),
    start_timeout=dict(type="int", default=60),
    shutdown_timeout=dict(type="int", default=60),
    force_after_timeout=dict(type="bool", default=True),
)


def main():
    clock = StepClock()
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    progress = {}
    try:
        result = lifecycle.run(module.params, check_mode=module.check_mode, progress=progress)
    except (NimbusError, OSError) as err:
        # defined: this call defined the domain before it failed (a failed start), for the caller's rollback.
        module.fail_json(defined=bool(progress.get("defined")), **clock.stamp(failure(err, lifecycle.STEP)))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if result.get("pending_restart"):
        module.warn("the domain definition changed while it is active: the change applies on its next boot")
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**clock.stamp(result))


if __name__ == "__main__":
    main()
