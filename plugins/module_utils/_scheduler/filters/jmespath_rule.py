# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""JMESPathFilter: Nova's JsonFilter idea with JMESPath: user rules evaluated against each host's fields.

Rules come from the lookup option ``rules`` (every request) and the hint ``query`` (one request).
A host passes when every rule gives a JMESPath-true value (not null, false, or an empty string/list/object).
Example: ``free_ram_mb >= `4096` && contains(traits, 'CUSTOM_SSD')``.
"""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter


def compile_rule(expression):
    try:
        import jmespath
        from jmespath.exceptions import JMESPathError
    except ImportError:
        raise SchedulerInputError("JMESPath rules need the Python package jmespath on the controller")
    try:
        return jmespath.compile(expression)
    except JMESPathError as err:
        raise SchedulerInputError("bad JMESPath rule %r: %s" % (expression, err))
    except RecursionError:  # jmespath's parser recurses once per nesting level
        raise SchedulerInputError("bad JMESPath rule %r...: nested too deeply" % (expression[:50],))


def _true(value):
    # JMESPath truth: 0 is true (unlike Python's), null/false/empty string, list and object are false.
    return value is not None and value is not False and not (isinstance(value, (str, list, dict)) and not value)


class JMESPathFilter(BaseHostFilter):
    name = "JMESPathFilter"
    label = "JMESPath rule filter"

    def __init__(self, config):
        super().__init__(config)
        self.rules = [compile_rule(r) for r in config.get("rules") or []]
        self._query = {}

    def _compiled(self, spec):
        rules = list(self.rules)
        if spec.query:
            if spec.query not in self._query:
                self._query[spec.query] = compile_rule(spec.query)
            rules.append(self._query[spec.query])
        return rules

    def is_active(self, spec):
        return bool(self._compiled(spec))

    def filter_all(self, hosts, spec):
        rules = self._compiled(spec)
        kept = []
        for host in hosts:
            data = host.to_dict()
            try:
                if all(_true(rule.search(data)) for rule in rules):
                    kept.append(host)
            except Exception as err:  # jmespath raises several types on bad data, e.g. comparing a string
                raise SchedulerInputError("JMESPath rule failed on host %s: %s" % (host.hostname, err))
        return kept
