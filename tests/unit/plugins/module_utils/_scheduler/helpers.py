# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Small builders for host states and request specs in the scheduler's unit tests."""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import HostState
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.request_spec import RequestSpec

BASE = {"hostname": "h", "total_usable_ram_mb": 4096, "total_usable_disk_gb": 100, "vcpus_total": 4}
FLAVOR = {"vcpus": 1, "memory_mb": 1024, "root_gb": 10}


def host(index=0, **fields):
    return HostState.from_dict(dict(BASE, hostname=fields.pop("hostname", "h%d" % index), **fields), index)


def spec(count=1, image=None, hints=None, **flavor):
    return RequestSpec(dict(FLAVOR, **flavor), image=image, hints=hints, count=count,
                       instance_uuids=["00000000-0000-4000-8000-%012d" % i for i in range(count)],
                       project_id=flavor.pop("project_id", None) if "project_id" in flavor else None)
