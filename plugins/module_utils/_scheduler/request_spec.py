# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""RequestSpec: the flavor, image and hints of one scheduling request, validated up front."""

from __future__ import annotations

import uuid as uuidlib

from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import MAX_INT
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.extra_specs_ops import problem
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.image_properties import (
    parse_version_predicate,
)

GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
MIN_RAM_MB = 16  # RELIABILITY.md: flavor sanity
KNOWN_HINTS = ("group", "same_host", "different_host", "query")
GROUP_RULES = ("max_server_per_host",)
# One request places at most this many servers (Nova's API caps a multi-create by quota; each placement here
# costs time and memory, and count 10**7 took 74 s and 2 GB).
MAX_COUNT = 10000
# Extra-spec scopes whose values are operator requirements (ComputeCapabilitiesFilter,
# AggregateInstanceExtraSpecsFilter); None is an unscoped key.
_OPERATOR_SCOPES = (None, "capabilities", "aggregate_instance_extra_specs")
# Image properties ImagePropertiesFilter compares with a host's supported_instances.
_IMAGE_NAMES = ("hw_architecture", "img_hv_type", "hw_vm_mode")


def _whole(flavor, key, minimum, default=None, what="flavor"):
    value = flavor.get(key, default)
    if value is None:
        raise SchedulerInputError("%s %s is required" % (what, key))
    if isinstance(value, bool):
        raise SchedulerInputError("%s %s must be a whole number, got %r" % (what, key, value))
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise SchedulerInputError("%s %s must be a whole number, got %r" % (what, key, value))
    if number != value and str(number) != str(value).strip():
        raise SchedulerInputError("%s %s must be a whole number, got %r" % (what, key, value))
    if number < minimum:
        raise SchedulerInputError("%s %s must be >= %d, got %d" % (what, key, minimum, number))
    return number


def _uuid_list(value, name):
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SchedulerInputError("hint %s must be a server UUID or a list of them" % name)
    return [str(v) for v in value]


def _positive_rule(value):
    """Nova's positive_integer: a whole number >= 1, as an int or a string of digits (not 2.7, true or inf)."""
    # isascii: isdigit() also takes "²", which int() refuses.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise SchedulerInputError("group rule max_server_per_host must be a whole number from 1 to %d, got %r"
                                  % (MAX_INT, value if not isinstance(value, int) or value < 10**15 else "a huge number"))
    return value


def _check_extra_specs(extra_specs):
    """Refuse what Nova's API refuses, before filtering: a malformed operator requirement or maxphysaddr_bits
    would otherwise only show as "No valid host: <filter> removed N of N hosts"."""
    for key, value in extra_specs.items():
        scope = key.split(":", 1)[0] if ":" in key else None
        if scope in _OPERATOR_SCOPES:
            why = problem(value)
            if why:
                raise SchedulerInputError("flavor extra spec %s=%r: %s" % (key, value, why))
    if "hw:maxphysaddr_bits" in extra_specs:
        _whole(extra_specs, "hw:maxphysaddr_bits", 1, what="flavor extra spec")


def _check_image_properties(props):
    for key in _IMAGE_NAMES:
        value = props.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SchedulerInputError("image property %s must be a non-empty string, got %r" % (key, value))
    if props.get("img_hv_requested_version") is not None:
        parse_version_predicate(props["img_hv_requested_version"])


class InstanceGroup:
    """A server group as the group filters and weighers see it (Nova's InstanceGroup)."""

    __slots__ = ("hosts", "members", "name", "policy", "rules", "uuid")

    def __init__(self, data):
        if not isinstance(data, dict):
            raise SchedulerInputError("hint group must be a dict {name, policy, members, rules}")
        policy = data.get("policy")
        if policy not in GROUP_POLICIES:
            raise SchedulerInputError("group policy must be one of %s, got %r" % (", ".join(GROUP_POLICIES), policy))
        self.uuid = str(data.get("uuid") or "")
        self.name = str(data.get("name") or "")
        self.policy = policy
        self.members = list(dict.fromkeys(_uuid_list(data.get("members"), "group.members")))
        hosts = data.get("hosts")
        if hosts is not None and (not isinstance(hosts, (list, tuple)) or not all(isinstance(h, str) for h in hosts)):
            raise SchedulerInputError("hint group.hosts must be a list of host names, got %r" % (hosts,))
        self.hosts = list(hosts) if hosts is not None else None
        rules = data.get("rules")
        rules = {} if rules is None else rules
        if not isinstance(rules, dict):
            raise SchedulerInputError("group rules must be a dict {max_server_per_host}, got %r" % (rules,))
        unknown = sorted(set(map(str, rules)) - set(GROUP_RULES))
        if unknown:
            raise SchedulerInputError("unknown group rule(s) %s; known: %s" % (", ".join(unknown), ", ".join(GROUP_RULES)))
        if "max_server_per_host" in rules:
            rules = dict(rules, max_server_per_host=_positive_rule(rules["max_server_per_host"]))
            if policy != "anti-affinity":
                raise SchedulerInputError("group rule max_server_per_host needs policy anti-affinity, got %r" % policy)
        self.rules = rules

    @property
    def policies(self):
        return [self.policy]


class RequestSpec:
    """Nova's RequestSpec, reduced to what the filters and weighers read."""

    __slots__ = (
        "availability_zone",
        "ephemeral_gb",
        "extra_specs",
        "flavor_name",
        "image_id",
        "image_properties",
        "instance_group",
        "instance_uuid",
        "instance_uuids",
        "memory_mb",
        "project_id",
        "query",
        "root_gb",
        "scheduler_hints",
        "swap",
        "vcpus",
    )

    def __init__(self, flavor, image=None, hints=None, count=1, instance_uuids=None, project_id=None,
                 availability_zone=None):
        if not isinstance(flavor, dict):
            raise SchedulerInputError("flavor must be a dict {name, vcpus, memory_mb, root_gb, ephemeral_gb, swap, extra_specs}")
        self.flavor_name = str(flavor.get("name", ""))
        self.vcpus = _whole(flavor, "vcpus", 1)
        self.memory_mb = _whole(flavor, "memory_mb", MIN_RAM_MB)
        self.root_gb = _whole(flavor, "root_gb", 0, 0)
        self.ephemeral_gb = _whole(flavor, "ephemeral_gb", 0, 0)
        self.swap = _whole(flavor, "swap", 0, 0)
        extra_specs = flavor.get("extra_specs") or {}
        if not isinstance(extra_specs, dict):
            raise SchedulerInputError("flavor extra_specs must be a dict")
        self.extra_specs = {str(k): str(v) for k, v in extra_specs.items()}
        _check_extra_specs(self.extra_specs)
        image = image or {}
        if not isinstance(image, dict) or not isinstance(image.get("properties") or {}, dict):
            raise SchedulerInputError("image must be a dict {id, disk_format, properties}")
        self.image_id = image.get("id")
        self.image_properties = dict(image.get("properties") or {})
        _check_image_properties(self.image_properties)
        bits = self.image_properties.get("hw_maxphysaddr_bits")
        if bits is not None:
            self.image_properties["hw_maxphysaddr_bits"] = _whole(self.image_properties, "hw_maxphysaddr_bits", 1,
                                                                  what="image property")
        self.project_id = None if project_id is None else str(project_id)
        self.availability_zone = availability_zone or None
        hints = hints or {}
        if not isinstance(hints, dict):
            raise SchedulerInputError("hints must be a dict")
        unknown = sorted(set(hints) - set(KNOWN_HINTS))
        if unknown:
            raise SchedulerInputError("unknown hint(s) %s; known: %s" % (", ".join(unknown), ", ".join(KNOWN_HINTS)))
        self.scheduler_hints = {
            "same_host": _uuid_list(hints.get("same_host"), "same_host"),
            "different_host": _uuid_list(hints.get("different_host"), "different_host"),
        }
        self.query = hints.get("query")
        if self.query is not None and (not isinstance(self.query, str) or not self.query.strip()):
            raise SchedulerInputError("hint query must be a non-empty JMESPath expression string, got %r" % (self.query,))
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SchedulerInputError("count must be a whole number >= 1, got %r" % (count,))
        if count > MAX_COUNT:
            raise SchedulerInputError("count is %s, at most %d servers per request"
                                      % (count if count < 10**15 else "huge", MAX_COUNT))
        if instance_uuids is None:
            instance_uuids = [str(uuidlib.uuid4()) for _n in range(count)]
        if len(instance_uuids) != count:
            raise SchedulerInputError("instance_uuids has %d entries for count %d" % (len(instance_uuids), count))
        for value in instance_uuids:
            try:
                canonical = str(uuidlib.UUID(str(value)))
            except ValueError:
                canonical = None
            if canonical != str(value).lower():
                raise SchedulerInputError("instance UUID %r is not a canonical UUID" % (value,))
        self.instance_uuids = [str(u).lower() for u in instance_uuids]
        seen = set()
        for value in self.instance_uuids:
            if value in seen:
                raise SchedulerInputError("instance UUID %s appears more than once in instance_uuids" % value)
            seen.add(value)
        self.instance_uuid = self.instance_uuids[0]
        group = hints.get("group")
        if group is not None and not group:  # {} or "": refused, not ignored
            raise SchedulerInputError("hint group must be a dict {name, policy, members, rules}, got %r" % (group,))
        self.instance_group = InstanceGroup(group) if group is not None else None
        if self.instance_group is not None:
            # Nova adds a multi-create request's servers to the group before scheduling.
            self.instance_group.members += [u for u in self.instance_uuids if u not in self.instance_group.members]

    @property
    def disk_mb(self):
        """Former DiskFilter's request: (root + ephemeral) GiB + swap MiB."""
        return 1024 * (self.root_gb + self.ephemeral_gb) + self.swap

    def get_scheduler_hint(self, name):
        return self.scheduler_hints.get(name)

    def fill_group_hosts(self, hosts):
        """Nova's group.hosts: the hosts where the group's members run (unless given)."""
        group = self.instance_group
        if group is not None and group.hosts is None:
            members = set(group.members)
            group.hosts = [h.hostname for h in hosts if members.intersection(h.instances)]
