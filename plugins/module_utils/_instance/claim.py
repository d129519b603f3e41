# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The claim on the chosen host: re-check RAM, disk and vCPUs under the host lock.

The scheduler decided from facts that may be stale; here each resource must satisfy Nova's former
RamFilter / DiskFilter / CoreFilter rule

    requested <= total * allocation_ratio - reserved - used

where ``used`` sums the claims recorded in every ``<uuid>/instance.json`` on the host. The claim
is written to the server's journal while the host lock is held, so N+1 parallel claims for N
slots let exactly N through.
"""

from __future__ import annotations

import math
import os

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import JOURNAL_NAME, Journal, JournalError
from ansible_collections.nimbus.compute.plugins.module_utils._common.libvirt_uri import validate_libvirt_uri
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import MAX_INT, validate_number
from ansible_collections.nimbus.compute.plugins.module_utils._instance import layout
from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import requested_disk_mb, validate_flavor
from ansible_collections.nimbus.compute.plugins.module_utils._instance.owner import qemu_owner

STEP = layout.STEP_CLAIM
RESOURCES = ("memory_mb", "disk_mb", "vcpus")
# The module's defaults (Nova's scheduler defaults, 512 MiB kept for the host).
DEFAULT_RATIOS = {"memory_mb": 1.0, "disk_mb": 1.0, "vcpus": 4.0}
DEFAULT_RESERVED = {"memory_mb": 512, "disk_mb": 0, "vcpus": 0}


# The modules' capacity options (doc fragment nimbus.compute.capacity), with Nova's defaults.
CAPACITY_ARGS = dict(
    ram_allocation_ratio=dict(type="float", default=DEFAULT_RATIOS["memory_mb"]),
    disk_allocation_ratio=dict(type="float", default=DEFAULT_RATIOS["disk_mb"]),
    cpu_allocation_ratio=dict(type="float", default=DEFAULT_RATIOS["vcpus"]),
    reserved_host_memory_mb=dict(type="int", default=DEFAULT_RESERVED["memory_mb"]),
    reserved_host_disk_mb=dict(type="int", default=DEFAULT_RESERVED["disk_mb"]),
    reserved_host_cpus=dict(type="int", default=DEFAULT_RESERVED["vcpus"]),
    total_memory_mb=dict(type="int"),
    total_disk_gb=dict(type="int"),
    total_vcpus=dict(type="int"),
)


def capacity_from_params(params):
    """The ``ratios``, ``reserved`` and ``totals`` keywords of claim() from the CAPACITY_ARGS options."""
    return {
        "ratios": {"memory_mb": params["ram_allocation_ratio"], "disk_mb": params["disk_allocation_ratio"],
                   "vcpus": params["cpu_allocation_ratio"]},
        "reserved": {"memory_mb": params["reserved_host_memory_mb"], "disk_mb": params["reserved_host_disk_mb"],
                     "vcpus": params["reserved_host_cpus"]},
        "totals": {"memory_mb": params["total_memory_mb"], "disk_gb": params["total_disk_gb"],
                   "vcpus": params["total_vcpus"]},
    }


class ClaimRefused(NimbusError):
    """The host cannot hold the server: the orchestration reschedules to an alternate."""

    step = STEP
    retryable = True

    def __init__(self, msg, resources):
        super().__init__(msg)
        self.resources = resources

    def result(self):
        return dict(super().result(), resources=self.resources)


def requested(flavor):
    return {"memory_mb": flavor["memory_mb"], "disk_mb": requested_disk_mb(flavor), "vcpus": flavor["vcpus"]}


def host_totals(instances_path, libvirt_uri, memory_mb=None, disk_gb=None, vcpus=None):
    """Totals given as options win; otherwise libvirt getInfo() and the instances_path filesystem."""
    totals = {"memory_mb": memory_mb, "disk_mb": None if disk_gb is None else disk_gb * 1024, "vcpus": vcpus}
    if memory_mb is None or vcpus is None:
        try:
            import libvirt

            conn = libvirt.openReadOnly(libvirt_uri)
            try:
                info = conn.getInfo()  # [model, memory MiB, cpus, ...]
            finally:
                conn.close()
        except ImportError:
            raise NimbusError("libvirt-python is needed to read host totals (or give them as options)", step=STEP)
        except Exception as exc:  # libvirt.libvirtError, without importing it at module load
            raise NimbusError("cannot read host totals from %s: %s" % (libvirt_uri, exc), step=STEP, retryable=True)
        if memory_mb is None:
            totals["memory_mb"] = int(info[1])
        if vcpus is None:
            totals["vcpus"] = int(info[2])
    if disk_gb is None:
        probe = instances_path
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        st = os.statvfs(probe)
        totals["disk_mb"] = st.f_blocks * st.f_frsize // (1 << 20)
    return totals


def host_claims(instances_path, exclude=None):
    """``{uuid: claim}`` for every server with a claim in its instance.json on this host."""
    claims = {}
    try:
        entries = list(os.scandir(instances_path))
    except FileNotFoundError:
        return claims
    for entry in entries:
        if entry.name == exclude or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            paths.validate_uuid(entry.name)
        except ValidationError:
            continue  # _base, locks, foreign dirs
        journal_path = os.path.join(entry.path, JOURNAL_NAME)
        # Fail closed: a claim we cannot read or count could hide used capacity, so a corrupt neighbour
        # journal refuses every claim on the host until it is repaired (the message names the file).
        # Retryable: the request is fine and another host can take it.
        try:
            journal = Journal(entry.path, step=STEP)
        except JournalError as exc:
            raise NimbusError("cannot read claims on this host: %s" % exc.msg, step=STEP, retryable=True)
        except OSError as exc:
            raise NimbusError("cannot read claims in %s: %s" % (journal_path, exc.strerror or exc), step=STEP, retryable=True)
        claim = journal.step(STEP).get("claim")
        if claim:
            claims[entry.name] = _countable(claim, journal_path)
    return claims


def _countable(claim, journal_path):
    """A recorded claim as numbers, or an error naming the journal (fail closed)."""
    if not isinstance(claim, dict):
        raise NimbusError("cannot read claims in %s: the instance_claim claim is a JSON %s, not an object"
                          % (journal_path, type(claim).__name__), step=STEP, retryable=True)
    counted = dict(claim)
    for res in RESOURCES:
        value = claim.get(res, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise NimbusError("cannot read claims in %s: %s is %r, not a number >= 0" % (journal_path, res, value),
                              step=STEP, retryable=True)
        counted[res] = value
    return counted


def check(request, totals, used, ratios, reserved):
    """Per resource: the numbers and whether it fits; Nova's rule, one line each."""
    report = {}
    for res in RESOURCES:
        limit = totals[res] * ratios[res] - reserved[res]
        free = limit - used[res]
        report[res] = {
            "requested": request[res],
            "total": totals[res],
            "allocation_ratio": ratios[res],
            "reserved": reserved[res],
            "used": used[res],
            "limit": limit,
            "free": free,
            "fits": request[res] <= free,
        }
    return report


def _validate_numbers(ratios, reserved, totals):
    # Finite too: a NaN ratio makes every "fits" false and reads as a full host (a reschedule, not an error).
    for res in RESOURCES:
        if ratios[res] is None:
            raise ValidationError("%s allocation ratio must be greater than 0" % res, step=STEP)
        validate_number(ratios[res], "%s allocation ratio" % res, STEP, positive=True)
        if reserved[res] is None:
            raise ValidationError("reserved %s must not be negative" % res, step=STEP)
        validate_number(reserved[res], "reserved %s" % res, STEP, minimum=0, maximum=MAX_INT)
        if totals[res] is not None:
            validate_number(totals[res], "host total %s" % res, STEP, positive=True, maximum=MAX_INT)


def claim(instance_uuid, flavor, instances_path, *, libvirt_uri="qemu:///system", ratios=None, reserved=None,
          totals=None, check_mode=False, owner=None):
    """Claim the flavor's resources for the server; returns the module result (without msg)."""
    flavor = validate_flavor(flavor, step=STEP)
    instance_uuid, inst_dir = layout.resolve_instance_dir(instances_path, instance_uuid, STEP)
    ratios, reserved, totals = capacity_rules(libvirt_uri, ratios, reserved, totals)
    host = host_totals(instances_path, libvirt_uri, totals.get("memory_mb"), totals.get("disk_gb"), totals.get("vcpus"))
    return claim_on_host(instance_uuid, inst_dir, flavor, instances_path, host=host, ratios=ratios, reserved=reserved,
                         check_mode=check_mode, owner=owner)


def capacity_rules(libvirt_uri, ratios=None, reserved=None, totals=None):
    """The allocation ratios, reserved amounts and given host totals, with defaults, checked."""
    totals = dict(totals or {})
    ratios = dict(DEFAULT_RATIOS, **(ratios or {}))
    reserved = dict(DEFAULT_RESERVED, **(reserved or {}))
    _validate_numbers(ratios, reserved, {"memory_mb": totals.get("memory_mb"),
                                         "disk_mb": totals.get("disk_gb"), "vcpus": totals.get("vcpus")})
    validate_libvirt_uri(libvirt_uri, STEP)
    return ratios, reserved, totals


def claim_on_host(instance_uuid, inst_dir, flavor, instances_path, *, host, ratios, reserved, check_mode=False, owner=None,
                  pending=None):
    """The claim of a checked server (``flavor`` from validate_flavor) against the host's totals ``host``.

    ``pending`` ({uuid: claim}): claims a check-mode run of several servers would have recorded before this one.
    """
    request = requested(flavor)
    record = dict(request, flavor=flavor["name"])
    if check_mode:
        return _decide(instance_uuid, inst_dir, instances_path, request=request, record=record, host=host,
                       ratios=ratios, reserved=reserved, owner=None, pending=pending)
    owner = owner or qemu_owner()
    lock = layout.instance_lock(instances_path, instance_uuid, STEP)
    with lock, layout.host_lock(instances_path, STEP):
        try:
            return _decide(instance_uuid, inst_dir, instances_path, request=request, record=record, host=host,
                           ratios=ratios, reserved=reserved, owner=owner)
        except BaseException:
            # Nothing of the server exists on this host: a refusal (or an unreadable neighbour journal)
            # leaves no lock file either.
            if not os.path.isdir(inst_dir):
                layout.unlink_lock(lock)
            raise


def _decide(instance_uuid, inst_dir, instances_path, *, request, record, host, ratios, reserved, owner, pending=None):
    others = dict(host_claims(instances_path, exclude=instance_uuid), **(pending or {}))
    used = {res: sum(c[res] for c in others.values()) for res in RESOURCES}
    report = check(request, host, used, ratios, reserved)
    # created: no claim for this server existed on this host, so the server is new here and a rollback of
    # this run may release the claim. A changed claim (another flavor: a resize) is not created: the server
    # is older than this run, and its rollback must not touch it.
    result = {"changed": False, "created": False, "instance_dir": inst_dir, "claim": record, "resources": report,
              "reschedule": False}
    current = Journal(inst_dir, step=STEP).step(STEP).get("claim") if os.path.isdir(inst_dir) else None
    refused = [res for res in RESOURCES if not report[res]["fits"]]
    if current == record:
        return result  # the same server claimed the same flavor before: already counted
    if refused:
        detail = ", ".join("%s: requested %s, free %s" % (res, report[res]["requested"], _num(report[res]["free"]))
                           for res in refused)
        raise ClaimRefused("host cannot claim %s for instance %s (%s)" % ("/".join(refused), instance_uuid, detail), report)
    result["changed"] = True
    result["created"] = not current
    if owner is None:
        return result  # check mode
    created = layout.ensure_instance_dir(inst_dir, owner)
    Journal(inst_dir).record(STEP, created=[inst_dir] if created else [], claim=record)
    return result


def _num(value):
    return int(value) if float(value).is_integer() else round(value, 2)


def release(instance_uuid, instances_path, check_mode=False):
    """Drop the claim; remove the dir when nothing else of the server is left in it."""
    instance_uuid, inst_dir = layout.resolve_instance_dir(instances_path, instance_uuid, STEP)
    result = {"changed": False, "instance_dir": inst_dir, "kept_because": []}
    if not os.path.isdir(inst_dir):
        return result
    if check_mode:
        journal = Journal(inst_dir)
        result["changed"] = STEP in journal.data["steps"]
        return result
    lock = layout.instance_lock(instances_path, instance_uuid, STEP)
    with lock, layout.host_lock(instances_path, STEP):
        journal = Journal(inst_dir)
        if STEP in journal.data["steps"]:
            journal.forget(STEP)
            result["changed"] = True
        kept = layout.remove_if_unused(inst_dir, journal, lock_path=lock.path)
        result["kept_because"] = kept
        if not kept:
            result["changed"] = True
    return result
