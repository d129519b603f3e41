# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The build journal ``<uuid>/instance.json``: what each step created, so that a rollback
removes exactly that and nothing older."""

from __future__ import annotations

import json
import os
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common.atomic import read_bytes, write_atomic
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError

JOURNAL_NAME = "instance.json"


class JournalError(NimbusError, ValueError):
    """``instance.json`` exists but is not a journal (truncated, not JSON, not an object). Also a
    ValueError, which is what reading a corrupt journal raised before, for callers that catch that."""


class Journal:
    def __init__(self, instance_dir, step=None):
        """Load the journal (empty when there is none). A corrupt one raises JournalError naming the
        file and ``step``: nothing may act on a journal it cannot read, since rollback depends on it."""
        self.instance_dir = instance_dir
        self.path = os.path.join(instance_dir, JOURNAL_NAME)
        raw = read_bytes(self.path)
        self.data = _load(self.path, raw, step) if raw else {"steps": {}}
        self.data.setdefault("steps", {})

    def exists(self):
        return os.path.exists(self.path)

    def step(self, name):
        return self.data["steps"].get(name, {})

    def created(self, name):
        return list(self.step(name).get("created", []))

    def record(self, name, created=None, **fields):
        """Merge ``created`` resources and fields into a step's entry and save."""
        entry = self.data["steps"].setdefault(name, {"created": []})
        for item in created or []:
            if item not in entry["created"]:
                entry["created"].append(item)
        entry.update(fields)
        entry["updated"] = round(time.time(), 3)
        self.save()

    def forget(self, name):
        if self.data["steps"].pop(name, None) is not None:
            self.save()

    def set(self, key, value):
        self.data[key] = value
        self.save()

    def save(self):
        if os.path.isdir(self.instance_dir):
            write_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n", mode=0o600)


def _load(path, raw, step):
    def corrupt(reason):
        return JournalError("the build journal %s cannot be read (%s): repair it, or move it aside once the "
                            "resources it lists are known to be gone" % (path, reason), step=step)

    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise corrupt("not UTF-8 text")
    except ValueError as exc:
        raise corrupt("not JSON: %s" % exc)
    if not isinstance(data, dict):
        raise corrupt("a JSON %s, not an object" % type(data).__name__)
    steps = data.get("steps", {})
    if not isinstance(steps, dict) or not all(isinstance(entry, dict) for entry in steps.values()):
        raise corrupt("'steps' is not an object of objects")
    return data
