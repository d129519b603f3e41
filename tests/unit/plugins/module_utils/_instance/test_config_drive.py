from __future__ import annotations

import json

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._instance import config_drive

UUID = "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"


def test_tree_like_nova_with_filled_in_identity():
    content = config_drive.files(UUID, "Web Server_1", meta_data={"meta": {"role": "web"}}, user_data="#!/bin/sh\n")
    assert sorted(content) == [
        "openstack/2012-08-10/meta_data.json",
        "openstack/2012-08-10/user_data",
        "openstack/latest/meta_data.json",
        "openstack/latest/network_data.json",
        "openstack/latest/user_data",
        "openstack/latest/vendor_data.json",
    ]
    meta = json.loads(content["openstack/latest/meta_data.json"])
    assert meta["uuid"] == UUID
    assert meta["name"] == "Web Server_1"
    assert meta["hostname"] == "web-server-1"
    assert meta["meta"] == {"role": "web"}
    assert content["openstack/latest/user_data"] == b"#!/bin/sh\n"
    assert json.loads(content["openstack/latest/network_data.json"]) == config_drive.NETWORK_DATA_DEFAULT


def test_no_user_data_file_without_user_data():
    content = config_drive.files(UUID, "a", network_data={"links": [{"id": "tap1"}]})
    assert not any(rel.endswith("user_data") for rel in content)
    assert json.loads(content["openstack/latest/network_data.json"]) == {"links": [{"id": "tap1"}]}


def test_meta_data_uuid_must_match():
    with pytest.raises(ValidationError, match="differs from instance_uuid"):
        config_drive.files(UUID, "a", meta_data={"uuid": "00000000-0000-4000-8000-000000000000"})


def test_rejects_non_dict_and_oversized_input():
    with pytest.raises(ValidationError, match="must be dictionaries"):
        config_drive.files(UUID, "a", meta_data=["x"])
    with pytest.raises(ValidationError, match="larger than 65535"):
        config_drive.files(UUID, "a", user_data="x" * 65536)
    with pytest.raises(ValidationError, match="cannot be written as JSON"):
        config_drive.files(UUID, "a", meta_data={"k": {1, 2}})


@pytest.mark.parametrize(
    "name, expected",
    [("Web Server", "web-server"), ("--a.b--", "a.b"), ("ÄÖ!", "server"), ("x" * 80, "x" * 63)],
)
def test_hostname_from_display_name(name, expected):
    assert config_drive.hostname_from(name) == expected


def test_digest_follows_content_only():
    one = config_drive.files(UUID, "a", user_data="x")
    assert config_drive.digest(one) == config_drive.digest(config_drive.files(UUID, "a", user_data="x"))
    assert config_drive.digest(one) != config_drive.digest(config_drive.files(UUID, "a", user_data="y"))
