# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""How long a module spent on its step, reported as ``elapsed`` in its result (success or failure).

The server role sums these into its per-step timings; what the whole build took beyond them is
Ansible's own cost (task handling, module transport and start-up), reported apart by the playbook.
"""

from __future__ import annotations

import time


class StepClock:
    """Started when created; ``stamp`` adds the seconds since then to a result dict."""

    def __init__(self):
        self.started = time.monotonic()

    def stamp(self, result):
        result["elapsed"] = round(time.monotonic() - self.started, 3)
        return result
