"""create_server.yml refuses a malformed nimbus_request before it asks any hypervisor or schedules.

Runs the playbook on the controller only: the hypervisor group is empty, so nothing is gathered,
and a request that passes every check stops at "No hypervisor answered".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.path.dirname(sys.executable)
UUID = "11111111-2222-3333-4444-555555555555"
GOOD = {"name": "web", "flavor": {"name": "m1", "vcpus": 1, "memory_mb": 64},
        "image": {"id": "img", "src": "file:///nonexistent", "disk_format": "raw"}}


def schedule_only(tmp_path, request):
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"nimbus_request": dict(GOOD, **request)}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           os.path.join(ROOT, "playbooks", "create_server.yml"), "-e", "hypervisor_group=nimbus_none",
                           "-e", "nimbus_schedule_only=true", "-e", "@%s" % path],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:]
    return proc.stdout


@pytest.mark.parametrize("request_, messages", [
    ({"name": "a\nb", "count": 2, "instance_uuids": [UUID, UUID.upper()], "scheduler": {"hosts": [], "seed": 1},
      "user_data": {"a": 1}, "owner": {"project": ["p"]}, "hints": "group=x", "ports": [5, None]},
     ["name must be a non-empty string of at most 255 characters without control characters",
      "instance_uuids holds the same UUID twice", "scheduler: hosts cannot be set there", "user_data must be a string",
      "owner.project must be a string", "hints must be a dict", "ports and volumes hold one list per server"]),
    ({"count": 0, "instance_uuids": UUID}, ["count is 0, must be between 1 and 1000", "instance_uuids must be a list"]),
    ({"count": 1001, "volumes": "vol-1"}, ["count is 1001, must be between 1 and 1000", "volumes must be a list"]),
    ({"count": 2, "instance_uuids": [UUID]}, ["instance_uuids has 1 entries for count 2"]),
    ({"ports": [["p"]]}, ["ports and volumes of a single server are lists of dicts"]),
])
def test_a_malformed_request_fails_before_any_hypervisor_is_asked(tmp_path, request_, messages):
    out = schedule_only(tmp_path, request_)
    for words in messages:
        assert words in out, out[-3000:]
    assert "No hypervisor answered" not in out


def test_a_well_formed_request_passes_the_checks(tmp_path):
    request = {"count": 2, "instance_uuids": [UUID, UUID[:-1] + "6"], "ports": [[{"port_id": "p"}], []],
               "scheduler": {"host_subset_size": 2}, "owner": {"project": "p"}, "user_data": "#!/bin/sh"}
    assert "No hypervisor answered: the group is empty" in schedule_only(tmp_path, request)
