# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Nova's extra-spec operators (``>= 4``, ``s== x``, ``<in> avx``, ``<or> a <or> b`` ...), one matcher."""

from __future__ import annotations

import operator


def _num(op):
    def compare(x, y):
        try:
            return op(float(x), float(y))
        except ValueError:
            return False  # Nova would raise; a non-number never matches a numeric rule here

    return compare


OPERATORS = {
    "=": _num(operator.ge),  # Nova: "=" means "at least"
    "==": _num(operator.eq),
    "!=": _num(operator.ne),
    ">=": _num(operator.ge),
    "<=": _num(operator.le),
    "<in>": lambda x, y: y in x,
    "<all-in>": lambda x, y: all(v in x for v in y),
    "s==": operator.eq,
    "s!=": operator.ne,
    "s<": operator.lt,
    "s<=": operator.le,
    "s>": operator.gt,
    "s>=": operator.ge,
}


def match(value, req):
    """True when the string ``value`` satisfies the requirement ``req`` (Nova's extra_specs_ops.match)."""
    words = req.split()
    op = method = None
    if words:
        op = words.pop(0)
        method = OPERATORS.get(op)
    if op != "<or>" and not method:
        return value == req
    if value is None:
        return False
    if op == "<or>":
        while words:
            if words.pop(0) == value:
                return True
            if words:
                words.pop(0)  # the next "<or>"
        return False
    if words:
        if op == "<all-in>":
            return method(value, words)
        return method(value, words[0])
    return False
