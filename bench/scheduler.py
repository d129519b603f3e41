# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Scheduler benchmark: our engine vs OpenStack Nova 34's own filter and weigher classes, same input, same run.

For 100, 1,000 and 10,000 random hosts: one placement (count 1) and 1,000 placements (count 1000, Nova side one
selection per server as its SchedulerManager does). Nova runs in .venv-nova (tests/nova/setup_venv.sh) and gets the
same JSON. Times exclude building host states on both sides. Nova needs about a second per placement at 10,000 hosts,
so by default its 1,000-placement runs are timed over the first --nova-batch-prefix servers and scaled linearly (its
cost per server is flat: it filters and weighs every host for each one); --full runs all of them. Choices are compared
for every server Nova placed (and the alternates for count 1), so without --full only a prefix of each 1,000-server
run is checked: the table's "compared" column and the last line say how many servers that was. The last line is
machine-readable (LAST_LINE):
  speedup_10000_hosts single=<x> batch1000=<y> same_choices=<true|false> compared=<n> placements=<m>
same_choices covers the <n> servers compared, out of <m> that our engine placed over the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".collections"))
sys.path.insert(0, os.path.join(ROOT, "tests", "nova"))

import scenarios

FLAVOR = {"name": "m1.small", "vcpus": 1, "memory_mb": 1024, "root_gb": 10}
HARDWARE = [(65536, 1000, 32), (131072, 2000, 48), (262144, 4000, 64)]  # RAM MiB, disk GiB, CPUs


LAST_LINE = re.compile(r"^speedup_(?P<hosts>\d+)_hosts single=(?P<single>\d+\.\d) batch(?P<batch>\d+)=(?P<batch_speedup>\d+\.\d) "
                       r"same_choices=(?P<same_choices>true|false) compared=(?P<compared>\d+) placements=(?P<placements>\d+)$")


def last_line(hosts, single, batch, batch_speedup, same_choices, compared, placements):
    """The machine-readable summary line (see LAST_LINE)."""
    return ("speedup_%d_hosts single=%.1f batch%d=%.1f same_choices=%s compared=%d placements=%d"
            % (hosts, single, batch, batch_speedup, str(bool(same_choices)).lower(), compared, placements))


def parse_last_line(line):
    """The summary line's fields, typed; ValueError when the line does not have the format."""
    found = LAST_LINE.match(line.strip())
    if not found:
        raise ValueError("not a scheduler benchmark summary line: %r" % line)
    fields = found.groupdict()
    return {"hosts": int(fields["hosts"]), "single": float(fields["single"]), "batch": int(fields["batch"]),
            "batch_speedup": float(fields["batch_speedup"]), "same_choices": fields["same_choices"] == "true",
            "compared": int(fields["compared"]), "placements": int(fields["placements"])}


def fleet(n, seed=42):
    rng = random.Random(seed)
    hosts = []
    for i in range(n):
        ram, disk, cpus = rng.choice(HARDWARE)
        hosts.append({
            "hostname": "compute%05d" % i, "total_usable_ram_mb": ram, "free_ram_mb": rng.randint(ram // 4, ram),
            "total_usable_disk_gb": disk, "free_disk_mb": rng.randint(disk * 256, disk * 1024), "vcpus_total": cpus,
            "vcpus_used": rng.randint(0, cpus * 2), "num_io_ops": rng.choice([0, 0, 0, 1, 2]),
            "num_instances": rng.randint(0, 40), "hypervisor_version": rng.choice([7002000, 8000000, 9000000]),
            "failed_builds": 1 if rng.random() < 0.01 else 0,
        })
    return hosts


def job(hosts, count, seed=1):
    return {"hosts": hosts, "request": {"flavor": FLAVOR, "instance_uuids": [scenarios.server_uuid(i) for i in range(count)],
                                        "hints": {}},
            "filters": scenarios.DEFAULT_FILTERS, "weighers": scenarios.ALL_WEIGHERS, "multipliers": {},
            "options": {"seed": seed}}


def ours(j, repeat):
    from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import host_states

    best, answer = None, None
    for _attempt in range(repeat):
        states = host_states(j["hosts"])  # fresh: a run consumes resources
        answer, seconds = scenarios.ours(j, states)
        best = seconds if best is None else min(best, seconds)
    return answer, best


def nova(runner, j, repeat):
    best, answer = None, None
    for _attempt in range(repeat):
        answer = runner.run(j)
        best = answer["seconds"] if best is None else min(best, answer["seconds"])
    return answer, best


def rss_of_ours(n):
    """Peak RSS (MiB) of a fresh process that builds n host states and places 1,000 servers."""
    code = ("import sys, json, resource; sys.path[:0] = %r; import scheduler as b; "
            "j = b.job(b.fleet(%d), 1000); b.ours(j, 1); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
            % ([os.path.dirname(os.path.abspath(__file__))], n))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    return int(out.stdout.split()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--nova-batch-prefix", default="1000,100,20",
                        help="servers Nova places per size before scaling (one value per size)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--full", action="store_true", help="let Nova place every server (about 15 min at 10,000 hosts)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    prefixes = [int(p) for p in args.nova_batch_prefix.split(",")]
    if not os.path.exists(scenarios.NOVA_PYTHON):
        subprocess.run(["bash", os.path.join(ROOT, "tests", "nova", "setup_venv.sh")], check=True)
    runner = scenarios.NovaRunner()
    rows, same_all, ratios, compared, placed = [], True, {}, 0, 0
    print("%-7s %-6s %-12s %-12s %-9s %-8s %-10s %s"
          % ("hosts", "count", "ours (s)", "nova (s)", "speedup", "same", "compared", "note"))
    for size, prefix in zip(sizes, prefixes + prefixes[-1:] * len(sizes), strict=False):
        hosts = fleet(size)
        for count in (1, args.batch):
            j = job(hosts, count)
            mine, my_seconds = ours(j, 5 if count == 1 else 2)
            nova_count = count if (args.full or count == 1) else min(count, prefix)
            theirs, nova_seconds = nova(runner, job(hosts, nova_count), 3 if count == 1 else 1)
            note = ""
            if nova_count < count:
                note = "nova timed on %d servers, x%.0f" % (nova_count, count / nova_count)
                nova_seconds *= count / nova_count
            same = mine["error"] is None and theirs["error"] is None and mine["hosts"][:nova_count] == theirs["hosts"]
            if count == 1:
                same = same and mine["alternates"] == theirs["alternates"]
            same_all &= same
            compared += nova_count
            placed += count
            ratio = nova_seconds / my_seconds
            ratios[(size, count)] = ratio
            rows.append({"hosts": size, "count": count, "ours_s": my_seconds, "nova_s": nova_seconds, "speedup": ratio,
                         "same_choices": same, "nova_servers_timed": nova_count, "compared": nova_count})
            print("%-7d %-6d %-12.4f %-12.3f %-9.1f %-8s %-10s %s"
                  % (size, count, my_seconds, nova_seconds, ratio, same, "%d/%d" % (nova_count, count), note))
            sys.stdout.flush()
    runner.close()
    largest = max(sizes)
    print("peak RSS at %d hosts, 1,000 placements: ours %.0f MiB (whole process); Nova runner %.0f MiB"
          % (largest, rss_of_ours(largest), theirs.get("maxrss_kb", 0) / 1024))
    if args.json:
        print(json.dumps(rows))
    print(last_line(largest, ratios[(largest, 1)], args.batch, ratios[(largest, args.batch)], same_all, compared, placed))


if __name__ == "__main__":
    main()
