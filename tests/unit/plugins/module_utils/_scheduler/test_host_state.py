# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Host-state and request validation: documented defaults, clear errors before anything is scheduled."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import HostState, host_states
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.request_spec import RequestSpec

from .helpers import BASE, spec


def test_defaults_are_novas():
    h = HostState.from_dict(dict(BASE, instances=["A0000000-0000-4000-8000-000000000000"]))
    assert (h.cpu_allocation_ratio, h.ram_allocation_ratio, h.disk_allocation_ratio) == (4.0, 1.0, 1.0)
    assert h.free_ram_mb == 4096 and h.free_disk_mb == 100 * 1024 and h.vcpus_used == 0
    assert h.availability_zone == "nova" and h.num_instances == 1 and h.host == "h"
    assert h.service == {"disabled": False, "forced_down": False, "last_seen_up": None}
    assert h.to_dict()["instances"] == ["A0000000-0000-4000-8000-000000000000"]


@pytest.mark.parametrize(("change", "message"), [
    ({"vcpus_total": None}, "missing required field"),
    ({"colour": "red"}, "unknown field"),
    ({"free_ram_mb": "lots"}, "free_ram_mb must be a number"),
    ({"vcpus_used": 1.5}, "must be a whole number"),
    ({"cpu_allocation_ratio": -1}, "must not be negative"),
    ({"total_usable_ram_mb": -5}, "must not be negative"),
    ({"aggregates": ["x"]}, "each aggregate must be a dict"),
    ({"service": {"last_seen_up": "yesterday"}}, "not an ISO 8601 time"),
    ({"hostname": ""}, "hostname must be a non-empty string"),
    ({"hypervisor_version": -5}, "hypervisor_version must not be negative"),
])
def test_bad_host_states(change, message):
    with pytest.raises(SchedulerInputError, match=message):
        HostState.from_dict(dict(BASE, **change))


def test_hostnames_must_be_unique():
    with pytest.raises(SchedulerInputError, match="appears twice"):
        host_states([BASE, BASE])


@pytest.mark.parametrize(("flavor", "kwargs", "message"), [
    ({"vcpus": 0, "memory_mb": 512}, {}, "vcpus must be >= 1"),
    ({"vcpus": 1, "memory_mb": -1}, {}, "memory_mb must be >= 16"),
    ({"vcpus": 1, "memory_mb": "1k"}, {}, "must be a whole number"),
    ({"vcpus": 1, "memory_mb": 512, "root_gb": -1}, {}, "root_gb must be >= 0"),
    ({"vcpus": 1}, {}, "memory_mb is required"),
    ({"vcpus": 1, "memory_mb": 512}, {"count": 0}, "count must be a whole number >= 1"),
    ({"vcpus": 1, "memory_mb": 512}, {"instance_uuids": ["x"]}, "not a canonical UUID"),
    ({"vcpus": 1, "memory_mb": 512}, {"hints": {"group": {"policy": "together"}}}, "group policy must be one of"),
    ({"vcpus": 1, "memory_mb": 512}, {"hints": {"group": {"policy": "affinity", "rules": {"max_server_per_host": 2}}}},
     "needs policy anti-affinity"),
])
def test_bad_requests(flavor, kwargs, message):
    with pytest.raises(SchedulerInputError, match=message):
        RequestSpec(flavor, **kwargs)


def test_request_basics():
    s = spec(count=2, root_gb=10, ephemeral_gb=5, swap=512, hints={"group": {"policy": "anti-affinity"}})
    assert s.disk_mb == 15 * 1024 + 512
    assert s.instance_group.members == s.instance_uuids  # new servers join the group
    assert len(RequestSpec({"vcpus": 1, "memory_mb": 64}, count=3).instance_uuids) == 3  # generated
