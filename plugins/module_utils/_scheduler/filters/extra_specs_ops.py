# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Nova's extra-spec operators (``>= 4``, ``s== x``, ``<in> avx``, ``<or> a <or> b`` ...), one matcher."""

from __future__ import annotations

import math
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


_NUMERIC = ("=", "==", "!=", ">=", "<=")


def problem(req):
    """Why the requirement ``req`` is malformed (an operator without its operand, a numeric operator with a
    non-number, a dangling ``<or>``), or None. match() would quietly never match such a requirement."""
    words = req.split()
    if not words or (words[0] != "<or>" and words[0] not in OPERATORS):
        return None  # a plain value, compared as a string
    op, operands = words[0], words[1:]
    if op == "<or>":
        values, separators = operands[0::2], operands[1::2]
        if not values or len(operands) % 2 == 0 or any(s != "<or>" for s in separators):
            return "<or> needs values separated by <or>, as in '<or> a <or> b'"
        return None
    if op == "<all-in>":
        return None if operands else "<all-in> needs at least one value"
    if len(operands) != 1:
        return "%s needs exactly one operand" % op
    if op in _NUMERIC:
        try:
            number = float(operands[0])
        except ValueError:
            number = None
        if number is None or not math.isfinite(number):
            return "%s needs a finite number, got %r" % (op, operands[0])
    return None
