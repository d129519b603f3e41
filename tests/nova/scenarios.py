# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Random host sets and requests fed to both Nova (through nova_runner.py) and our engine.

Shared by the equivalence tests and bench/scheduler.py. A "job" is plain JSON, so the same input
crosses into .venv-nova's process unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOVA_PYTHON = os.path.join(ROOT, ".venv-nova", "bin", "python")
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nova_runner.py")

DEFAULT_FILTERS = [
    "RamFilter", "DiskFilter", "CoreFilter", "AvailabilityZoneFilter", "ComputeFilter", "ComputeCapabilitiesFilter",
    "ImagePropertiesFilter", "ServerGroupAntiAffinityFilter", "ServerGroupAffinityFilter",
]
ALL_WEIGHERS = [
    "RAMWeigher", "DiskWeigher", "CPUWeigher", "IoOpsWeigher", "NumInstancesWeigher", "HypervisorVersionWeigher",
    "BuildFailureWeigher", "ServerGroupSoftAffinityWeigher", "ServerGroupSoftAntiAffinityWeigher", "MetricsWeigher",
    "PCIWeigher",
]
EXTRA_FILTERS = ["AggregateInstanceExtraSpecsFilter", "AggregateMultiTenancyIsolation", "NumInstancesFilter", "IoOpsFilter"]
AGGREGATES = [
    {"name": "ssd", "metadata": {"ssd": "true", "ram_weight_multiplier": "2.0"}},
    {"name": "tenants", "metadata": {"filter_tenant_id": "p1,p2"}},
    {"name": "az1", "metadata": {"availability_zone": "az1"}},
    {"name": "gpu", "metadata": {"gpu": "yes", "io_ops_weight_multiplier": "-3.5"}},
]
SUPPORTED = [["x86_64", "qemu", "hvm"], ["x86_64", "kvm", "hvm"], ["aarch64", "qemu", "hvm"], ["i686", "qemu", "hvm"]]


def server_uuid(n, prefix=0):
    return "%08x-0000-4000-8000-%012x" % (prefix, n)


def random_host(rng, i, now, rich, pool):
    ram = rng.choice([0, 2048, 16384, 65536, 131072, 262144])
    disk = rng.choice([0, 20, 500, 1000, 2000])
    cpus = rng.choice([0, 4, 16, 64])
    host = {
        "hostname": "node%05d" % i,
        "total_usable_ram_mb": ram,
        "free_ram_mb": rng.randint(-1024, ram),
        "total_usable_disk_gb": disk,
        "free_disk_mb": rng.randint(0, disk * 1024),
        "vcpus_total": cpus,
        "vcpus_used": rng.randint(0, cpus * 3),
        "num_io_ops": rng.randint(0, 4),
        "hypervisor_version": rng.choice([7002000, 8000000, 9000000]),
        "failed_builds": rng.choice([0] * 12 + [1, 2]),
        "ram_allocation_ratio": rng.choice([0.5, 1.0, 1.0, 1.5]),
        "disk_allocation_ratio": rng.choice([0.9, 1.0, 1.0, 2.0]),
        "cpu_allocation_ratio": rng.choice([0.5, 1.0, 4.0, 16.0]),
    }
    if rich:
        instances = rng.sample(pool, rng.randint(0, 3))
        host.update({
            "instances": instances,
            "num_instances": len(instances) + rng.randint(0, 50),
            "availability_zone": rng.choice(["nova", "nova", "az2"]),
            "aggregates": rng.sample(AGGREGATES, rng.randint(0, 2)),
            "supported_instances": rng.sample(SUPPORTED, rng.randint(0, 2)),
            "hypervisor_type": rng.choice(["QEMU", "QEMU", "KVM"]),
            "metrics": {"cpu.percent": rng.randint(0, 100), "mem.free": rng.randint(0, 1000)},
            "pci_stats": [{"count": rng.randint(0, 4)}] if rng.random() < 0.3 else [],
            "cpu_info": {"arch": rng.choice(["x86_64", "aarch64"])},
            "service": {
                "disabled": rng.random() < 0.05,
                "forced_down": rng.random() < 0.03,
                "last_seen_up": now - (3600 if rng.random() < 0.05 else rng.randint(0, 20)),
            },
        })
    return host


def random_job(rng, n_hosts, count, rich=True, seed=None):
    """One request over ``n_hosts`` random hosts; ``rich`` turns on aggregates, groups, hints and images."""
    now = time.time()
    pool = [server_uuid(n, 1) for n in range(12)]
    hosts = [random_host(rng, i, now, rich, pool) for i in range(n_hosts)]
    flavor = {"name": "f", "vcpus": rng.choice([1, 2, 4, 8]), "memory_mb": rng.choice([512, 2048, 8192, 32768]),
              "root_gb": rng.choice([0, 1, 20, 80]), "ephemeral_gb": rng.choice([0, 0, 10]), "swap": rng.choice([0, 0, 512])}
    request = {"flavor": flavor, "instance_uuids": [server_uuid(n) for n in range(count)], "hints": {}}
    filters, weighers = list(DEFAULT_FILTERS), list(ALL_WEIGHERS)
    multipliers, options = {}, {"seed": seed if seed is not None else rng.randint(0, 10**6)}
    if rich:
        specs = {}
        if rng.random() < 0.3:
            specs["capabilities:hypervisor_type"] = rng.choice(["s== QEMU", "<or> KVM <or> QEMU", "KVM"])
        if rng.random() < 0.3:
            specs["vcpus_total"] = rng.choice([">= 16", "<= 16", "== 64"])
        if rng.random() < 0.2:
            specs["capabilities:cpu_info:arch"] = "s== x86_64"
        if rng.random() < 0.3:
            specs["aggregate_instance_extra_specs:ssd"] = "true"
        flavor["extra_specs"] = specs
        props = {}
        if rng.random() < 0.4:
            props["hw_architecture"] = rng.choice(["x86_64", "aarch64", "i686"])
        if rng.random() < 0.3:
            props["img_hv_type"] = rng.choice(["qemu", "kvm"])
        if rng.random() < 0.2:
            props["img_hv_requested_version"] = rng.choice([">= 8.0", "< 9.0", ">= 7.2, < 9"])
        request["image"] = {"id": "img", "disk_format": "qcow2", "properties": props}
        request["project_id"] = rng.choice(["p1", "p3"])
        if rng.random() < 0.3:
            request["availability_zone"] = rng.choice(["nova", "az1", "az2"])
        if rng.random() < 0.5:
            policy = rng.choice(["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"])
            group = {"policy": policy, "members": rng.sample(pool, rng.randint(0, 3))}
            if policy == "anti-affinity" and rng.random() < 0.5:
                group["rules"] = {"max_server_per_host": rng.randint(1, 3)}
            request["hints"]["group"] = group
        for hint, name in (("same_host", "SameHostFilter"), ("different_host", "DifferentHostFilter")):
            if rng.random() < 0.15:
                request["hints"][hint] = rng.sample(pool, rng.randint(1, 2))
                filters.append(name)
        filters += [f for f in EXTRA_FILTERS if rng.random() < 0.3]
        for option in ("ram_weight_multiplier", "cpu_weight_multiplier", "num_instances_weight_multiplier",
                       "soft_affinity_weight_multiplier", "hypervisor_version_weight_multiplier"):
            if rng.random() < 0.2:
                low = 0.0 if option.startswith("soft") else -2.0  # Nova: soft affinity multipliers >= 0
                multipliers[option] = rng.choice([low, 0.0, 0.5, 3.0])
        if rng.random() < 0.3:
            options["metrics_weight_setting"] = {"cpu.percent": -1.0, "mem.free": 0.5}
        options["host_subset_size"] = rng.choice([1, 1, 1, 2, 3])
        options["max_attempts"] = rng.choice([1, 3, 3, 5])
        options["max_io_ops_per_host"] = rng.choice([8, 3])
        options["max_instances_per_host"] = rng.choice([50, 20])
    return {"hosts": hosts, "request": request, "filters": filters, "weighers": weighers,
            "multipliers": multipliers, "options": options}


def ours(job, states=None):
    """Run our engine on a job; returns (answer like nova_runner's, seconds spent in schedule())."""
    from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.engine import Scheduler
    from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import NoValidHost
    from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import host_states
    from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.request_spec import RequestSpec

    req = job["request"]
    if job.get("defaults"):  # no filters, weighers or multipliers given: our defaults against Nova's
        scheduler = Scheduler(**job["options"])
    else:
        scheduler = Scheduler(filters=job["filters"], weighers=job["weighers"], weight_multipliers=job["multipliers"],
                              **job["options"])
    spec = RequestSpec(req["flavor"], image=req.get("image"), hints=req.get("hints"), count=len(req["instance_uuids"]),
                       instance_uuids=req["instance_uuids"], project_id=req.get("project_id") or "p",
                       availability_zone=req.get("availability_zone"))
    states = states if states is not None else host_states(job["hosts"])
    start = time.perf_counter()
    try:
        placements = scheduler.schedule(states, spec)
    except NoValidHost:
        return {"hosts": None, "alternates": [], "error": "NoValidHost"}, time.perf_counter() - start
    seconds = time.perf_counter() - start
    alternates = [p["alternates"] for p in placements] if scheduler.config["max_attempts"] > 1 else []
    return {"hosts": [p["host"] for p in placements], "alternates": alternates, "error": None}, seconds


def default_job(job):
    """The same hosts and request with nothing configured: both sides use their own defaults."""
    request = dict(job["request"])
    request["hints"] = {k: v for k, v in request.get("hints", {}).items() if k == "group"}  # no hint filters
    return {"hosts": job["hosts"], "request": request, "defaults": True, "options": {"seed": job["options"]["seed"]}}


class NovaRunner:
    """One long-lived .venv-nova process that answers jobs line by line (Nova imports take seconds)."""

    def __init__(self):
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([NOVA_PYTHON, RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)

    def defaults(self):
        """Nova's defaults from its CONF: enabled_filters, weighers with multipliers, scheduler options."""
        return self.run({"defaults_query": True})

    def run(self, job):
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("nova_runner.py exited (code %s)" % self.proc.poll())
        answer = json.loads(line)
        if "exception" in answer:
            raise RuntimeError("Nova raised " + answer["exception"])
        return answer

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
