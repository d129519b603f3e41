"""Guest NUMA nodes: the count from the flavor or the image, refused when it cannot split evenly."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._instance import numa


@pytest.mark.parametrize(
    "specs, props, nodes",
    [
        ({}, {}, 0),
        ({"hw:numa_nodes": "2"}, {}, 2),
        ({}, {"hw_numa_nodes": "4"}, 4),
        ({"hw:numa_nodes": 2}, {"hw_numa_nodes": "2"}, 2),
        (None, None, 0),
        ({1: "x", "hw:numa_nodes": "2"}, {2: "y"}, 2),
    ],
)
def test_requested_nodes(specs, props, nodes):
    assert numa.requested_nodes(specs, props, vcpus=4, memory_mb=1024) == nodes


@pytest.mark.parametrize(
    "specs, props, words",
    [
        ({"hw:numa_nodes": "3"}, {}, "must divide vcpus (4) and memory_mb (1024)"),
        ({"hw:numa_nodes": "0"}, {}, "whole number >= 1"),
        ({"hw:numa_nodes": "two"}, {}, "must be a whole number"),
        ({"hw:numa_nodes": "2.5"}, {}, "must be a whole number"),
        ({"hw:numa_nodes": True}, {}, "whole number >= 1"),
        ({"hw:numa_nodes": "2"}, {"hw_numa_nodes": "4"}, "disagree"),
        ({"hw:numa_nodes": "2", "hw:numa_cpus.0": "0", "hw:numa_cpus.1": "1-3"}, {}, "explicit NUMA split"),
        ({}, {"hw_numa_nodes": "2", "hw_numa_mem.0": "512"}, "hw_numa_mem.0"),
    ],
)
def test_refused_counts_name_the_cause(specs, props, words):
    with pytest.raises(ValueError) as caught:
        numa.requested_nodes(specs, props, vcpus=4, memory_mb=1024)
    assert words in str(caught.value)


def test_guest_cells_split_evenly_in_order():
    assert numa.guest_cells(0, 4, 1024) == []
    assert numa.guest_cells(2, 4, 1024) == [(0, 1, 512), (2, 3, 512)]
    assert numa.guest_cells(4, 4, 1024) == [(0, 0, 256), (1, 1, 256), (2, 2, 256), (3, 3, 256)]
