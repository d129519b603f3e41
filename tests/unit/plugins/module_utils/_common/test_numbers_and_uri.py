"""User numbers and libvirt URIs are checked before anything changes (found by fuzzing the modules)."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.libvirt_uri import validate_libvirt_uri
from ansible_collections.nimbus.compute.plugins.module_utils._common.numbers import MAX_SECONDS, validate_number, validate_seconds


@pytest.mark.parametrize("value, kw, message", [
    (float("nan"), {}, "ratio must be a finite number, got nan"),
    (float("inf"), {}, "ratio must be a finite number, got inf"),
    (True, {}, "ratio must be a number, got True"),
    ("1.5", {}, "ratio must be a number, got '1.5'"),
    (None, {}, "ratio must be a number, got None"),
    (0, {"positive": True}, "ratio must be greater than 0, got 0"),
    (-1, {"minimum": 0}, "ratio must not be negative, got -1"),
    (0.5, {"minimum": 1}, "ratio is 0.5, must be at least 1"),
    (10 ** 400, {"maximum": 10}, "ratio is %d, must be at most 10" % 10 ** 400),  # float() of it would overflow
    (10.5, {"maximum": 10}, "ratio is 10.5, must be at most 10"),
])
def test_bad_numbers(value, kw, message):
    with pytest.raises(ValidationError) as info:
        validate_number(value, "ratio", "step_x", **kw)
    assert str(info.value) == "step_x: " + message
    assert info.value.retryable is False


def test_good_numbers_come_back_as_floats():
    assert validate_number(3, "ratio", "s", positive=True) == 3.0
    assert validate_number(0, "reserved", "s", minimum=0, maximum=5) == 0.0
    assert validate_seconds(MAX_SECONDS, "timeout", "s") == MAX_SECONDS
    assert validate_seconds(0, "min_age", "s", positive=False) == 0.0


@pytest.mark.parametrize("value, message", [
    (0, "timeout (seconds) must be greater than 0"),
    (MAX_SECONDS + 1, "timeout (seconds) is %d, must be at most %d" % (MAX_SECONDS + 1, MAX_SECONDS)),
    (10 ** 30, "must be at most %d" % MAX_SECONDS),
    (float("inf"), "must be a finite number"),
])
def test_bad_seconds(value, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_seconds(value, "timeout", "s")


@pytest.mark.parametrize("uri", ["", "   ", None, 5, "test:///default\0", "qemu:///system\n", "qemu:///sys\x7ftem"])
def test_bad_libvirt_uris(uri):
    with pytest.raises(ValidationError, match="libvirt_uri must be a non-empty URI without control characters"):
        validate_libvirt_uri(uri, "domain")


@pytest.mark.parametrize("uri", ["qemu:///system", "test:///default", "qemu+ssh://root@hv1/system?keyfile=/k"])
def test_good_libvirt_uris(uri):
    assert validate_libvirt_uri(uri, "domain") == uri
