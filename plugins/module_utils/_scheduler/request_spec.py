# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""RequestSpec: the flavor, image and hints of one scheduling request, validated up front."""

from __future__ import annotations

import uuid as uuidlib

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError

GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
MIN_RAM_MB = 16  # RELIABILITY.md: flavor sanity
KNOWN_HINTS = ("group", "same_host", "different_host", "query")


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
        rules = data.get("rules") or {}
        if not isinstance(rules, dict):
            raise SchedulerInputError("group rules must be a dict")
        if "max_server_per_host" in rules:
            try:
                rules = dict(rules, max_server_per_host=int(rules["max_server_per_host"]))
            except (TypeError, ValueError):
                raise SchedulerInputError("group rule max_server_per_host must be a whole number")
            if rules["max_server_per_host"] < 1 or policy != "anti-affinity":
                raise SchedulerInputError("max_server_per_host must be >= 1 and needs policy anti-affinity")
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
        image = image or {}
        if not isinstance(image, dict) or not isinstance(image.get("properties") or {}, dict):
            raise SchedulerInputError("image must be a dict {id, disk_format, properties}")
        self.image_id = image.get("id")
        self.image_properties = dict(image.get("properties") or {})
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
        if self.query is not None and not isinstance(self.query, str):
            raise SchedulerInputError("hint query must be a JMESPath expression string")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SchedulerInputError("count must be a whole number >= 1, got %r" % (count,))
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
        self.instance_uuid = self.instance_uuids[0]
        self.instance_group = InstanceGroup(hints["group"]) if hints.get("group") else None
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
