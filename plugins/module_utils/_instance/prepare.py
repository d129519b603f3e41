# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Claim, lay out the disks and write the domain XML of several servers on one host in one module run.

nova-compute builds all of a host's instances in one service process. Ansible starts one process per
module task instead, about 0.5 CPU-s each on the lab machines, so create_server.yml claims and lays out
the disks (and, when asked, writes the domain XML) of all the servers placed on a hypervisor in one
run, and their builds start from these results. Each server gets exactly what instance_claim,
instance_disks and domain_xml would give it (the same functions), in the order given, so each claim
counts the ones before it; the host is probed for the XML once per virt type and machine type. A
server whose claim is refused or whose disks or XML fail keeps nothing on the host and is reported;
the others go on.

With ``domain_state`` it also defines each prepared server's domain and brings it to that state, as the
domain step does (the same function), starting the servers in parallel threads: a start waits mostly on
QEMU and libvirtd, not on this process. A server whose domain step fails keeps nothing either (its
domain, disks and claim are removed again).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import validate_seconds
from ansible_collections.nimbus.compute.plugins.module_utils._domain import lifecycle, xml_builder
from ansible_collections.nimbus.compute.plugins.module_utils._instance import claim, disks
from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import validate_flavor
from ansible_collections.nimbus.compute.plugins.module_utils._instance.owner import qemu_owner

STEP = "instance_prepare"
# The instance_disks options a server may carry, as the module names them (disks.plan_request's keywords).
DISK_OPTIONS = {"config_drive": "config_drive_enabled", "name": "name", "meta_data": "meta_data",
                "user_data": "user_data", "network_data": "network_data", "ephemeral_format": "ephemeral_format"}


# The domain_xml options a server's ``domain`` may carry (the rest comes from the server and the host).
DOMAIN_OPTIONS = ("image", "kernel", "ramdisk", "owner", "virt_type")
# The states the domain step can bring a newly prepared server to (the server role's server_state).
DOMAIN_STATES = ("defined", "running", "paused", "shutdown")
# Starts at once on one host: each is mostly QEMU starting up; more would only queue in libvirtd.
MAX_PARALLEL_STARTS = 8


@dataclass
class PreparedServer:
    instance_uuid: str
    flavor: dict
    disks: disks.DisksRequest
    domain: xml_builder.CheckedDomain | None = None


def check(instances, instances_path, libvirt_uri="qemu:///system", domain_state=None):
    """Every server checked and its disks planned before anything changes; a bad one fails them all."""
    if not isinstance(instances, list):
        raise ValidationError("instances must be a list of servers", step=STEP)
    if domain_state is not None and domain_state not in DOMAIN_STATES:
        raise ValidationError("domain_state %r is not one of %s" % (domain_state, ", ".join(DOMAIN_STATES)), step=STEP)
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
            domain = _check_domain(server, planned, instances_path, libvirt_uri)
        except ValidationError as exc:
            raise ValidationError("%s: %s" % (what, exc.msg), step=exc.step) from None
        if planned.instance_uuid in seen:
            raise ValidationError("%s: the same server is listed twice" % what, step=STEP)
        if domain_state is not None and domain is None:
            raise ValidationError("%s: domain_state %s needs the server's domain (its XML) to define" % (what, domain_state),
                                  step=STEP)
        seen.add(planned.instance_uuid)
        checked.append(PreparedServer(planned.instance_uuid, flavor, planned, domain))
    return checked


def _check_domain(server, planned, instances_path, libvirt_uri):
    """The server's domain_xml request checked, or None when it asks for no XML (no ``domain``)."""
    domain = server.get("domain")
    if domain is None:
        return None
    if not isinstance(domain, dict):
        raise ValidationError("domain must be a dict of %s" % ", ".join(DOMAIN_OPTIONS), step=xml_builder.STEP)
    params = {k: v for k, v in domain.items() if k in DOMAIN_OPTIONS and v is not None}
    params.update(instance_uuid=planned.instance_uuid, instances_path=instances_path, flavor=server.get("flavor"),
                  name=server.get("name"), disks=[d.contract() for d in planned.disks], libvirt_uri=libvirt_uri)
    return xml_builder.check_params(params)


def prepare(instances, instances_path, *, libvirt_uri="qemu:///system", ratios=None, reserved=None, totals=None,
            check_mode=False, owner=None, domain_state=None, start_timeout=60.0):
    """The module result: ``instances`` holds one result per server, in the order given."""
    servers = check(instances, instances_path, libvirt_uri, domain_state)
    if domain_state is not None:
        validate_seconds(start_timeout, "start_timeout", STEP)
    ratios, reserved, totals = claim.capacity_rules(libvirt_uri, ratios, reserved, totals)
    if not servers:
        return {"changed": False, "instances": [], "failed_instances": []}  # libvirt is not even asked
    # Read once for all the servers: the totals do not change between claims, the used amounts do.
    host = claim.host_totals(instances_path, libvirt_uri, totals.get("memory_mb"), totals.get("disk_gb"),
                             totals.get("vcpus"))
    owner = None if check_mode else (owner or qemu_owner())
    # In check mode nothing is recorded, so each claim counts the ones before it from here instead.
    pending = {} if check_mode else None
    probes = {}  # the host probe for the XML, once per probe_key
    results = [_prepare_one(server, instances_path, host, ratios, reserved, check_mode, owner, pending, probes)
               for server in servers]
    if domain_state is not None:
        _bring_up(servers, results, instances_path, libvirt_uri, domain_state, start_timeout, check_mode, pending)
    return {
        "changed": any(r["changed"] for r in results),
        "instances": results,
        "failed_instances": [r["instance_uuid"] for r in results if r["failed"]],
    }


def _prepare_one(server, instances_path, host, ratios, reserved, check_mode, owner, pending, probes):
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
        failed = _failed(uuid, clock.stamp(failure(err, disks.STEP)))
        # ensure_planned removed the files it made; the claim made here goes too, so nothing is left.
        _undo(server, instances_path, claimed, [], check_mode, pending, failed)
        return failed
    clock.stamp(laid_out)
    result = {"instance_uuid": uuid, "failed": False, "changed": claimed["changed"] or laid_out["changed"],
              "claim": claimed, "disks": laid_out}
    if server.domain is None:
        return result
    clock = StepClock()
    try:
        key = server.domain.probe_key()
        if key not in probes:
            probes[key] = xml_builder.probe_for(server.domain, check_mode)
        written = xml_builder.write_checked(server.domain, check_mode=check_mode, host=probes[key])
    except (NimbusError, OSError) as err:
        failed = _failed(uuid, clock.stamp(failure(err, xml_builder.STEP)))
        _undo(server, instances_path, claimed, laid_out["created"], check_mode, pending, failed)
        return failed
    result["xml"] = clock.stamp(written)
    result["changed"] = result["changed"] or written["changed"]
    return result


def _bring_up(servers, results, instances_path, libvirt_uri, state, start_timeout, check_mode, pending):
    """The domain step for every server prepared here, in parallel; a server whose step fails is undone."""
    ready = [index for index, result in enumerate(results) if not result["failed"]]
    if not ready:
        return
    params = {"state": state, "libvirt_uri": libvirt_uri, "instances_path": instances_path, "start_timeout": start_timeout}

    def bring_up(index):
        result, progress, clock = results[index], {}, StepClock()
        try:
            done = lifecycle.run(dict(params, uuid=result["instance_uuid"], xml=result["xml"]["xml"]),
                                 check_mode=check_mode, progress=progress)
        except Exception as err:  # a thread's error is this server's failure, not the batch's
            return False, clock.stamp(_domain_failure(err)), progress
        return True, clock.stamp(done), progress

    with ThreadPoolExecutor(max_workers=min(len(ready), MAX_PARALLEL_STARTS)) as pool:
        outcomes = list(pool.map(bring_up, ready))
    for index, (ok, outcome, progress) in zip(ready, outcomes, strict=True):
        result, server = results[index], servers[index]
        if ok:
            result["domain"] = outcome
            result["changed"] = result["changed"] or outcome["changed"]
            continue
        failed = _failed(server.instance_uuid, outcome)
        # Ours to remove: a domain this call defined, or any domain of a server whose claim this run made.
        undefine = progress.get("defined") or result["claim"]["created"]
        _undo(server, instances_path, result["claim"], result["disks"]["created"], check_mode, pending, failed,
              undefine=dict(params, uuid=server.instance_uuid, state="absent") if undefine else None)
        results[index] = failed


def _domain_failure(err):
    if isinstance(err, (NimbusError, OSError)):
        return failure(err, lifecycle.STEP, retryable=True)
    return {"msg": "%s: %s" % (lifecycle.STEP, err), "failed_step": lifecycle.STEP, "reschedule": True}


def _undo(server, instances_path, claimed, created_files, check_mode, pending, failed, undefine=None):
    """Remove the domain (``undefine``: the domain step's parameters), the disk files and the claim this run
    made for a server that failed after its claim."""
    uuid = server.instance_uuid
    if pending is not None:
        pending.pop(uuid, None)
    if check_mode:
        return
    problems = []
    if undefine is not None:
        try:
            lifecycle.run(undefine)
        except (NimbusError, OSError) as exc:
            problems.append(_rollback_problem(exc, lifecycle.STEP))
    if created_files:
        try:
            disks.remove(uuid, instances_path, files=created_files)
        except (NimbusError, OSError) as exc:
            problems.append(_rollback_problem(exc, disks.STEP))
    if claimed["created"]:  # a claim that was already there belongs to an older server: it stays
        try:
            claim.release(uuid, instances_path)
        except (NimbusError, OSError) as exc:
            problems.append(_rollback_problem(exc, claim.STEP))
    if problems:
        failed["rollback_failed"] = problems


def _rollback_problem(exc, step):
    """A rollback step that failed, as the server role's result lists it."""
    return {"step": step, "msg": failure(exc, step)["msg"]}


def _failed(uuid, failed):
    return dict(failed, instance_uuid=uuid, failed=True, changed=False)
