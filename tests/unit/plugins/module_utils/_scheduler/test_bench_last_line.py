# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""bench/scheduler.py's machine-readable last line: the issue's prefix exactly, then how many choices were compared."""

from __future__ import annotations

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("scheduler_bench", os.path.join(ROOT, "bench", "scheduler.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_last_line_keeps_the_prefix_and_parses(bench):
    line = bench.last_line(10000, 46.84, 1000, 9653.81, True, 1141, 3003)
    assert line == "speedup_10000_hosts single=46.8 batch1000=9653.8 same_choices=true compared=1141 placements=3003"
    assert line.startswith("speedup_10000_hosts single=46.8 batch1000=9653.8 same_choices=true ")
    assert bench.parse_last_line(line + "\n") == {
        "hosts": 10000, "single": 46.8, "batch": 1000, "batch_speedup": 9653.8, "same_choices": True,
        "compared": 1141, "placements": 3003}
    assert bench.parse_last_line(bench.last_line(100, 3.0, 50, 7.25, False, 3, 153))["same_choices"] is False


@pytest.mark.parametrize("line", [
    "speedup_10000_hosts single=46.8 batch1000=9653.8 same_choices=true",  # the old line: no count of what was compared
    "speedup_10000_hosts single=46.8 batch1000=9653.8 same_choices=yes compared=1 placements=1",
    "peak RSS at 10000 hosts",
])
def test_other_lines_do_not_parse(bench, line):
    with pytest.raises(ValueError, match="not a scheduler benchmark summary line"):
        bench.parse_last_line(line)
