# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
name: schedule
short_description: Choose hypervisors for new servers with Nova's filters and weighers
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Places O(count) servers of one O(flavor) and O(image) on hypervisors the way OpenStack Nova's FilterScheduler does
    (Nova 34) - filters remove hosts that cannot take the server, weighers rank the rest, the best host wins.
  - Host states come from the C(nimbus_hypervisor) fact (see M(nimbus.compute.hypervisor_info)) of every host in the
    inventory group O(hypervisor_group), or directly from O(hosts). The placement's C(host) is the inventory hostname.
  - Servers are placed one after another; each placement consumes RAM, disk, vCPUs and an instance slot on the chosen
    host's in-memory state (Nova's consume_from_request), so the result equals N sequential Nova selections.
  - Facts may be stale; the claim step on the chosen host re-checks resources under a host lock.
  - "Fails with a clear message when no host is left, naming the filter that removed the last candidates, for example
    C(No valid host: RAM filter (RamFilter) removed 7 of 7 hosts)."
options:
  flavor:
    description:
      - The flavor, C({name, vcpus, memory_mb, root_gb, ephemeral_gb, swap, extra_specs}); C(swap) is in MiB.
      - C(extra_specs) are read by ComputeCapabilitiesFilter (C(capabilities:<field>), operators C(>=), C(s==), C(<in>),
        C(<or>) ...), AggregateInstanceExtraSpecsFilter and NUMATopologyFilter (C(hw:numa_nodes)).
    type: dict
    required: true
  image:
    description: The image, C({id, disk_format, properties}), with Nova's property names (C(hw_architecture), C(img_hv_type),
      C(hw_vm_mode), C(img_hv_requested_version) ...).
    type: dict
  count:
    description: How many servers to place (1 to 10000).
    type: int
    default: 1
  instance_uuids:
    description: The servers' UUIDs, O(count) of them and each different; generated (random UUID4) when omitted.
    type: list
    elements: str
  hints:
    description:
      - Scheduler hints. C(group) is a server group C({name, policy, members, rules}) with policy C(affinity),
        C(anti-affinity), C(soft-affinity) or C(soft-anti-affinity); the new servers join its members.
      - C(same_host) / C(different_host) take server UUIDs, C(query) a JMESPath rule evaluated on each host's fields.
        Their filters are enabled automatically when the hint is given.
    type: dict
  project_id:
    description: The project (tenant) the servers belong to, for AggregateMultiTenancyIsolation.
    type: str
  availability_zone:
    description: Only hosts in this availability zone (host field C(availability_zone) or aggregate metadata).
    type: str
  explain:
    description: Add C(explain) to each placement, how many hosts each filter removed and the top weighed hosts with
      every weigher's contribution.
    type: bool
    default: false
  hosts:
    description: Host states to use instead of the inventory's facts (dicts with the C(nimbus_hypervisor) fields).
    type: list
    elements: dict
  hypervisor_group:
    description: Inventory group whose hosts' C(nimbus_hypervisor) facts are read when O(hosts) is not given.
    type: str
    default: hypervisors
  filters:
    description:
      - Filter names, in order. The default is Nova 34's Placement checks and default enabled_filters -
        C(RamFilter), C(DiskFilter), C(CoreFilter), C(AvailabilityZoneFilter), C(ComputeFilter),
        C(ComputeCapabilitiesFilter), C(ImagePropertiesFilter), C(ServerGroupAntiAffinityFilter),
        C(ServerGroupAffinityFilter).
      - Also available - C(AggregateInstanceExtraSpecsFilter), C(AggregateMultiTenancyIsolation), C(SameHostFilter),
        C(DifferentHostFilter), C(NumInstancesFilter), C(IoOpsFilter), C(NUMATopologyFilter), C(JMESPathFilter).
    type: list
    elements: str
  weighers:
    description:
      - Weigher names; the default is all of them, in the order Nova 34 sums them - C(NumInstancesWeigher),
        C(MetricsWeigher), C(CPUWeigher), C(BuildFailureWeigher), C(ServerGroupSoftAffinityWeigher),
        C(ServerGroupSoftAntiAffinityWeigher), C(RAMWeigher), C(DiskWeigher), C(PCIWeigher), C(IoOpsWeigher),
        C(HypervisorVersionWeigher). A given list is summed in its order.
    type: list
    elements: str
  weight_multipliers:
    description:
      - Multipliers by weigher name (C(RAMWeigher)) or Nova option name (C(ram_weight_multiplier)). Defaults are Nova's -
        RAM, disk, CPU, hypervisor version, soft (anti-)affinity, metrics and PCI 1.0, I/O ops -1.0, instance count 0.0,
        build failures 1000000.0. A host's aggregate metadata can override them, as in Nova.
    type: dict
  host_subset_size:
    description: Pick at random among this many best hosts (Nova's host_subset_size).
    type: int
    default: 1
  seed:
    description: Seed for that random pick, for reproducible results.
    type: int
  max_attempts:
    description: Each placement lists O(max_attempts) - 1 alternates, the next best hosts that passed the filters.
    type: int
    default: 3
  service_down_time:
    description:
      - ComputeFilter drops hosts whose C(service.last_seen_up) is older than this many seconds (Nova's
        service_down_time).
      - M(nimbus.compute.hypervisor_info) sets C(last_seen_up) to the time it gathered, so schedule within this time of
        gathering or raise it; when stale facts make ComputeFilter remove every host, the error says so and names
        their age.
    type: int
    default: 60
  max_instances_per_host:
    description: NumInstancesFilter's limit.
    type: int
    default: 50
  max_io_ops_per_host:
    description: IoOpsFilter's limit.
    type: int
    default: 8
  rules:
    description: JMESPath rules every host must satisfy (enables C(JMESPathFilter)), for example
      C(free_ram_mb >= `4096` && contains(traits, 'CUSTOM_SSD')).
    type: list
    elements: str
  metrics_weight_setting:
    description: MetricsWeigher's C({metric name - ratio}) settings; empty means the weigher has no effect.
    type: dict
  metrics_required:
    description: Fail when a host lacks a metric named in O(metrics_weight_setting) (else it gets a very low weight).
    type: bool
    default: true
  image_properties_default_architecture:
    description: Architecture ImagePropertiesFilter assumes for images without C(hw_architecture).
    type: str
notes:
  - Nova checks RAM, disk, vCPU and availability zone in Placement; here they are filters with the rules of Nova's
    former RamFilter, DiskFilter, CoreFilter and AvailabilityZoneFilter (requested <= total x ratio - used).
"""

EXAMPLES = r"""
- name: Place three web servers apart from each other
  ansible.builtin.set_fact:
    placements: "{{ query('nimbus.compute.schedule', flavor=flavor, image=image, count=3,
                          hints={'group': {'name': 'web', 'policy': 'anti-affinity'}}, explain=true) }}"

- name: Schedule from host states gathered another way
  ansible.builtin.debug:
    msg: "{{ query('nimbus.compute.schedule', hosts=my_hosts, flavor={'vcpus': 2, 'memory_mb': 4096, 'root_gb': 20}) }}"
"""

RETURN = r"""
_raw:
  description: One placement per server, in order.
  type: list
  elements: dict
  contains:
    instance_uuid:
      description: The server's UUID.
      type: str
    host:
      description: The chosen host.
      type: str
    alternates:
      description: Next best hosts for a reschedule.
      type: list
      elements: str
    weight:
      description: The chosen host's total weight.
      type: float
    explain:
      description: With O(explain), C(filters) (name, hosts in, removed) and C(weighed) (top hosts, weight, per-weigher parts).
      type: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.yaml import yaml_load
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.lookup import LookupBase

from ansible_collections.nimbus.compute.plugins.plugin_utils._scheduler import schedule

_OPTIONS = yaml_load(DOCUMENTATION)["options"]
_BOOL_OPTIONS = tuple(name for name, spec in _OPTIONS.items() if spec.get("type") == "bool")


def _check_keywords(kwargs):
    """Ansible ignores an undocumented keyword (count misspelt as cont) and reads any string but its boolean
    words as false for a bool option (explain='maybe'): both are refused here, naming the option."""
    unknown = sorted(set(kwargs) - set(_OPTIONS))
    if unknown:
        raise AnsibleLookupError("nimbus.compute.schedule: unknown option(s) %s; known: %s"
                                 % (", ".join(unknown), ", ".join(sorted(_OPTIONS))))
    for name in _BOOL_OPTIONS:
        if kwargs.get(name) is not None:
            try:
                boolean(kwargs[name], strict=True)
            except TypeError:
                raise AnsibleLookupError("nimbus.compute.schedule: %s must be true or false, got %r" % (name, kwargs[name]))


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleLookupError("nimbus.compute.schedule takes only keyword options (flavor=..., count=...), no terms")
        _check_keywords(kwargs)
        self.set_options(var_options=variables, direct=kwargs)
        return schedule(self.get_options(), variables)
