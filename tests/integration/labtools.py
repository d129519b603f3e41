"""Small helpers shared by the integration tests (imported as ``labtools``; conftest puts this
directory on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

LAB_URI = "qemu:///system"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def unavailable(reason):
    """A lab prerequisite is missing: skip with the reason, or fail under make test (NIMBUS_REQUIRE_LAB=1),
    so CI never goes green by skipping."""
    if os.environ.get("NIMBUS_REQUIRE_LAB") == "1":
        pytest.fail("lab required but unavailable: " + reason)
    pytest.skip(reason)


def virsh(*args, check=True, uri=LAB_URI):
    """Run virsh against the lab; raise AssertionError with its stderr when ``check`` and it fails."""
    proc = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("virsh %s: %s" % (" ".join(args), proc.stderr))
    return proc


def domstate(name):
    """What ``virsh domstate`` says of the domain ``name`` ("running", "shut off" ...), or "absent"."""
    proc = virsh("domstate", name, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def run_role(tmp_path, role, role_vars, extra_env=None):
    """Apply one role of the collection to localhost with ansible-playbook; returns the CompletedProcess."""
    play = [{"hosts": "all", "gather_facts": False,
             "tasks": [{"ansible.builtin.include_role": {"name": "nimbus.compute." + role}, "vars": role_vars}]}]
    path = tmp_path / ("%s-%s.yml" % (role, role_vars.get("server_uuid") or role_vars.get("server_delete_uuid", "")))
    path.write_text(json.dumps(play))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1")
    env.update(extra_env or {})
    return subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=" + os.path.join(VENV_BIN, "python"), str(path)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
