# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Runs OpenStack Nova's own scheduler classes on JSON input; executed by .venv-nova's python only.

Reads one JSON request per line on stdin and writes one JSON answer per line:
  {"hosts": [host-state dicts as the nimbus.compute scheduler takes them],
   "request": {"flavor", "image", "hints", "instance_uuids", "project_id", "availability_zone"},
   "filters": [names], "weighers": [names], "multipliers": {option: value},
   "options": {"seed", "host_subset_size", "max_attempts", "service_down_time", "max_instances_per_host",
               "max_io_ops_per_host", "metrics_weight_setting"}}
  -> {"hosts": [chosen host per server], "alternates": [[...] per server], "error": null | "NoValidHost",
      "seconds": time spent selecting (HostState and RequestSpec construction excluded)}

Nova's real classes do the work: HostFilterHandler/HostWeightHandler, every filter and weigher that Nova 34
still ships, SchedulerManager._get_sorted_hosts and _consume_selected_host. Nova 34 checks RAM, disk, vCPU and
the availability zone in Placement instead of filters; for those, the classes below restate Nova's former
RamFilter, DiskFilter, CoreFilter and AvailabilityZoneFilter as they were before their removal.
"""

import datetime
import json
import random
import resource
import sys
import time
import types

from nova import conf as nova_conf
from nova import objects

objects.register_all()

from nova.scheduler import filters as nova_filters
from nova.scheduler import weights as nova_weights
from nova.scheduler.filters import (
    affinity_filter,
    aggregate_instance_extra_specs,
    aggregate_multitenancy_isolation,
    compute_capabilities_filter,
    compute_filter,
    image_props_filter,
    io_ops_filter,
    num_instances_filter,
)
from nova.scheduler.filters import utils as filter_utils
from nova.scheduler.host_manager import HostState
from nova.scheduler.manager import SchedulerManager
from nova.scheduler.weights import affinity, compute, cpu, disk, hypervisor_version, io_ops, metrics, num_instances, pci, ram

CONF = nova_conf.CONF
CONF([], project="nova", default_config_files=[])


class RamFilter(nova_filters.BaseHostFilter):
    """Nova's former RamFilter (removed in Stein; Placement does this now)."""

    def host_passes(self, host_state, spec_obj):
        requested_ram = spec_obj.memory_mb
        free_ram_mb = host_state.free_ram_mb
        total_usable_ram_mb = host_state.total_usable_ram_mb
        if not total_usable_ram_mb >= requested_ram:
            return False
        memory_mb_limit = total_usable_ram_mb * host_state.ram_allocation_ratio
        used_ram_mb = total_usable_ram_mb - free_ram_mb
        usable_ram = memory_mb_limit - used_ram_mb
        return usable_ram >= requested_ram


class DiskFilter(nova_filters.BaseHostFilter):
    """Nova's former DiskFilter."""

    def host_passes(self, host_state, spec_obj):
        requested_disk = 1024 * (spec_obj.root_gb + spec_obj.ephemeral_gb) + spec_obj.swap
        free_disk_mb = host_state.free_disk_mb
        total_usable_disk_mb = host_state.total_usable_disk_gb * 1024
        if total_usable_disk_mb < requested_disk:
            return False
        disk_mb_limit = total_usable_disk_mb * host_state.disk_allocation_ratio
        used_disk_mb = total_usable_disk_mb - free_disk_mb
        usable_disk_mb = disk_mb_limit - used_disk_mb
        return usable_disk_mb >= requested_disk


class CoreFilter(nova_filters.BaseHostFilter):
    """Nova's former CoreFilter."""

    def host_passes(self, host_state, spec_obj):
        if not host_state.vcpus_total:
            return True
        instance_vcpus = spec_obj.vcpus
        vcpus_total = host_state.vcpus_total * host_state.cpu_allocation_ratio
        if instance_vcpus > host_state.vcpus_total:
            return False
        free_vcpus = vcpus_total - host_state.vcpus_used
        return free_vcpus >= instance_vcpus


class AvailabilityZoneFilter(nova_filters.BaseHostFilter):
    """Nova's former AvailabilityZoneFilter (today the Placement pre-filter)."""

    run_filter_once_per_request = True

    def host_passes(self, host_state, spec_obj):
        availability_zone = spec_obj.availability_zone
        if not availability_zone:
            return True
        metadata = filter_utils.aggregate_metadata_get_by_host(host_state, key="availability_zone")
        if "availability_zone" in metadata:
            return availability_zone in metadata["availability_zone"]
        return availability_zone == CONF.default_availability_zone


FILTERS = {
    "RamFilter": RamFilter,
    "DiskFilter": DiskFilter,
    "CoreFilter": CoreFilter,
    "AvailabilityZoneFilter": AvailabilityZoneFilter,
    "ComputeFilter": compute_filter.ComputeFilter,
    "ComputeCapabilitiesFilter": compute_capabilities_filter.ComputeCapabilitiesFilter,
    "ImagePropertiesFilter": image_props_filter.ImagePropertiesFilter,
    "ServerGroupAntiAffinityFilter": affinity_filter.ServerGroupAntiAffinityFilter,
    "ServerGroupAffinityFilter": affinity_filter.ServerGroupAffinityFilter,
    "AggregateInstanceExtraSpecsFilter": aggregate_instance_extra_specs.AggregateInstanceExtraSpecsFilter,
    "AggregateMultiTenancyIsolation": aggregate_multitenancy_isolation.AggregateMultiTenancyIsolation,
    "SameHostFilter": affinity_filter.SameHostFilter,
    "DifferentHostFilter": affinity_filter.DifferentHostFilter,
    "NumInstancesFilter": num_instances_filter.NumInstancesFilter,
    "IoOpsFilter": io_ops_filter.IoOpsFilter,
}

WEIGHERS = {
    "RAMWeigher": ram.RAMWeigher,
    "DiskWeigher": disk.DiskWeigher,
    "CPUWeigher": cpu.CPUWeigher,
    "IoOpsWeigher": io_ops.IoOpsWeigher,
    "NumInstancesWeigher": num_instances.NumInstancesWeigher,
    "HypervisorVersionWeigher": hypervisor_version.HypervisorVersionWeigher,
    "BuildFailureWeigher": compute.BuildFailureWeigher,
    "ServerGroupSoftAffinityWeigher": affinity.ServerGroupSoftAffinityWeigher,
    "ServerGroupSoftAntiAffinityWeigher": affinity.ServerGroupSoftAntiAffinityWeigher,
    "MetricsWeigher": metrics.MetricsWeigher,
    "PCIWeigher": pci.PCIWeigher,
}


def _time(value, now):
    if value is None:
        return now
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.UTC).replace(tzinfo=None)
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(datetime.UTC).replace(tzinfo=None)


def host_state(data, now):
    hs = HostState(data["hostname"], data["hostname"], "cell1")
    hs.total_usable_ram_mb = data["total_usable_ram_mb"]
    hs.free_ram_mb = data.get("free_ram_mb", data["total_usable_ram_mb"])
    hs.total_usable_disk_gb = data["total_usable_disk_gb"]
    hs.free_disk_mb = data.get("free_disk_mb", data["total_usable_disk_gb"] * 1024)
    hs.vcpus_total = data["vcpus_total"]
    hs.vcpus_used = data.get("vcpus_used", 0)
    hs.ram_allocation_ratio = float(data.get("ram_allocation_ratio", 1.0))
    hs.disk_allocation_ratio = float(data.get("disk_allocation_ratio", 1.0))
    hs.cpu_allocation_ratio = float(data.get("cpu_allocation_ratio", 4.0))
    aggregates = list(data.get("aggregates", []))
    if not any("availability_zone" in a.get("metadata", {}) for a in aggregates):
        # Nova knows a host's zone only through aggregate metadata.
        aggregates.append({"name": "az", "metadata": {"availability_zone": data.get("availability_zone", "nova")}})
    hs.aggregates = [objects.Aggregate(id=i, name=a.get("name", ""), metadata={k: str(v) for k, v in a["metadata"].items()})
                     for i, a in enumerate(aggregates)]
    instances = data.get("instances", [])
    hs.instances = {u: objects.Instance(uuid=u) for u in instances}
    hs.num_instances = data.get("num_instances", len(instances))
    hs.num_io_ops = data.get("num_io_ops", 0)
    hs.hypervisor_type = data.get("hypervisor_type", "QEMU")
    hs.hypervisor_version = data.get("hypervisor_version", 0)
    hs.supported_instances = [tuple(s) for s in data.get("supported_instances", [])]
    hs.failed_builds = data.get("failed_builds", 0)
    hs.metrics = [types.SimpleNamespace(name=k, value=v) for k, v in data.get("metrics", {}).items()]
    hs.pci_stats = types.SimpleNamespace(pools=data["pci_stats"]) if data.get("pci_stats") else None
    hs.cpu_info = data.get("cpu_info", {})
    hs.stats = data.get("stats", {})
    service = dict({"disabled": False, "forced_down": False}, **data.get("service", {}))
    service["last_seen_up"] = _time(service.get("last_seen_up"), now)
    service["created_at"] = service["last_seen_up"]
    hs.service = service
    return hs


def request_spec(req):
    flavor = req["flavor"]
    group = (req.get("hints") or {}).get("group")
    instance_group = None
    if group:
        members = list(dict.fromkeys(list(group.get("members", [])) + req["instance_uuids"]))
        instance_group = objects.InstanceGroup(
            uuid=group.get("uuid") or "00000000-0000-4000-8000-0000000000aa", policy=group["policy"],
            policies=[group["policy"]], members=members, hosts=list(group.get("hosts", [])),
            rules=dict(group.get("rules") or {}))
    hints = {k: v if isinstance(v, list) else [v]
             for k, v in (req.get("hints") or {}).items() if k in ("same_host", "different_host")}
    image = req.get("image") or {}
    return objects.RequestSpec(
        flavor=objects.Flavor(name=flavor.get("name", "f"), vcpus=flavor["vcpus"], memory_mb=flavor["memory_mb"],
                              root_gb=flavor.get("root_gb", 0), ephemeral_gb=flavor.get("ephemeral_gb", 0),
                              swap=flavor.get("swap", 0), extra_specs=dict(flavor.get("extra_specs") or {})),
        image=objects.ImageMeta.from_dict({"properties": dict(image.get("properties") or {})}),
        instance_group=instance_group, scheduler_hints=hints, project_id=req.get("project_id") or "p",
        availability_zone=req.get("availability_zone"), num_instances=len(req["instance_uuids"]),
        instance_uuid=req["instance_uuids"][0], ignore_hosts=None, force_hosts=None, force_nodes=None,
        pci_requests=None, numa_topology=None)


MULTIPLIER_OPTIONS = [
    "ram_weight_multiplier", "disk_weight_multiplier", "cpu_weight_multiplier", "io_ops_weight_multiplier",
    "num_instances_weight_multiplier", "hypervisor_version_weight_multiplier", "build_failure_weight_multiplier",
    "soft_affinity_weight_multiplier", "soft_anti_affinity_weight_multiplier", "pci_weight_multiplier",
]


# Scheduler options a job may set, and their CONF group (None: [DEFAULT]); unset ones keep Nova's defaults.
OPTION_GROUPS = {"host_subset_size": "filter_scheduler", "max_instances_per_host": "filter_scheduler",
                 "max_io_ops_per_host": "filter_scheduler", "service_down_time": None}
# What Nova 34 checks in Placement, restated as filters, before its enabled_filters.
RESOURCE_FILTERS = ["RamFilter", "DiskFilter", "CoreFilter", "AvailabilityZoneFilter"]


def configure(job):
    options = job.get("options", {})
    for name in MULTIPLIER_OPTIONS:  # one process serves many jobs: start each from Nova's defaults
        CONF.clear_override(name, group="filter_scheduler")
    CONF.clear_override("weight_multiplier", group="metrics")
    for name, value in (job.get("multipliers") or {}).items():
        if name == "metrics_weight_multiplier":
            CONF.set_override("weight_multiplier", value, group="metrics")
        else:
            CONF.set_override(name, value, group="filter_scheduler")
    for name, group in OPTION_GROUPS.items():
        if name in options:
            CONF.set_override(name, options[name], group=group)
        else:
            CONF.clear_override(name, group=group)
    setting = options.get("metrics_weight_setting") or {}
    CONF.set_override("weight_setting", ["%s=%s" % kv for kv in setting.items()], group="metrics")


def defaults():
    """Nova's own defaults, read from its CONF (no overrides): what our defaults are pinned against."""
    for name, group in OPTION_GROUPS.items():
        CONF.clear_override(name, group=group)
    weighers = nova_weights.HostWeightHandler().get_matching_classes(CONF.filter_scheduler.weight_classes)
    multipliers = {}
    for cls in weighers:
        weigher = cls()
        multipliers[cls.__name__] = weigher.weight_multiplier(HostState("h", "h", "cell1"))
    return {
        "enabled_filters": list(CONF.filter_scheduler.enabled_filters),
        "weighers": [cls.__name__ for cls in weighers],
        "multipliers": multipliers,
        "service_down_time": CONF.service_down_time,
        "max_io_ops_per_host": CONF.filter_scheduler.max_io_ops_per_host,
        "max_instances_per_host": CONF.filter_scheduler.max_instances_per_host,
        "host_subset_size": CONF.filter_scheduler.host_subset_size,
        "max_attempts": CONF.scheduler.max_attempts,
        "default_availability_zone": CONF.default_availability_zone,
    }


def nova_default_classes():
    """Filters and weighers as a default-configured Nova 34 runs them, from its CONF."""
    # As HostManager: enabled_filters are names looked up among available_filters (all of Nova's).
    available = {cls.__name__: cls for cls in
                 nova_filters.HostFilterHandler().get_matching_classes(CONF.filter_scheduler.available_filters)}
    filters = [FILTERS[name] for name in RESOURCE_FILTERS]
    filters += [available[name] for name in CONF.filter_scheduler.enabled_filters]
    weighers = nova_weights.HostWeightHandler().get_matching_classes(CONF.filter_scheduler.weight_classes)
    return filters, weighers


def schedule(job):
    configure(job)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    hosts = [host_state(h, now) for h in job["hosts"]]
    spec = request_spec(job["request"])
    if spec.instance_group is not None and not job["request"]["hints"]["group"].get("hosts"):
        members = set(spec.instance_group.members)
        spec.instance_group.hosts = [h.host for h in hosts if members.intersection(h.instances)]
    manager = types.SimpleNamespace(host_manager=types.SimpleNamespace(
        get_filtered_hosts=lambda hs, spec_obj, index: list(
            nova_filters.HostFilterHandler().get_filtered_objects(filters, hs, spec_obj, index) or []),
        get_weighed_hosts=lambda hs, spec_obj: nova_weights.HostWeightHandler().get_weighed_objects(weighers, hs, spec_obj),
    ))
    if job.get("defaults"):  # Nova's defaults from its CONF, not our names for them
        filter_classes, weigher_classes = nova_default_classes()
    else:
        filter_classes = [FILTERS[name] for name in job["filters"]]
        weigher_classes = [WEIGHERS[name] for name in job["weighers"]]
    filters = [cls() for cls in filter_classes]
    weighers = [cls() for cls in weigher_classes]
    options = job.get("options", {})
    random.seed(options.get("seed"))
    uuids = job["request"]["instance_uuids"]
    chosen, error = [], None
    start = time.perf_counter()
    for num, instance_uuid in enumerate(uuids):  # SchedulerManager._schedule
        spec.instance_uuid = instance_uuid
        hosts = SchedulerManager._get_sorted_hosts(manager, spec, hosts, num)
        if not hosts:
            error = "NoValidHost"
            break
        chosen.append(hosts[0])
        SchedulerManager._consume_selected_host(hosts[0], spec, instance_uuid=instance_uuid)
    alternates = []
    num_alts = options.get("max_attempts", CONF.scheduler.max_attempts) - 1
    if error is None and num_alts > 0:  # SchedulerManager._get_alternate_hosts
        if len(uuids) > 1:
            hosts = SchedulerManager._get_sorted_hosts(manager, spec, hosts, len(uuids) - 1)
        alts = [h.host for h in hosts if h not in chosen][:num_alts]
        alternates = [alts for _chosen in chosen]
    seconds = time.perf_counter() - start
    hosts = [h.host for h in chosen] if error is None else None  # Nova fails the whole request
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"hosts": hosts, "alternates": alternates, "error": error, "seconds": seconds, "maxrss_kb": maxrss_kb}


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            answer = defaults() if request.get("defaults_query") else schedule(request)
        except Exception as err:  # report, keep serving
            answer = {"exception": "%s: %s" % (type(err).__name__, err)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
