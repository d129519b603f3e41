"""`ansible-galaxy collection build` works and the tarball installs with every module in it."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
GALAXY = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")


def test_collection_builds_and_installs(tmp_path):
    subprocess.run([GALAXY, "collection", "build", ROOT, "--output-path", str(tmp_path)], check=True, capture_output=True)
    meta = yaml.safe_load(open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8"))
    tarball = tmp_path / ("nimbus-compute-%s.tar.gz" % meta["version"])
    assert tarball.exists()
    dest = tmp_path / "installed"
    subprocess.run([GALAXY, "collection", "install", "--force", str(tarball), "-p", str(dest)], check=True, capture_output=True)
    installed = dest / "ansible_collections" / "nimbus" / "compute"
    modules = sorted(os.path.basename(p) for p in glob.glob(str(installed / "plugins" / "modules" / "*.py")))
    assert "domain.py" in modules and "image_cache.py" in modules and "instance_disks.py" in modules
    assert (installed / "roles" / "server" / "tasks" / "main.yml").exists()
    # Nothing of the local environment ships in the artifact.
    for unwanted in (".venv", ".venv-sanity", ".cache", ".collections", ".ruff_cache", ".hypothesis", "tests/output"):
        assert not (installed / unwanted).exists(), unwanted
