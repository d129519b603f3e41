# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Numbers from the user (ratios, sizes, timeouts), checked before anything changes.

Ansible's ``type: float`` takes "nan" and "inf", and ``type: int`` any size: a NaN ratio makes every
comparison false, and a 10**30 timeout overflows ``time.monotonic() + timeout`` deep inside a wait,
after the module has already changed something.
"""

from __future__ import annotations

import math

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError

# A week: a longer wait is a typo, and this keeps every deadline inside the platform's time_t.
MAX_SECONDS = 7 * 24 * 3600
# Nova's flavor and quota limit (nova.db.constants.MAX_INT).
MAX_INT = 0x7FFFFFFF


def validate_number(value, what, step, minimum=None, maximum=None, positive=False):
    """A finite real number within [minimum, maximum] (above 0 when ``positive``); returns a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("%s must be a number, got %r" % (what, value), step=step)
    if isinstance(value, int) and maximum is not None and value > maximum:
        raise ValidationError("%s is %d, must be at most %s" % (what, value, _show(maximum)), step=step)
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError("%s must be a finite number, got %r" % (what, value), step=step)
    if positive and number <= 0:
        raise ValidationError("%s must be greater than 0, got %s" % (what, _show(value)), step=step)
    if minimum == 0 and number < 0:
        raise ValidationError("%s must not be negative, got %s" % (what, _show(value)), step=step)
    if minimum is not None and number < minimum:
        raise ValidationError("%s is %s, must be at least %s" % (what, _show(value), _show(minimum)), step=step)
    if maximum is not None and number > maximum:
        raise ValidationError("%s is %s, must be at most %s" % (what, _show(value), _show(maximum)), step=step)
    return number


def validate_seconds(value, what, step, positive=True):
    """A wait in seconds: finite, above 0 (or at least 0 when not ``positive``), at most a week."""
    return validate_number(value, what + " (seconds)", step, minimum=0, maximum=MAX_SECONDS, positive=positive)


def _show(value):
    return "%g" % value if isinstance(value, float) else str(value)
