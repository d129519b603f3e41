from __future__ import annotations

import os

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.journal import Journal
from ansible_collections.nimbus.compute.plugins.module_utils._instance import layout

UUID = "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def inst(tmp_path):
    path = tmp_path / UUID
    path.mkdir()
    return path


def test_byproducts_and_journal_go_with_the_dir(inst):
    for name in ("libvirt.xml", "console.log", layout.TMP_PREFIX + "half.tmp"):
        (inst / name).write_text("x")
    journal = Journal(str(inst))
    journal.record("domain_xml", created=[str(inst / "libvirt.xml")])
    lock = inst.parent / "x.lock"
    lock.write_text("")
    assert layout.remove_if_unused(str(inst), journal, lock_path=str(lock)) == []
    assert not inst.exists() and not lock.exists()


@pytest.mark.parametrize(
    "step, created, reason",
    [
        ("instance_network", ["tap6f1e8b2a-0c"], "step instance_network"),
        ("instance_claim", [], "step instance_claim"),
    ],
)
def test_live_resources_keep_the_dir(inst, step, created, reason):
    journal = Journal(str(inst))
    journal.record(step, created=created)
    assert layout.remove_if_unused(str(inst), journal) == [reason]
    assert (inst / "instance.json").exists()


def test_unknown_file_keeps_the_dir(inst):
    (inst / "notes.txt").write_text("mine")
    assert layout.remove_if_unused(str(inst), Journal(str(inst))) == ["notes.txt"]


def test_step_whose_files_are_gone_is_finished(inst):
    journal = Journal(str(inst))
    journal.record("instance_disks", created=[str(inst / "disk")])
    assert layout.remove_if_unused(str(inst), journal) == []


def test_resolve_refuses_symlinked_instance_dir(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "instances"
    root.mkdir()
    os.symlink(outside, root / UUID)
    with pytest.raises(ValidationError, match="symbolic link"):
        layout.resolve_instance_dir(str(root), UUID, "instance_disks")
