# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The one wrapper for every qemu-img call.

Always an explicit ``-f`` (qemu-img never probes a format), ``--force-share`` for reads so a
running guest's disk can be inspected, resource limits (30 s CPU, 2 GiB address space) and a
wall-clock timeout as RELIABILITY.md asks.
"""

from __future__ import annotations

import json

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandRunner

CPU_SECONDS = 30
ADDRESS_SPACE = 2 << 30


def runner(step, timeout=120.0, cpu_seconds=CPU_SECONDS):
    return CommandRunner("qemu-img", step=step, timeout=timeout, cpu_seconds=cpu_seconds, address_space=ADDRESS_SPACE)


def info(path, fmt, step="qemu-img", timeout=30.0):
    """``qemu-img info -f <fmt> --output=json`` parsed; backing chain not followed."""
    result = runner(step, timeout=timeout).run(["info", "-f", fmt, "--output=json", "--force-share", path])
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise CommandError("qemu-img info on %s returned unreadable JSON" % path, step=step)


def convert(src, src_fmt, dst, dst_fmt="raw", step="qemu-img", timeout=1800.0, cpu_seconds=600):
    """Convert without probing: both formats explicit; ``-S 4k`` keeps the output sparse."""
    runner(step, timeout=timeout, cpu_seconds=cpu_seconds).run(
        ["convert", "-q", "-f", src_fmt, "-O", dst_fmt, "-S", "4k", src, dst]
    )


def create(path, size_bytes, fmt="qcow2", backing_file=None, backing_fmt=None, step="qemu-img", timeout=60.0):
    """Create an image; an overlay always names its backing format (``-F``), never inferred."""
    args = ["create", "-q", "-f", fmt]
    if backing_file:
        if not backing_fmt:
            raise CommandError("refusing to create %s: backing format not given" % path, step=step)
        args += ["-b", backing_file, "-F", backing_fmt]
    args += [path]
    if size_bytes is not None:
        args.append(str(int(size_bytes)))
    runner(step, timeout=timeout).run(args)
