# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Counts the tasks of a play by where they ran, for bench/create_server.py.

A module task costs a process on the host (AnsiballZ); a controller-only action (set_fact, debug,
include_*, assert ...) costs a fork of the controller. A skipped task costs neither, but Ansible still
templates its condition and reports it (about 30 ms here): skipped tasks are counted apart.
Writes ``{"module": n, "controller": m, "skipped": k, "actions": {...}, "module_actions": {...}}`` to
$NIMBUS_TASK_COUNT_FILE at the end.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: nimbus_task_count
type: aggregate
short_description: count the tasks that ran, module tasks apart from controller-only ones
description: Benchmark helper of nimbus.compute; not part of the collection.
"""

CONTROLLER_ACTIONS = frozenset(
    "ansible.builtin." + name if "." not in name else name
    for name in ("set_fact", "debug", "assert", "fail", "include_tasks", "include_role", "import_tasks",
                 "import_role", "include_vars", "meta", "validate_argument_spec", "add_host", "group_by")
)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "nimbus_task_count"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.actions = {}
        self.skipped = 0

    def _count(self, result):
        action = result.task_fields.get("action") or result._task.action
        if not action.startswith("ansible.builtin.") and "." not in action:
            action = "ansible.builtin." + action
        self.actions[action] = self.actions.get(action, 0) + 1

    # A loop reports each item, then the task once more with every item in "results": count items.
    def v2_runner_on_ok(self, result):
        if "results" not in result._result:
            self._count(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if "results" not in result._result:
            self._count(result)

    # Once per skipped task (an empty loop included); a loop's skipped items are not counted.
    def v2_runner_on_skipped(self, result):
        self.skipped += 1

    def v2_runner_item_on_ok(self, result):
        self._count(result)

    def v2_runner_item_on_failed(self, result):
        self._count(result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("NIMBUS_TASK_COUNT_FILE")
        if not path:
            return
        module_actions = {action: n for action, n in self.actions.items() if action not in CONTROLLER_ACTIONS}
        module = sum(module_actions.values())
        summary = {"module": module, "controller": sum(self.actions.values()) - module, "skipped": self.skipped,
                   "actions": self.actions, "module_actions": module_actions}
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(summary, handle)
