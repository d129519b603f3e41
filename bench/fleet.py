# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Create and delete 20 servers over the 3 lab hypervisors in one play, against one server alone.

    python bench/fleet.py [--count 20] [--state running|defined] [--forks 25]

Reports the wall time of each play, the time per server and where it goes (scheduling, the image play
that checks each image once per chosen host, then per server the time each step's modules ran on the
host: image cache, network, disks, XML, define, start, and the rest of the build, Ansible's own), the
sum of the single-server floor over all servers, and the two targets of the issue: scheduling < 1 % of
the total, and N servers < 3x one server. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import fleet

STEPS = ("validate", "claim", "image_cache", "network", "instance_disks", "domain_xml", "domain", "volumes", "start")


def images():
    subprocess.run([os.path.join(fleet.VENV_BIN, "python"), os.path.join(ROOT, "tests", "lab", "guest_image.py")],
                   check=True, capture_output=True, timeout=900)
    with open(os.path.join(ROOT, ".cache", "guest", "images.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def play(name, req, workdir, forks):
    """Wall seconds, CPU seconds (ansible-playbook, its workers and the module processes; not the libvirt
    daemons' or the guests': they are not children of this process) and the play's summary."""
    started, cpu_before = time.monotonic(), _children_cpu()
    proc, summary = fleet.run_playbook(name, fleet.INVENTORY, req, workdir, expect_rc=None, timeout=3600, forks=forks)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s" % (name, proc.stdout[-4000:] + proc.stderr[-2000:]))
    return wall, _children_cpu() - cpu_before, summary


def _slowest(summary):
    return max([s for s in (summary.get("image_cache_seconds") or {}).values() if s is not None] or [0.0])


def step_means(servers):
    return {step: statistics.mean(s["timings"].get(step, 0.0) for s in servers) for step in STEPS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--state", choices=["running", "defined"], default="running")
    parser.add_argument("--forks", type=int, default=25)
    args = parser.parse_args()
    lab = fleet.prepared()
    next(lab)
    recs = images()
    base = {"flavor": dict(fleet.TINY), "image": recs["nimbus_guest_image"], "kernel_image": recs["nimbus_guest_kernel"],
            "ramdisk_image": recs["nimbus_guest_ramdisk"], "state": args.state}
    with tempfile.TemporaryDirectory(prefix="nimbus-bench-fleet-") as workdir:
        # Warm every host's image cache first, so both runs measure builds, not the first download.
        warm = dict(base, name="bench-warm", count=3, hints={"group": {"name": "warm", "policy": "anti-affinity"}})
        play("create_server.yml", warm, workdir, args.forks)
        play("delete_server.yml", {"name": "bench-warm", "count": 3}, workdir, args.forks)

        one_wall, one_cpu, one = play("create_server.yml", dict(base, name="bench-one", count=1), workdir, args.forks)
        one_del, one_del_cpu, _unused = play("delete_server.yml", {"name": "bench-one", "count": 1}, workdir, args.forks)
        many_wall, many_cpu, many = play("create_server.yml", dict(base, name="bench-many", count=args.count), workdir,
                                         args.forks)
        many_del, many_del_cpu, _unused = play("delete_server.yml", {"name": "bench-many", "count": args.count}, workdir,
                                               args.forks)

    next(lab, None)  # empty the lab hypervisors again
    servers = many["servers"]
    failed = [s for s in servers if s["failed"]]
    hosts = {}
    for s in servers:
        hosts[s["host"]] = hosts.get(s["host"], 0) + 1
    one_server = one["servers"][0]
    floor = step_means([one_server])
    mean = step_means(servers)
    per_server = [s["seconds"] for s in servers]
    sched_pct = 100.0 * many["schedule_seconds"] / many_wall
    ratio = many_wall / one_wall

    print("nimbus.compute fleet benchmark: %d servers (%s) over %d hypervisors, forks %d, %d CPUs"
          % (args.count, args.state, len(fleet.hypervisors()), args.forks, os.cpu_count()))
    placement = ", ".join("%s=%d" % kv for kv in sorted(hosts.items()))
    down = ", ".join(sorted(many.get("down_hosts") or {})) or "none"
    print("placement: %s; failed: %d; down: %s" % (placement, len(failed), down))
    print()
    # cpu s: Ansible's processes and the module processes (what the CPUs are busy with besides the guests).
    print("%-16s %10s %8s %12s %12s" % ("play", "wall s", "cpu s", "per server s", "vs 1 server"))
    print("%-16s %10.1f %8.1f %12.1f %12s" % ("create 1", one_wall, one_cpu, one_server["seconds"], "1.00x"))
    many_row = ("create %d" % args.count, many_wall, many_cpu, statistics.mean(per_server), ratio)
    print("%-16s %10.1f %8.1f %12.1f %11.2fx" % many_row)
    print("%-16s %10.1f %8.1f %12s %12s" % ("delete 1", one_del, one_del_cpu, "", "1.00x"))
    print("%-16s %10.1f %8.1f %12s %11.2fx" % ("delete %d" % args.count, many_del, many_del_cpu, "", many_del / one_del))
    print("CPU seconds per extra server (create): %.2f" % ((many_cpu - one_cpu) / max(args.count - 1, 1)))
    print("sum of %d single-server floors: %.1f s (create %d in one play: %.1f s, %.1f%% of it)"
          % (args.count, args.count * one_wall, args.count, many_wall, 100.0 * many_wall / (args.count * one_wall)))
    print()
    print("%-16s %12s %14s" % ("step (mean s)", "1 server", "%d servers" % args.count))
    print("%-16s %12.4f %14.4f" % ("scheduling", one["schedule_seconds"], many["schedule_seconds"]))
    # create_server.yml checks each image once per chosen hypervisor before the builds (max over the hosts).
    print("%-16s %12.3f %14.3f" % ("image play", _slowest(one), _slowest(many)))
    for step in STEPS:
        print("%-16s %12.3f %14.3f" % (step, floor[step], mean[step]))
    # The steps are the modules' own time on the host; the rest of a build is Ansible's task handling,
    # module transport and Python start-up, and waiting for a fork.
    print("%-16s %12.3f %14.3f" % ("Ansible (rest)", one_server["seconds"] - sum(floor.values()),
                                   statistics.mean(per_server) - sum(mean.values())))
    print("%-16s %12.3f %14.3f" % ("build total", one_server["seconds"], statistics.mean(per_server)))
    print()
    print("targets: scheduling %.3f%% of the total (< 1%%: %s); %d servers take %.2fx one server (< 3x: %s)"
          % (sched_pct, sched_pct < 1.0, args.count, ratio, ratio < 3.0))
    print("fleet_%d create_s=%.1f one_s=%.1f ratio=%.2f schedule_pct=%.3f delete_s=%.1f create_cpu_s=%.1f failed=%d"
          % (args.count, many_wall, one_wall, ratio, sched_pct, many_del, many_cpu, len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
