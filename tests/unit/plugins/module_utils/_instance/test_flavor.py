from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import requested_disk_mb, validate_flavor

GOOD = {"name": "m1.tiny", "vcpus": 1, "memory_mb": 512, "root_gb": 1, "ephemeral_gb": 2, "swap": 256}


def test_normalises_strings_and_defaults():
    flavor = validate_flavor({"name": "x", "vcpus": "2", "memory_mb": 16.0})
    assert flavor == {"name": "x", "vcpus": 2, "memory_mb": 16, "root_gb": 0, "ephemeral_gb": 0, "swap": 0,
                      "extra_specs": {}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"memory_mb": 0}, "memory_mb is 0, must be at least 16 MiB"),
        ({"memory_mb": 15}, "memory_mb is 15"),
        ({"vcpus": 0}, "vcpus is 0, must be at least 1"),
        ({"root_gb": -1}, "root_gb is -1"),
        ({"swap": -5}, "swap is -5"),
        ({"vcpus": True}, "vcpus must be an integer"),
        ({"vcpus": 1.5}, "vcpus must be an integer"),
        ({"memory_mb": "lots"}, "memory_mb must be an integer"),
        # str.isdigit() takes these, int() does not: a ValidationError, not a ValueError.
        ({"vcpus": "\u00b2"}, "vcpus must be an integer"),
        ({"memory_mb": "\u0665\u0661\u0662"}, "memory_mb must be an integer"),
        ({"swap": 10 ** 30}, "swap is %d, must be at most 2147483647 MiB" % 10 ** 30),
        ({"root_gb": 2 ** 31}, "must be at most 2147483647 GiB"),
        ({"name": ""}, "flavor name"),
        ({"name": None}, "flavor name"),
        ({"extra_specs": ["x"]}, "extra_specs must be a dictionary"),
    ],
)
def test_rejects_bad_flavor(change, message):
    with pytest.raises(ValidationError) as info:
        validate_flavor(dict(GOOD, **change), step="instance_claim")
    assert message in str(info.value)
    assert str(info.value).startswith("instance_claim: ")


def test_requires_vcpus_and_memory():
    with pytest.raises(ValidationError, match="vcpus is required"):
        validate_flavor({"name": "x", "memory_mb": 64})
    with pytest.raises(ValidationError, match="must be a dictionary"):
        validate_flavor("m1.tiny")


def test_requested_disk_is_nova_disk_filter_sum():
    assert requested_disk_mb(validate_flavor(GOOD)) == 1024 * 3 + 256
