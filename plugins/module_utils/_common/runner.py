# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""One small runner per external tool: argument lists (never a shell string), a bounded
wall-clock time, optional resource limits, and stderr in the error.

Each area builds its own runner once, e.g. ``QEMU_IMG = CommandRunner("qemu-img", step="image_cache",
cpu_seconds=30, address_space=2 << 30)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError


class CommandResult:
    __slots__ = ("argv", "rc", "stderr", "stdout")

    def __init__(self, argv, rc, stdout, stderr):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


def _limits(cpu_seconds, address_space):
    """A preexec function applying RLIMIT_CPU / RLIMIT_AS in the child only."""
    if not cpu_seconds and not address_space:
        return None

    def apply():
        import resource

        if cpu_seconds:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return apply


class CommandRunner:
    def __init__(self, binary, step, timeout=60.0, cpu_seconds=None, address_space=None, env=None):
        self.binary = binary
        self.step = step
        self.timeout = timeout
        self.cpu_seconds = cpu_seconds
        self.address_space = address_space
        self.env = env

    def path(self):
        found = shutil.which(self.binary)
        if not found:
            raise CommandError("%s is not installed (not found on PATH)" % self.binary, step=self.step)
        return found

    def run(self, args, check=True, timeout=None, input_data=None, retryable=None):
        """Run ``binary *args``; raise CommandError on a non-zero exit when ``check``."""
        argv = [self.path()] + [str(a) for a in args]
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        limit = timeout if timeout is not None else self.timeout
        try:
            proc = subprocess.run(
                argv,
                input=input_data,
                capture_output=True,
                timeout=limit,
                env=env,
                preexec_fn=_limits(self.cpu_seconds, self.address_space),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandError(
                "%s %s timed out after %.0f s" % (self.binary, " ".join(argv[1:3]), limit),
                step=self.step,
                retryable=retryable,
            )
        except OSError as exc:
            raise CommandError("cannot run %s: %s" % (self.binary, exc), step=self.step, retryable=retryable)
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            detail = stderr.strip() or stdout.strip() or "no output"
            if proc.returncode < 0:
                detail = "killed by signal %d (resource limit?) %s" % (-proc.returncode, detail)
            raise CommandError(
                "%s %s failed (exit %d): %s" % (self.binary, " ".join(str(a) for a in args[:2]), proc.returncode, detail[-2000:]),
                step=self.step,
                retryable=retryable,
            )
        return CommandResult(argv, proc.returncode, stdout, stderr)
