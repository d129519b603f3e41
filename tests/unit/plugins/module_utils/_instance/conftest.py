"""Fixtures shared by the instance step tests."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._instance.flavor import MIB


@pytest.fixture
def host(tmp_path):
    (tmp_path / "_base").mkdir()
    base = tmp_path / "_base" / "abc"
    with open(base, "wb") as handle:
        handle.truncate(10 * MIB)
    return tmp_path, str(base)
