# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The build journal ``<uuid>/instance.json``: what each step created, so that a rollback
removes exactly that and nothing older."""

from __future__ import annotations

import json
import os
import time

from ansible_collections.nimbus.compute.plugins.module_utils._common.atomic import read_bytes, write_atomic

JOURNAL_NAME = "instance.json"


class Journal:
    def __init__(self, instance_dir):
        self.instance_dir = instance_dir
        self.path = os.path.join(instance_dir, JOURNAL_NAME)
        raw = read_bytes(self.path)
        self.data = json.loads(raw.decode("utf-8")) if raw else {"steps": {}}
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
