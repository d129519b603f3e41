"""The lab for integration tests: libvirtd + QEMU started by tests/lab/start.sh when not answering,
and the embedded guest image built by tests/lab/guest_image.py.

Where the lab truly cannot start (not root, no libvirt) the integration tests are skipped with the
reason; under `make test` (NIMBUS_REQUIRE_LAB=1) that is a failure instead, so CI never goes green
by skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Shared helpers (labtools.py, image_corpus.py) import by name under --import-mode=importlib.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
LAB_URI = "qemu:///system"


def _start_lab():
    if os.geteuid() != 0:
        return "the lab needs root (libvirtd, taps, nftables)"
    proc = subprocess.run(["bash", os.path.join(ROOT, "tests", "lab", "start.sh")], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        return "tests/lab/start.sh failed: %s" % (proc.stderr.strip() or proc.stdout.strip())
    return None


@pytest.fixture(scope="session")
def lab():
    """A running libvirt on qemu:///system; yields {'uri', 'virt_type'}."""
    problem = _start_lab()
    if problem:
        if os.environ.get("NIMBUS_REQUIRE_LAB") == "1":
            pytest.fail("lab required but unavailable: " + problem)
        pytest.skip("lab unavailable: " + problem)
    sys.path.insert(0, os.path.join(ROOT, ".collections"))
    from ansible_collections.nimbus.compute.plugins.module_utils._domain.virt_type import detect_virt_type

    return {"uri": LAB_URI, "virt_type": detect_virt_type()[0]}


@pytest.fixture(scope="session")
def guest_images(lab):
    """The embedded guest's image records (root qcow2 + aki kernel + ari ramdisk)."""
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "lab", "guest_image.py")], check=True,
                   capture_output=True, timeout=600)
    with open(os.path.join(ROOT, ".cache", "guest", "images.json"), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(autouse=True)
def _lab_for_integration(request):
    if request.node.get_closest_marker("integration"):
        request.getfixturevalue("lab")
