"""Trait and metric values: when a value is a number, its text form, emptiness, and the
comparison operators (numeric when both sides are numbers, else by text)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

Number = int | float

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_INT_DIGITS = 4000  # int() refuses longer strings (sys.int_info.default_max_str_digits)

ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _from_text(text: str) -> Number | None:
    if _NUMBER.fullmatch(text) is None:
        return None
    if "." in text or "e" in text or "E" in text or len(text) > _MAX_INT_DIGITS:
        number = float(text)
        return number if number - number == 0.0 else None
    return int(text)


def as_number(value: object) -> Number | None:
    """The value as a number, or None when it is not one.

    int and finite float are numbers; bool is not; a string is one when it is a decimal
    literal (optional sign, digits, optional fraction, optional exponent, no spaces or
    underscores), read as an int when it has no fraction or exponent (exact), else as a
    float."""
    if type(value) is str:
        if value.isdigit() and value.isascii() and len(value) <= _MAX_INT_DIGITS:
            return int(value)
        return _from_text(value)
    if type(value) is int:
        return value
    if type(value) is float:
        return value if value - value == 0.0 else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        number = float(value)
        return number if number - number == 0.0 else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str):
        return _from_text(str(value))
    return None


def as_text(value: object) -> str:
    """The value as text: strings as they are, booleans as ``true``/``false``, floats in their
    shortest round-trip form, anything else by ``str``."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float:
        return repr(value)
    return str(value)


def is_empty(value: object) -> bool:
    """Missing, None and the empty string are empty; nothing else is."""
    return value is None or (type(value) is str and value == "")


def compare(op: str, left: object, right: object) -> bool:
    """``left <op> right`` with the semantics of :func:`comparator` (right known only now)."""
    if op == "is_empty":
        return is_empty(left)
    if op == "not_empty":
        return not is_empty(left)
    fn = ORDERED.get(op)
    if fn is None:
        return False
    left_empty = is_empty(left)
    right_empty = is_empty(right)
    if left_empty or right_empty:
        if op == "eq":
            return left_empty and right_empty
        if op == "ne":
            return left_empty != right_empty
        return False
    right_number = as_number(right)
    if right_number is not None:
        left_number = as_number(left)
        if left_number is not None:
            return fn(left_number, right_number)
    return fn(as_text(left), as_text(right))


def _never(left: object) -> bool:
    return False


def comparator(op: str, right: object) -> Callable[[object], bool]:
    """A test ``left <op> right`` with ``right`` fixed (parsed once):

    * ``is_empty`` / ``not_empty``: whether ``left`` is missing, None or "" (``right`` unused);
    * when either side is empty: ``eq`` holds iff both are, ``ne`` iff one is, the order
      operators never hold;
    * when both sides are numbers (see :func:`as_number`): compared as numbers, so
      ``"10" > "9"`` and ``"1.50" == 1.5``;
    * otherwise compared as text (:func:`as_text`) by code point: ``"b" > "a"``,
      ``True == "true"``.
    """
    if op == "is_empty":
        return is_empty
    if op == "not_empty":
        return lambda left: not is_empty(left)
    fn = ORDERED.get(op)
    if fn is None:
        return _never
    if is_empty(right):
        if op == "eq":
            return is_empty
        if op == "ne":
            return lambda left: not is_empty(left)
        return _never
    on_empty = op == "ne"
    right_text = as_text(right)
    right_number = as_number(right)
    if right_number is None:

        def by_text(left: object) -> bool:
            if left is None:
                return on_empty
            if type(left) is str:
                if left == "":
                    return on_empty
                return fn(left, right_text)
            return fn(as_text(left), right_text)

        return by_text

    def by_number(left: object) -> bool:
        if left is None:
            return on_empty
        if type(left) is int:
            return fn(left, right_number)
        if type(left) is str and left == "":
            return on_empty
        left_number = as_number(left)
        if left_number is not None:
            return fn(left_number, right_number)
        return fn(as_text(left), right_text)

    return by_number
