"""host_audit: the orphan rules over a real directory tree, and the module's result and failures
(libvirt's test:///default driver has no instance-<uuid> domain, so every dir there is orphaned)."""

from __future__ import annotations

import json
import os
import time

import pytest
from moduletools import run_module

from ansible_collections.nimbus.compute.plugins.module_utils._audit.orphans import scan
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.modules import host_audit

WHOLE = "11111111-1111-4111-8111-111111111111"
NO_DIR = "22222222-2222-4222-8222-222222222222"
NO_DOMAIN = "33333333-3333-4333-8333-333333333333"
GONE = "44444444-4444-4444-8444-444444444444"


def run(args, capsys):
    return run_module(host_audit, args, capsys)


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "instances"
    for uuid in (WHOLE, NO_DOMAIN):
        (root / uuid).mkdir(parents=True)
    Journal(str(root / NO_DOMAIN)).record("instance_claim", created=["claim"])
    (root / NO_DOMAIN / "disk").write_bytes(b"")
    (root / "_base").mkdir()
    (root / "_base" / "abc").write_bytes(b"base")
    locks = root / "locks"
    locks.mkdir()
    for name in ("host.lock", "image-abc.lock", WHOLE + ".lock", NO_DOMAIN + ".lock", GONE + ".lock"):
        (locks / name).write_bytes(b"")
    (root / NO_DOMAIN / ".nimbus-disk.tmp").write_bytes(b"half")
    (root / "not-a-uuid").mkdir()
    return root


def test_each_kind_of_orphan_is_reported_once(host):
    report = scan(str(host), {WHOLE: "running", NO_DIR: "shutoff"})
    assert report["servers"] == [WHOLE]
    assert report["domains_without_dir"] == [
        {"uuid": NO_DIR, "domain_name": "instance-" + NO_DIR, "state": "shutoff"}]
    [orphan] = report["dirs_without_domain"]
    assert orphan["uuid"] == NO_DOMAIN and orphan["claim"] is True
    assert orphan["steps"] == ["instance_claim"]
    assert orphan["files"] == [".nimbus-disk.tmp", "disk", "instance.json"]
    assert report["stale_locks"] == [str(host / "locks" / (GONE + ".lock"))]
    assert report["stale_temp"] == [str(host / NO_DOMAIN / ".nimbus-disk.tmp")]
    assert report["orphans"] == 4


def test_young_entries_are_builds_in_progress(host):
    report = scan(str(host), {WHOLE: "running"}, min_age=60)
    assert report["dirs_without_domain"] == [] and report["stale_locks"] == [] and report["stale_temp"] == []
    later = scan(str(host), {WHOLE: "running"}, min_age=60, now=time.time() + 120)
    assert [o["uuid"] for o in later["dirs_without_domain"]] == [NO_DOMAIN]


def test_clean_host_and_missing_path(tmp_path):
    assert scan(str(tmp_path / "never-made"), {})["orphans"] == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert scan(str(empty), {WHOLE: "running"})["domains_without_dir"][0]["uuid"] == WHOLE


def test_module_reports_without_changing_anything(host, capsys):
    before = sorted(os.walk(host))
    result = run({"libvirt_uri": "test:///default", "instances_path": str(host)}, capsys)
    assert result["rc"] == 0 and result["changed"] is False
    assert {o["uuid"] for o in result["dirs_without_domain"]} == {WHOLE, NO_DOMAIN}
    assert sorted(os.walk(host)) == before


def test_module_fails_on_orphans_when_asked(host, capsys):
    result = run({"libvirt_uri": "test:///default", "instances_path": str(host), "fail_on_orphans": True}, capsys)
    assert result["rc"] == 1 and result["failed_step"] == "host_audit"
    assert "orphaned" in result["msg"] and result["orphans"] >= 2


@pytest.mark.parametrize("args, words", [
    ({"libvirt_uri": "test:///default", "instances_path": "relative/dir"}, "absolute"),
    ({"libvirt_uri": "test:///default", "instances_path": "/tmp", "min_age": -1}, "negative"),
    ({"libvirt_uri": "qemu:///system?socket=/nonexistent/sock", "instances_path": "/tmp"}, "cannot connect"),
])
def test_module_failures_are_clean(args, words, capsys):
    result = run(args, capsys)
    assert result["rc"] == 1 and result["failed_step"] == "host_audit" and words in result["msg"]
    assert "Traceback" not in json.dumps(result)
