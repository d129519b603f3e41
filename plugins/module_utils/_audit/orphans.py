# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Find what a killed or half-rolled-back build left behind on one hypervisor.

A server is whole when its libvirt domain ``instance-<uuid>`` and its ``<instances_path>/<uuid>/``
directory both exist. Anything else is an orphan, in the words of the issue:

- ``domains_without_dir``: a domain named after a UUID that has no instance directory;
- ``dirs_without_domain``: an instance directory (claim, disks ...) with no domain;
- ``stale_locks``: ``locks/<uuid>.lock`` of a server that has neither;
- ``stale_temp``: our temporary files (``.nimbus-*``) in instances_path or an instance dir.

A build in progress also has a dir without a domain for a few seconds: ``min_age`` skips entries
younger than that. Nothing here changes anything.
"""

from __future__ import annotations

import os
import re
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._common.libvirt_uri import validate_libvirt_uri
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import validate_seconds
from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import Connection
from ansible_collections.nimbus.compute.plugins.module_utils._instance.layout import TMP_PREFIX

STEP = "host_audit"
_DOMAIN = re.compile(r"^instance-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\Z")
_LOCK = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.lock\Z")
# virDomainState numbers -> the words the domain module uses.
_STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed",
           7: "pmsuspended"}


def libvirt_domains(libvirt_uri):
    """{uuid: state} of the domains named ``instance-<uuid>`` (others are not ours)."""
    found = {}
    with Connection(libvirt_uri, step=STEP) as conn:
        for dom in conn.listAllDomains(0):
            match = _DOMAIN.match(dom.name())
            if match:
                found[match.group(1)] = _STATES.get(dom.state()[0], "unknown")
    return found


def _age(path, now):
    try:
        return round(now - os.lstat(path).st_mtime, 1)
    except FileNotFoundError:
        return None


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def scan(instances_path, domains, min_age=0.0, now=None):
    """The audit of ``instances_path`` against ``domains`` ({uuid: state}); pure file-system work."""
    paths.validate_instances_path(instances_path, step=STEP)
    if min_age < 0:
        raise ValidationError("min_age must not be negative", step=STEP)
    now = time.time() if now is None else now
    entries = _listdir(instances_path)
    dirs = [e for e in entries if paths.CANONICAL_UUID.match(e) and os.path.isdir(os.path.join(instances_path, e))]
    report = {
        "servers": sorted(u for u in dirs if u in domains),
        "domains_without_dir": [
            {"uuid": u, "domain_name": paths.domain_name(u), "state": domains[u]} for u in sorted(domains) if u not in dirs
        ],
        "dirs_without_domain": [],
        "stale_locks": [],
        "stale_temp": [],
    }
    for uuid in dirs:
        inst_dir = os.path.join(instances_path, uuid)
        age = _age(inst_dir, now)
        for name in _listdir(inst_dir):
            temp = os.path.join(inst_dir, name)
            if name.startswith(TMP_PREFIX) and (_age(temp, now) or 0) >= min_age:
                report["stale_temp"].append(temp)
        if uuid in domains or (age or 0) < min_age:
            continue
        steps = sorted(Journal(inst_dir).data.get("steps", {}))
        report["dirs_without_domain"].append({
            "uuid": uuid, "path": inst_dir, "age": age, "steps": steps,
            "claim": "instance_claim" in steps, "files": _listdir(inst_dir),
        })
    for name in entries:
        temp = os.path.join(instances_path, name)
        if name.startswith(TMP_PREFIX) and (_age(temp, now) or 0) >= min_age:
            report["stale_temp"].append(temp)
    locks = paths.locks_dir(instances_path)
    for name in _listdir(locks):
        match = _LOCK.match(name)
        lock = os.path.join(locks, name)
        if match and match.group(1) not in dirs and match.group(1) not in domains and (_age(lock, now) or 0) >= min_age:
            report["stale_locks"].append(lock)
    kinds = ("domains_without_dir", "dirs_without_domain", "stale_locks", "stale_temp")
    report["orphans"] = sum(len(report[k]) for k in kinds)
    return report


def audit(instances_path, libvirt_uri, min_age=0.0, now=None):
    validate_seconds(min_age, "min_age", STEP, positive=False)
    validate_libvirt_uri(libvirt_uri, STEP)
    return scan(instances_path, libvirt_domains(libvirt_uri), min_age=min_age, now=now)
