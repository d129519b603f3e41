# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Claim and lay out the disks of several servers on one host in one module run.

nova-compute builds all of a host's instances in one service process. Ansible starts one process per
module task instead, about 0.5 CPU-s each on the lab machines, so create_server.yml claims and lays out
the disks of all the servers placed on a hypervisor in one run, and their builds start from these
results. Each server gets exactly what instance_claim and instance_disks would give it (the same
functions), in the order given, so each claim counts the ones before it. A server whose claim is
refused or whose disks fail keeps nothing on the host and is reported; the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._instance import claim, disks
from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import validate_flavor
from ansible_collections.nimbus.compute.plugins.module_utils._instance.owner import qemu_owner

STEP = "instance_prepare"
# The instance_disks options a server may carry, as the module names them (disks.plan_request's keywords).
DISK_OPTIONS = {"config_drive": "config_drive_enabled", "name": "name", "meta_data": "meta_data",
                "user_data": "user_data", "network_data": "network_data", "ephemeral_format": "ephemeral_format"}


@dataclass
class PreparedServer:
    instance_uuid: str
    flavor: dict
    disks: disks.DisksRequest


def check(instances, instances_path):
    """Every server checked and its disks planned before anything changes; a bad one fails them all."""
    if not isinstance(instances, list):
        raise ValidationError("instances must be a list of servers", step=STEP)
    checked, seen = [], set()
    for index, server in enumerate(instances):
        if not isinstance(server, dict):
            raise ValidationError("instances[%d] must be a dict, got %r" % (index, server), step=STEP)
        what = "instances[%d] (%s)" % (index, server.get("instance_uuid"))
        try:
            flavor = validate_flavor(server.get("flavor"), step=claim.STEP)
            options = {DISK_OPTIONS[k]: v for k, v in server.items() if k in DISK_OPTIONS and v is not None}
            planned = disks.plan_request(server.get("instance_uuid"), instances_path, flavor, server.get("base_path"),
                                         **options)
        except ValidationError as exc:
            raise ValidationError("%s: %s" % (what, exc.msg), step=exc.step) from None
        if planned.instance_uuid in seen:
            raise ValidationError("%s: the same server is listed twice" % what, step=STEP)
        seen.add(planned.instance_uuid)
        checked.append(PreparedServer(planned.instance_uuid, flavor, planned))
    return checked


def prepare(instances, instances_path, *, libvirt_uri="qemu:///system", ratios=None, reserved=None, totals=None,
            check_mode=False, owner=None):
    """The module result: ``instances`` holds one result per server, in the order given."""
    servers = check(instances, instances_path)
    ratios, reserved, totals = claim.capacity_rules(libvirt_uri, ratios, reserved, totals)
    # Read once for all the servers: the totals do not change between claims, the used amounts do.
    host = claim.host_totals(instances_path, libvirt_uri, totals.get("memory_mb"), totals.get("disk_gb"),
                             totals.get("vcpus"))
    owner = None if check_mode else (owner or qemu_owner())
    # In check mode nothing is recorded, so each claim counts the ones before it from here instead.
    pending = {} if check_mode else None
    results = [_prepare_one(server, instances_path, host, ratios, reserved, check_mode, owner, pending)
               for server in servers]
    return {
        "changed": any(r["changed"] for r in results),
        "instances": results,
        "failed_instances": [r["instance_uuid"] for r in results if r["failed"]],
    }


def _prepare_one(server, instances_path, host, ratios, reserved, check_mode, owner, pending):
    uuid = server.instance_uuid
    clock = StepClock()
    try:
        claimed = claim.claim_on_host(uuid, server.disks.inst_dir, server.flavor, instances_path, host=host,
                                      ratios=ratios, reserved=reserved, check_mode=check_mode, owner=owner,
                                      pending=pending)
    except (NimbusError, OSError) as err:
        return _failed(uuid, clock.stamp(failure(err, claim.STEP)))
    clock.stamp(claimed)
    if pending is not None:
        pending[uuid] = claimed["claim"]
    clock = StepClock()
    try:
        laid_out = disks.ensure_planned(server.disks, check_mode=check_mode, owner=owner)
    except (NimbusError, OSError) as err:
        result = _failed(uuid, clock.stamp(failure(err, disks.STEP)))
        if pending is not None:
            pending.pop(uuid, None)
        # ensure_planned removed the files it made; the claim made here goes too, so nothing is left.
        if claimed["created"] and not check_mode:
            try:
                claim.release(uuid, instances_path)
            except (NimbusError, OSError) as exc:
                result["rollback_failed"] = [failure(exc, claim.STEP)["msg"]]
        return result
    clock.stamp(laid_out)
    return {"instance_uuid": uuid, "failed": False, "changed": claimed["changed"] or laid_out["changed"],
            "claim": claimed, "disks": laid_out}


def _failed(uuid, failed):
    return dict(failed, instance_uuid=uuid, failed=True, changed=False)
