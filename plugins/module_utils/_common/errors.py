# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Typed errors shared by every area of module_utils.

Each area raises a subclass of NimbusError; modules turn it into
``fail_json(msg=str(err), failed_step=err.step, reschedule=err.retryable)``.
"""

from __future__ import annotations


class NimbusError(Exception):
    """An error that a module reports with one clear message.

    ``step`` names the build step (e.g. ``image_cache``), ``retryable`` says whether
    trying another host could help (a full host: yes; a bad image or flavor: no).
    """

    step = "nimbus"
    retryable = False

    def __init__(self, msg, step=None, retryable=None):
        super().__init__(msg)
        self.msg = msg
        if step is not None:
            self.step = step
        if retryable is not None:
            self.retryable = retryable

    def __str__(self):
        return "%s: %s" % (self.step, self.msg)

    def result(self):
        """The keyword arguments for ``module.fail_json``."""
        return {"msg": str(self), "failed_step": self.step, "reschedule": self.retryable}


class ValidationError(NimbusError):
    """Bad input: never retryable, raised before anything changes."""

    retryable = False


class CommandError(NimbusError):
    """An external command failed, timed out or could not be started."""


class LockTimeout(NimbusError):
    """A lock was not acquired within its bounded wait."""

    retryable = True


def failure(err, step, retryable=False):
    """``fail_json`` arguments for a NimbusError, or for an OS error (read-only or full disk,
    permissions) that no area turned into one: every module fails with a message, never a traceback."""
    if isinstance(err, OSError):
        detail = err.strerror or str(err)
        if err.filename:
            detail = "%s: %s" % (detail, err.filename)
        err = NimbusError(detail, step=step, retryable=retryable)
    return err.result()
