"""Property-based tests: random bytes and mutated headers never crash the inspector, and a qcow2
with a backing file is never accepted, whatever else its header says."""

from __future__ import annotations

import os
import struct
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.nimbus.compute.plugins.module_utils._image import format_inspector as fi

sys.path.insert(0, os.path.dirname(__file__))
import image_crafted as crafted

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECLARED = st.sampled_from(fi.DISK_FORMATS + fi.KERNEL_FORMATS)
SEEDS = [
    crafted.qcow2(),
    crafted.qcow2(version=2),
    crafted.vmdk_sparse(crafted.vmdk_descriptor()),
    crafted.vdi(),
    crafted.vhd_footer() + b"\0" * 512,
    crafted.vhdx(),
    crafted.iso(),
    fi.QED_MAGIC + b"\0" * 600,
    fi.LUKS_MAGIC + b"\0" * 600,
]


def check_consistent(found, declared):
    """Whatever the bytes, the result is well-formed and refusal is decided without an exception."""
    assert isinstance(found.problems, list)
    assert found.format is None or found.format in (*fi.DISK_FORMATS, "qed", "luks")
    problem = fi.refusal(found, declared, max_virtual_size=1 << 40)
    if problem is None:
        assert found.problems == []
        assert len(found.claims) <= 1
    return problem


@FAST
@given(st.binary(max_size=4096), DECLARED)
def test_random_bytes_never_crash(data, declared):
    check_consistent(fi.inspect_bytes(data), declared)


@FAST
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 70000), st.integers(0, 255)), max_size=40),
       st.integers(0, 70000), DECLARED)
def test_mutated_headers_never_crash(seed, edits, cut, declared):
    data = bytearray(seed)
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    check_consistent(fi.inspect_bytes(bytes(data[:cut])), declared)


@FAST
@given(st.binary(min_size=104, max_size=600), st.integers(1, (1 << 64) - 1), DECLARED)
def test_qcow2_with_backing_file_is_never_accepted(rest, backing_offset, declared):
    """Any header with the qcow2 magic and a non-zero backing file offset is refused, for every
    declared format, however the other fields are scrambled."""
    data = bytearray(fi.QCOW2_MAGIC + rest)
    struct.pack_into(">Q", data, 8, backing_offset)
    problem = fi.refusal(fi.inspect_bytes(bytes(data)), declared)
    assert problem is not None


@FAST
@given(st.integers(0, (1 << 64) - 1), st.integers(1, 1 << 50))
def test_virtual_size_above_the_limit_is_refused(size, limit):
    problem = fi.refusal(fi.inspect_bytes(crafted.qcow2(size=size)), "qcow2", max_virtual_size=limit)
    assert (problem is not None and problem.rule == "virtual-size") == (size > limit)
