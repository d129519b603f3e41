"""AWX / Automation Platform: the collection tarball carries meta/execution-environment.yml,
requirements.txt and bindep.txt; ansible-builder finds our dependencies in the installed collection
and `ansible-builder create` makes a build context (no container engine needed) that installs it."""

from __future__ import annotations

import os
import subprocess
import tarfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
BUILDER = os.path.join(VENV_BIN, "ansible-builder")
TARBALL = "nimbus-compute-0.1.0.tar.gz"

pytestmark = pytest.mark.skipif(not os.path.exists(BUILDER), reason="ansible-builder is not installed in .venv")


def run(*argv, cwd=None):
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact")
    run(os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(out), "--force", ROOT)
    return out / TARBALL


def requirement_lines(path):
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]


def test_tarball_carries_the_ee_metadata(tarball):
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        meta = yaml.safe_load(tar.extractfile("meta/execution-environment.yml"))
    assert {"meta/execution-environment.yml", "requirements.txt", "bindep.txt", "meta/runtime.yml"} <= names
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}


def test_builder_introspects_our_dependencies(tarball, tmp_path):
    collections = tmp_path / "collections"
    run(os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p", str(collections),
        str(tarball))
    found = yaml.safe_load(run(BUILDER, "introspect", "--sanitize", str(collections)).split("\n", 1)[1])
    python = [line.split("#")[0].strip() for line in found["python"]]
    system = [line.split("#")[0].strip() for line in found["system"]]
    assert python == requirement_lines(os.path.join(ROOT, "requirements.txt"))
    assert system == requirement_lines(os.path.join(ROOT, "bindep.txt"))
    assert "libvirt-dev [platform:dpkg compile]" in system and "libvirt-devel [platform:rpm compile]" in system


def test_builder_create_makes_a_context_that_installs_the_collection(tarball, tmp_path):
    (tmp_path / TARBALL).write_bytes(tarball.read_bytes())
    definition = {
        "version": 3,
        "images": {"base_image": {"name": "quay.io/ansible/awx-ee:24.6.1"}},
        "dependencies": {
            "galaxy": {"collections": [{"name": "/tmp/collections/" + TARBALL, "type": "file"}]},
        },
        "additional_build_files": [{"src": TARBALL, "dest": "collections"}],
        "additional_build_steps": {"prepend_galaxy": ["COPY _build/collections/ /tmp/collections/"]},
    }
    (tmp_path / "execution-environment.yml").write_text(yaml.safe_dump(definition))
    run(BUILDER, "create", "-f", "execution-environment.yml", "--context", "context", "--output-filename", "Containerfile",
        cwd=str(tmp_path))
    context = tmp_path / "context"
    containerfile = (context / "Containerfile").read_text()
    assert 'EE_BASE_IMAGE="quay.io/ansible/awx-ee:24.6.1"' in containerfile and "FROM $EE_BASE_IMAGE" in containerfile
    assert "COPY _build/collections/ /tmp/collections/" in containerfile
    assert "ansible-galaxy collection install" in containerfile and "introspect" in containerfile
    # The galaxy step comes before the introspection that reads our meta/execution-environment.yml.
    assert containerfile.index("ansible-galaxy collection install") < containerfile.index("introspect")
    assert (context / "_build" / "collections" / TARBALL).read_bytes() == tarball.read_bytes()
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert galaxy["collections"][0]["name"].endswith(TARBALL)
