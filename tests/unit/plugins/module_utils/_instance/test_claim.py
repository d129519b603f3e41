from __future__ import annotations

import json
import os
import threading

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._instance import claim
from ansible_collections.nimbus.compute.plugins.module_utils._instance.owner import ROOT

UUIDS = ["6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a%02d" % i for i in range(10)]
FLAVOR = {"name": "m1.small", "vcpus": 2, "memory_mb": 1024, "root_gb": 10, "ephemeral_gb": 0, "swap": 0}
RATIOS = {"memory_mb": 1.0, "disk_mb": 1.0, "vcpus": 4.0}
RESERVED = {"memory_mb": 512, "disk_mb": 0, "vcpus": 0}
# 3 x 1024 MiB fit in 4096 - 512; the 4th does not.
TOTALS = {"memory_mb": 4096, "disk_gb": 1000, "vcpus": 64}


def _claim(path, uuid, flavor=None, **kw):
    flavor = flavor or FLAVOR
    kw.setdefault("totals", TOTALS)
    return claim.claim(uuid, flavor, str(path), ratios=RATIOS, reserved=RESERVED, owner=ROOT, **kw)


def test_check_applies_nova_rule():
    report = claim.check({"memory_mb": 100, "disk_mb": 10, "vcpus": 9}, {"memory_mb": 1000, "disk_mb": 20, "vcpus": 2},
                         {"memory_mb": 300, "disk_mb": 0, "vcpus": 0}, {"memory_mb": 1.5, "disk_mb": 1.0, "vcpus": 4.0},
                         {"memory_mb": 100, "disk_mb": 15, "vcpus": 0})
    assert report["memory_mb"]["limit"] == 1400 and report["memory_mb"]["free"] == 1100
    assert report["memory_mb"]["fits"] is True
    assert report["disk_mb"]["free"] == 5 and report["disk_mb"]["fits"] is False
    assert report["vcpus"]["free"] == 8 and report["vcpus"]["fits"] is False


def test_claims_until_full_then_refuses_with_reschedule(tmp_path):
    for uuid in UUIDS[:3]:
        assert _claim(tmp_path, uuid)["changed"] is True
    with pytest.raises(claim.ClaimRefused) as info:
        _claim(tmp_path, UUIDS[3])
    result = info.value.result()
    assert result["reschedule"] is True
    assert result["failed_step"] == "instance_claim"
    assert "memory_mb: requested 1024, free 512" in result["msg"]
    assert result["resources"]["memory_mb"]["used"] == 3072
    assert not os.path.exists(tmp_path / UUIDS[3]), "a refused claim leaves nothing behind"


def test_reclaim_same_uuid_is_idempotent_even_when_host_is_full(tmp_path):
    for uuid in UUIDS[:3]:
        _claim(tmp_path, uuid)
    again = _claim(tmp_path, UUIDS[0])
    assert again["changed"] is False
    assert again["resources"]["memory_mb"]["used"] == 2048, "its own claim is not counted twice"


def test_reclaim_with_another_flavor_does_not_count_its_old_claim(tmp_path):
    for uuid in UUIDS[:3]:
        _claim(tmp_path, uuid)
    bigger = dict(FLAVOR, name="m1.medium", memory_mb=1536)  # fits only once its own 1024 is not counted
    result = _claim(tmp_path, UUIDS[0], flavor=bigger)
    assert result["changed"] is True and result["resources"]["memory_mb"]["free"] == 1536
    assert claim.host_claims(str(tmp_path))[UUIDS[0]]["memory_mb"] == 1536


def test_claim_records_journal_and_dir_mode(tmp_path):
    _claim(tmp_path, UUIDS[0])
    inst = tmp_path / UUIDS[0]
    assert oct(inst.stat().st_mode & 0o777) == "0o700"
    entry = Journal(str(inst)).step("instance_claim")
    assert entry["claim"] == {"memory_mb": 1024, "disk_mb": 10240, "vcpus": 2, "flavor": "m1.small"}
    assert entry["created"] == [str(inst)]


def test_library_defaults_are_the_module_defaults(tmp_path):
    result = claim.claim(UUIDS[0], FLAVOR, str(tmp_path), totals=TOTALS, owner=ROOT)
    assert result["resources"]["memory_mb"]["reserved"] == 512
    assert result["resources"]["vcpus"]["allocation_ratio"] == 4.0


def test_check_mode_changes_nothing(tmp_path):
    result = _claim(tmp_path, UUIDS[0], check_mode=True)
    assert result["changed"] is True
    assert os.listdir(tmp_path) == []


def test_corrupt_journal_fails_closed(tmp_path):
    _claim(tmp_path, UUIDS[0])
    (tmp_path / UUIDS[0] / "instance.json").write_text("{not json")
    with pytest.raises(NimbusError, match="cannot read claims"):
        _claim(tmp_path, UUIDS[1])


@pytest.mark.parametrize("content, reason", [
    ("[1, 2]", "a JSON list, not an object"),
    ('{"steps": [1]}', "'steps' is not an object of objects"),
    ('{"steps": {"instance_claim": "x"}}', "'steps' is not an object of objects"),
    ('{"steps": {"instance_claim": {"claim": [1024]}}}', "the instance_claim claim is a JSON list, not an object"),
    ('{"steps": {"instance_claim": {"claim": {"memory_mb": "1024"}}}}', "memory_mb is '1024', not a number"),
    ('{"steps": {"instance_claim": {"claim": {"memory_mb": 1, "vcpus": -2}}}}', "vcpus is -2, not a number"),
    ('{"steps": {"instance_claim": {"claim": {"disk_mb": Infinity}}}}', "disk_mb is inf, not a number"),
    ('{"steps": {"instance_claim": {"claim": {"vcpus": true}}}}', "vcpus is True, not a number"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_a_neighbour_journal_we_cannot_count_refuses_the_claim_naming_the_file(tmp_path, content, reason):
    # Fail closed (its claim may hide used capacity), with a message naming the file, never a traceback.
    _claim(tmp_path, UUIDS[0])
    journal = tmp_path / UUIDS[0] / "instance.json"
    journal.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(NimbusError) as info:
        _claim(tmp_path, UUIDS[1])
    assert str(journal) in info.value.msg and reason in info.value.msg, info.value.msg
    assert info.value.step == "instance_claim" and info.value.retryable is True, "this host's fault: reschedule"
    assert not os.path.exists(tmp_path / UUIDS[1]), "the refused claim leaves nothing behind"
    assert not os.path.exists(tmp_path / "locks" / (UUIDS[1] + ".lock"))


def test_foreign_dirs_are_not_counted(tmp_path):
    (tmp_path / "_base").mkdir()
    (tmp_path / "not-a-uuid").mkdir()
    (tmp_path / "not-a-uuid" / "instance.json").write_text(json.dumps({"steps": {"instance_claim": {"claim": FLAVOR}}}))
    assert claim.host_claims(str(tmp_path)) == {}


def test_release_removes_dir_only_when_unused(tmp_path):
    _claim(tmp_path, UUIDS[0])
    _claim(tmp_path, UUIDS[1])
    inst = tmp_path / UUIDS[1]
    (inst / "disk").write_text("user data")
    kept = claim.release(UUIDS[1], str(tmp_path))
    assert kept["kept_because"] == ["disk"] and inst.is_dir()
    assert UUIDS[1] not in claim.host_claims(str(tmp_path)), "the claim is released even so"
    gone = claim.release(UUIDS[0], str(tmp_path))
    assert gone["changed"] is True and gone["kept_because"] == []
    assert not (tmp_path / UUIDS[0]).exists()
    assert not (tmp_path / "locks" / ("%s.lock" % UUIDS[0])).exists()
    assert claim.release(UUIDS[0], str(tmp_path))["changed"] is False


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"ratios": dict(RATIOS, vcpus=0)}, "allocation ratio must be greater than 0"),
        ({"reserved": dict(RESERVED, memory_mb=-1)}, "must not be negative"),
        ({"totals": dict(TOTALS, vcpus=0)}, "host total vcpus"),
        # NaN makes every "fits" false: it would read as a full host and reschedule, not fail.
        ({"ratios": dict(RATIOS, memory_mb=float("nan"))}, "memory_mb allocation ratio must be a finite number"),
        ({"ratios": dict(RATIOS, disk_mb=float("inf"))}, "disk_mb allocation ratio must be a finite number"),
        ({"reserved": dict(RESERVED, memory_mb=10 ** 30)}, "must be at most"),
        ({"libvirt_uri": ""}, "libvirt_uri must be a non-empty URI"),
        ({"libvirt_uri": "test:///default\0"}, "without control characters"),
    ],
)
def test_bad_numbers_rejected(tmp_path, kw, message):
    args = {"ratios": RATIOS, "reserved": RESERVED, "totals": TOTALS, "owner": ROOT}
    args.update(kw)
    with pytest.raises(ValidationError, match=message):
        claim.claim(UUIDS[0], FLAVOR, str(tmp_path), **args)
    assert list(tmp_path.iterdir()) == []  # checked before any lock file or directory


def test_invalid_uuid_and_relative_path(tmp_path):
    with pytest.raises(ValidationError, match="not a valid UUID"):
        _claim(tmp_path, "../etc")
    with pytest.raises(ValidationError, match="absolute"):
        claim.claim(UUIDS[0], FLAVOR, "relative/dir", ratios=RATIOS, reserved=RESERVED, totals=TOTALS)


def test_host_totals_from_libvirt_and_filesystem(tmp_path):
    totals = claim.host_totals(str(tmp_path / "missing" / "dir"), "test:///default")
    assert totals["memory_mb"] == 3072 and totals["vcpus"] == 16  # test driver's fixed host
    st = os.statvfs(str(tmp_path))
    assert totals["disk_mb"] == st.f_blocks * st.f_frsize // (1 << 20)


def test_host_totals_unreachable_libvirt_is_retryable(tmp_path):
    with pytest.raises(NimbusError) as info:
        claim.host_totals(str(tmp_path), "test:///no/such/file.xml")
    assert info.value.retryable is True


def test_parallel_threads_never_overcommit(tmp_path):
    outcomes = []

    def worker(uuid):
        try:
            _claim(tmp_path, uuid)
            outcomes.append("ok")
        except claim.ClaimRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker, args=(u,)) for u in UUIDS[:6]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 3
    assert sum(c["memory_mb"] for c in claim.host_claims(str(tmp_path)).values()) == 3072


def test_created_only_for_the_first_claim_not_for_a_resize(tmp_path):
    # A rollback releases the claim only when created: a resize re-claims an older server.
    assert _claim(tmp_path, UUIDS[0], check_mode=True)["created"] is True
    assert _claim(tmp_path, UUIDS[0])["created"] is True
    same = _claim(tmp_path, UUIDS[0])
    assert (same["changed"], same["created"]) == (False, False)
    resized = _claim(tmp_path, UUIDS[0], flavor=dict(FLAVOR, root_gb=20))
    assert (resized["changed"], resized["created"]) == (True, False)
