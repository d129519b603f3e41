"""Benchmark: image_cache fetch + verify + convert vs curl + qemu-img convert, in the same run.

Serves a sparse-ish qcow2 and a raw image (1 GiB each by default) from a loopback HTTP server and
times, per image, the best of ``--repeat`` runs of
  ours   nimbus.compute's image cache (download, inspector, qemu-img info, convert, fsync, rename)
  peer   ``curl -o`` then ``qemu-img convert -f <fmt> -O raw -S 4k`` (what a shell script would do)
  curl   ``curl -o`` alone (the floor for a raw image, which we do not convert)
and the cached second run. Target: ours >= 0.8x the peer's throughput, cached run < 0.5 s.

    .venv/bin/python bench/image_fetch.py [--size-mib 1024] [--data-percent 30] [--repeat 2]

Prints a table and writes bench/results/image_fetch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".collections"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import image_corpus

from ansible_collections.nimbus.compute.plugins.module_utils._image import cache

MIB = 1 << 20


def make_raw(path, size_mib, data_percent):
    """Data in ``data_percent`` of each 16 MiB stretch, zeros elsewhere (a typical guest disk)."""
    block = os.urandom(MIB)
    data_mib = max(1, 16 * data_percent // 100)
    with open(path, "wb") as handle:
        for start in range(0, size_mib, 16):
            for i in range(min(16, size_mib - start)):
                handle.write(block if i < data_mib else bytes(MIB))


def timed(func):
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def run(argv):
    subprocess.run(argv, check=True, capture_output=True)


def bench_image(server, workdir, name, path, disk_format, repeat):
    url = server.add("/" + name, "file", (path, 0))
    size = os.path.getsize(path)
    ours, peer, curl, cached = [], [], [], []
    part, out = os.path.join(workdir, "peer.part"), os.path.join(workdir, "peer.raw")
    source_format = "qcow2" if disk_format == "qcow2" else "raw"
    for attempt in range(repeat):
        instances = os.path.join(workdir, "instances-%s-%d" % (name, attempt))
        request = cache.ImageRequest("bench-" + name, url, disk_format, instances_path=instances)
        ours.append(timed(lambda: cache.ensure_cached(request)))  # noqa: B023 - called at once
        cached.append(timed(lambda: cache.ensure_cached(request)))  # noqa: B023
        shutil.rmtree(instances)
        curl.append(timed(lambda: run(["curl", "-sSf", "-o", part, url])))
        convert = timed(lambda: run(["qemu-img", "convert", "-q", "-f", source_format, "-O", "raw", "-S", "4k", part, out]))
        with open(out, "rb") as handle:
            os.fsync(handle.fileno())  # we fsync our base file; so must the peer
        peer.append(curl[-1] + convert)
        os.unlink(part)
        os.unlink(out)
    best = {"ours": min(ours), "peer": min(peer), "curl": min(curl)}
    return {
        "image": name, "format": disk_format, "bytes": size,
        "ours_s": round(best["ours"], 3), "peer_s": round(best["peer"], 3), "curl_s": round(best["curl"], 3),
        "ours_mib_s": round(size / MIB / best["ours"], 1), "peer_mib_s": round(size / MIB / best["peer"], 1),
        "ratio_vs_peer": round(best["peer"] / best["ours"], 2), "ratio_vs_curl": round(best["curl"] / best["ours"], 2),
        "cached_s": round(max(cached), 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="virtual size of each image (default 1024)")
    parser.add_argument("--data-percent", type=int, default=30, help="share of non-zero data (default 30)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per tool, best counts (default 2)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir in /var/tmp)")
    options = parser.parse_args()
    for tool in ("curl", "qemu-img"):
        if shutil.which(tool) is None:
            sys.exit("image_fetch bench: %s is not installed" % tool)
    workdir = tempfile.mkdtemp(prefix="nimbus-bench-image-", dir=options.workdir or "/var/tmp")
    rows = []
    try:
        raw = os.path.join(workdir, "image.raw")
        make_raw(raw, options.size_mib, options.data_percent)
        qcow2 = os.path.join(workdir, "image.qcow2")
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2])
        with image_corpus.ImageServer() as server:
            for name, path, disk_format in (("qcow2", qcow2, "qcow2"), ("raw", raw, "raw")):
                rows.append(bench_image(server, workdir, name, path, disk_format, options.repeat))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("%-6s %10s %9s %9s %9s %10s %10s %8s %8s %9s" % (
        "image", "file MiB", "ours s", "peer s", "curl s", "ours MiB/s", "peer MiB/s", "vs peer", "vs curl", "cached s"))
    for row in rows:
        print("%-6s %10.0f %9.2f %9.2f %9.2f %10.0f %10.0f %7.2fx %7.2fx %9.4f" % (
            row["image"], row["bytes"] / MIB, row["ours_s"], row["peer_s"], row["curl_s"], row["ours_mib_s"],
            row["peer_mib_s"], row["ratio_vs_peer"], row["ratio_vs_curl"], row["cached_s"]))
    ok = all(row["ratio_vs_peer"] >= 0.8 and row["cached_s"] < 0.5 for row in rows)
    print("target (>= 0.8x peer throughput, cached < 0.5 s):", "met" if ok else "NOT met")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "image_fetch.json"), "w") as handle:
        json.dump({"options": vars(options), "rows": rows, "target_met": ok}, handle, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
