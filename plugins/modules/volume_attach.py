#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: volume_attach
short_description: Attach an iSCSI, NBD or RBD volume to a server, or detach it
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Connects a volume described by Nova's O(connection_info) to the domain C(instance-<uuid>) and attaches it as a disk, or
    detaches it (O(state=absent)).
  - On a stopped domain (build time, after M(nimbus.compute.domain) O(nimbus.compute.domain#module:state=defined)) the volume
    goes into the persistent definition only; on a running or paused domain it is hot-plugged too (C(attachDeviceFlags) live and
    config).
  - Before a volume is attached it is opened the way QEMU will open it, on a stopped and on a running domain alike (before
    the hot attach too) - a transient paused domain holding only that disk, started by a child process and killed after
    O(connect_timeout) + 5 s - so a missing LUN, a wrong CHAP password, an unreachable portal or a target that never answers
    fails here with QEMU's reason, the server's own QEMU is never touched by it, and nothing is left behind (no secret, no
    session, no XML change). RBD volumes are not probed.
  - Any failure after the domain was changed (also a full or read-only disk under C(libvirt.xml) or C(instance.json))
    rolls the attach back. A C(instance.json) that cannot be read fails the call before anything changes.
  - "iSCSI: a host-side login with C(iscsiadm) is used when the kernel has the C(iscsi_tcp) transport and the volume has no CHAP;
    otherwise QEMU's own initiator (C(<source protocol='iscsi'>)). RV(iscsi_initiator) says which was used."
  - CHAP passwords go into a private libvirt secret through the libvirt API (never on a command line, in the XML or in logs);
    the secret is removed on detach. RBD uses the Ceph secret O(connection_info.data.secret_uuid) that the host already has.
  - The disk carries the alias C(ua-volume-<volume_id>) and the serial O(volume_id). A volume already attached to another
    domain is refused. C(<instances_path>/<uuid>/libvirt.xml) gets the same change, so that
    M(nimbus.compute.domain) stays C(changed=false) afterwards.
extends_documentation_fragment:
  - nimbus.compute.connection
  - nimbus.compute.connection.instances_path
options:
  instance_uuid:
    description: UUID of the server.
    type: str
    required: true
  volume_id:
    description: Id of the volume (a Cinder volume UUID); letters, digits, C(-) and C(_), at most 64 characters.
    type: str
    required: true
  state:
    description: V(present) attaches the volume, V(absent) detaches it (C(changed=false) when it is not attached).
    type: str
    choices: [present, absent]
    default: present
  connection_info:
    description:
      - The volume's connection in Nova's shape. Required with O(state=present).
    type: dict
    suboptions:
      driver_volume_type:
        description: How to connect.
        type: str
        required: true
        choices: [iscsi, nbd, rbd]
      data:
        description: The driver's connection data; each driver reads its own keys.
        type: dict
        default: {}
        suboptions:
          target_portal:
            description: iSCSI portal C(host:port) (port 3260 when omitted).
            type: str
          target_iqn:
            description: iSCSI target name.
            type: str
          target_lun:
            description: iSCSI LUN (0-16383); the first of O(connection_info.data.target_luns), else V(0), when omitted.
            type: int
          target_portals:
            description:
              - Cinder's multipath list of portals, one per path. Multipath is not supported; the first entry is used
                when O(connection_info.data.target_portal) is missing, and the lists are otherwise ignored.
            type: list
            elements: str
          target_iqns:
            description: Cinder's multipath list of IQNs (see O(connection_info.data.target_portals)).
            type: list
            elements: str
          target_luns:
            description: Cinder's multipath list of LUNs (see O(connection_info.data.target_portals)).
            type: list
            elements: int
          auth_method:
            description: iSCSI authentication, V(CHAP) or none.
            type: str
          auth_username:
            description: CHAP user (iSCSI) or cephx user (RBD).
            type: str
          auth_password:
            description: CHAP password; stored in a libvirt secret only.
            type: str
          name:
            description: RBD C(pool/image).
            type: str
          hosts:
            description: RBD monitor hosts.
            type: list
            elements: str
          ports:
            description: RBD monitor ports, one per host (6789 when omitted).
            type: list
            elements: str
          auth_enabled:
            description: RBD cephx authentication (default when O(connection_info.data.auth_username) is set).
            type: bool
          secret_type:
            description: RBD secret type, V(ceph).
            type: str
          secret_uuid:
            description: UUID of the libvirt C(ceph) secret holding the cephx key.
            type: str
          cluster_name:
            description: Ceph cluster name Cinder sends (usually C(ceph)); ignored, QEMU reaches the monitors in
              O(connection_info.data.hosts), as with Nova's libvirt driver.
            type: str
          keyring:
            description:
              - Keyring Cinder sends when it has C(rbd_keyring_conf); accepted and ignored, as Nova's libvirt driver does.
                It is never written to disk, put on a command line or logged. The cephx key must already be in the
                libvirt secret O(connection_info.data.secret_uuid).
            type: str
          host:
            description: NBD server.
            type: str
          port:
            description: NBD port (10809 when omitted).
            type: int
          export:
            description: NBD export name.
            type: str
          access_mode:
            description: V(ro) attaches the disk read-only.
            type: str
            choices: [rw, ro]
            default: rw
          discard:
            description: Pass discard (unmap) requests through.
            type: bool
            default: false
          encrypted:
            description: Encrypted volumes are not supported; V(true) is refused.
            type: bool
            default: false
          volume_id:
            description: Nova passes the volume id here too; ignored in favour of O(volume_id).
            type: str
          target_discovered:
            description: Ignored (Nova's discovery flag).
            type: bool
          qos_specs:
            description: Ignored (front-end QoS is not applied yet).
            type: dict
          cacheable:
            description: Ignored.
            type: bool
  device:
    description: Target device, for example V(vdb). The first free name on O(bus) when omitted.
    type: str
  bus:
    description: Disk bus.
    type: str
    choices: [virtio, scsi, sata]
    default: virtio
  boot_index:
    description:
      - Boot order of the volume; V(0) boots from it (boot from volume) and makes it the first disk (V(vda) on virtio) unless
        O(device) says otherwise.
      - It becomes a per-device C(<boot order>) only when the domain has no C(<os><boot dev>) (libvirt refuses both together, and
        adds C(<boot dev='hd'/>) to domains defined without either); otherwise the firmware boots the first disk, and with
        direct kernel boot the first disk is the root the kernel command line names.
    type: int
  iscsi_initiator:
    description: V(auto) probes for a host-side iSCSI initiator; V(host) or V(qemu) force one (V(host) fails where it cannot run).
    type: str
    choices: [auto, host, qemu]
    default: auto
  connect_timeout:
    description:
      - Seconds to wait for the portal or NBD server to answer, and for an iSCSI login.
      - Above 0 and at most 604800 (a week).
    type: int
    default: 10
  detach_timeout:
    description: Seconds to wait for the guest to release a hot-plugged volume on detach. Above 0 and at most 604800 (a week).
    type: int
    default: 30
notes:
  - Supports check mode and diff mode (the diff is C(libvirt.xml)).
  - RBD was not exercised against a live Ceph cluster; its XML is checked against libvirt's schema and C(defineXML).
"""

EXAMPLES = r"""
- name: Attach an iSCSI volume with CHAP before the first boot
  nimbus.compute.volume_attach:
    instance_uuid: "{{ server_uuid }}"
    volume_id: 0e6f2a3c-7d1b-4c55-9a0e-3f2b1c4d5e6f
    connection_info:
      driver_volume_type: iscsi
      data:
        target_portal: 192.0.2.10:3260
        target_iqn: iqn.2010-10.org.openstack:volume-0e6f2a3c
        target_lun: 1
        auth_method: CHAP
        auth_username: nova
        auth_password: "{{ chap_secret }}"

- name: Hot-attach an NBD export to the running server
  nimbus.compute.volume_attach:
    instance_uuid: "{{ server_uuid }}"
    volume_id: scratch-1
    connection_info:
      driver_volume_type: nbd
      data: {host: 192.0.2.20, port: 10809, export: scratch}

- name: Detach it
  nimbus.compute.volume_attach:
    instance_uuid: "{{ server_uuid }}"
    volume_id: scratch-1
    state: absent
"""

RETURN = r"""
device:
  description: The guest device name of the volume (null when nothing was attached).
  returned: success
  type: str
  sample: vdb
elapsed:
  description: Seconds the module ran on the host for its step (the server role's per-step timings).
  returned: always
  type: float
bus:
  description: The disk bus.
  returned: state=present
  type: str
driver_volume_type:
  description: The driver used.
  returned: state=present
  type: str
iscsi_initiator:
  description: V(host) (iscsiadm login, block device) or V(qemu) (QEMU's initiator) for iSCSI; null for other drivers.
  returned: state=present
  type: str
initiator_reason:
  description: Why that initiator was chosen.
  returned: state=present
  type: str
live:
  description: Whether the domain was active, so the volume was hot-plugged (or hot-unplugged).
  returned: success
  type: bool
secret_uuid:
  description: UUID of the libvirt secret holding the volume's credentials (never the credentials).
  returned: state=present
  type: str
disk_xml:
  description: The C(<disk>) element attached (it names the secret by UUID only).
  returned: state=present
  type: str
libvirt_xml_updated:
  description: Whether C(<instances_path>/<uuid>/libvirt.xml) was changed to match.
  returned: success
  type: bool
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import CONNECTION_ARGS, INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._volume import attach

DATA_OPTIONS = dict(
    target_portal=dict(type="str"),
    target_iqn=dict(type="str"),
    target_lun=dict(type="int"),
    target_portals=dict(type="list", elements="str"),
    target_iqns=dict(type="list", elements="str"),
    target_luns=dict(type="list", elements="int"),
    auth_method=dict(type="str"),
    auth_username=dict(type="str"),
    auth_password=dict(type="str", no_log=True),
    name=dict(type="str"),
    hosts=dict(type="list", elements="str"),
    ports=dict(type="list", elements="str"),
    auth_enabled=dict(type="bool"),
    secret_type=dict(type="str"),
    secret_uuid=dict(type="str", no_log=False),  # a UUID naming the secret, not the secret
    cluster_name=dict(type="str"),
    keyring=dict(type="str", no_log=True),  # accepted from Cinder, never used, never on disk
    host=dict(type="str"),
    port=dict(type="int"),
    export=dict(type="str"),
    access_mode=dict(type="str", choices=["rw", "ro"], default="rw"),
    discard=dict(type="bool", default=False),
    encrypted=dict(type="bool", default=False),
    volume_id=dict(type="str"),
    target_discovered=dict(type="bool"),
    qos_specs=dict(type="dict"),
    cacheable=dict(type="bool"),
)

ARGUMENT_SPEC = spec(
    CONNECTION_ARGS,
    INSTANCES_PATH_ARGS,
    instance_uuid=dict(type="str", required=True),
    volume_id=dict(type="str", required=True),
    state=dict(type="str", choices=list(attach.STATES), default="present"),
    connection_info=dict(type="dict", options=dict(
        driver_volume_type=dict(type="str", required=True, choices=sorted(attach.DRIVERS)),
        data=dict(type="dict", default={}, options=DATA_OPTIONS),
    )),
    device=dict(type="str"),
    bus=dict(type="str", choices=["virtio", "scsi", "sata"], default="virtio"),
    boot_index=dict(type="int"),
    iscsi_initiator=dict(type="str", choices=["auto", "host", "qemu"], default="auto"),
    connect_timeout=dict(type="int", default=10),
    detach_timeout=dict(type="int", default=30),
)


def main():
    clock = StepClock()
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_if=[("state", "present", ["connection_info"])])
    try:
        result = attach.run(module.params, check_mode=module.check_mode)
    except (NimbusError, OSError) as err:
        module.fail_json(**clock.stamp(failure(err, "volume_attach")))
    except Exception as err:  # an unexpected library error or a bug: one message naming the step, not a traceback
        module.fail_json(msg="volume_attach: unexpected %s: %s" % (type(err).__name__, err), failed_step="volume_attach",
                         reschedule=False, exception=traceback.format_exc())
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**clock.stamp(result))


if __name__ == "__main__":
    main()
