"""Runs a module's main() in-process with given arguments, the way Ansible would: one helper for
the module tests (tests/conftest.py puts this directory on sys.path)."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args


def run_module(module, args, capsys, check_mode=False):
    """The module's JSON result, with ``rc`` = its exit code (0 ok, 1 failed)."""
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        module.main()
    result = json.loads(capsys.readouterr().out)
    result["rc"] = info.value.code
    return result
