"""The rule editor's forms: a rule as a draft of texts (what the form shows, and what the
user typed when it is shown again with an error), turned into the API's
:class:`~millpond.server.flags.schemas.RuleInput` and back, and validation errors in plain
words. Pure functions (no I/O).

A rule's form names its fields ``name``, ``rule_type``, ``priority``, ``value``; its
conditions ``c0.…``, ``c1.…`` (count in ``conditions``); its groups ``g0.…`` (count in
``groups``) with their alternatives ``g0.c0.…`` (count in ``g0.conditions``). Each
condition has ``condition_type``, ``id`` and the fields of its kind (:data:`FIELDS`)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from millpond.models.flags import Condition, Rule

from ..flags.schemas import RuleInput
from .flag_words import COMPARE, KINDS, PERIODS, RULE_TYPES, actors_text

Form = dict[str, str]

FIELDS: dict[str, tuple[str, ...]] = {
    "actor_list": ("actor_entity", "operator", "actors", "actor_key"),
    "rollout": ("actor_entity", "actor_key", "percentage"),
    "trait": ("trait_entity", "trait_key", "operator", "trait_value", "comparison_trait_key"),
    "plan": ("operator", "resource_ids"),
    "company": ("operator", "resource_ids"),
    "user": ("operator", "resource_ids"),
    "metric": (
        "trait_entity",
        "event_name",
        "metric_aggregation",
        "metric_period",
        "operator",
        "metric_value",
        "comparison_trait_key",
    ),
    "flypper_rollout": ("actor_key", "percentage"),
}
"""The fields each kind of condition uses (the service ignores the others)."""

LABELS = {
    "actor_entity": "Whose",
    "trait_entity": "Whose",
    "operator": "Test",
    "actors": "Who, one per line: key=value (e.g. email=ada@example.com)",
    "actor_key": "Picked by key (empty: id)",
    "percentage": "Percentage (0 to 100)",
    "trait_key": "Trait",
    "trait_value": "Value",
    "comparison_trait_key": "Or compare with its trait",
    "resource_ids": "Ids, one per line",
    "event_name": "Track event",
    "metric_aggregation": "Counting",
    "metric_period": "Over",
    "metric_value": "Value",
    "name": "Name",
    "rule_type": "Kind of rule",
    "priority": "Priority",
    "value": "Then the flag is",
    "id": "Rule id",
    "key": "Key",
    "description": "Description",
    "feature_id": "Feature",
    "company": "Company",
    "user": "User",
    "plan_id": "Plan",
    "value_type": "Grant",
    "value_numeric": "Limit",
    "value_trait_key": "Limit trait",
}
_FLYPPER_KEY = "flypper entry name (e.g. user_id)"
_ALL = tuple(COMPARE)
_TESTS = {
    "company": {"eq": "is one of", "ne": "is not one of"},
    "user": {"eq": "is one of", "ne": "is not one of"},
    "plan": {
        "eq": "is one of",
        "ne": "is not one of",
        "is_empty": "has no plan",
        "not_empty": "has a plan",
    },
    "actor_list": {"eq": "is listed", "ne": "is not listed"},
    "trait": {op: COMPARE[op] for op in _ALL},
    "metric": {op: COMPARE[op] for op in _ALL},
}
_CHOICES = {
    "actor_entity": {"user": "the user", "company": "the company"},
    "trait_entity": {"company": "the company", "user": "the user"},
    "metric_aggregation": {"count": "number of events", "sum": "total quantity"},
    "metric_period": PERIODS,
}
_TEXTAREAS = ("actors", "resource_ids")
_MAX_ITEMS = 200


@dataclass(frozen=True)
class FieldView:
    """One input of a condition's form, ready for the template."""

    name: str
    label: str
    value: str
    widget: str
    """select, textarea or text."""
    options: tuple[tuple[str, str], ...] = ()


@dataclass
class ConditionDraft:
    prefix: str
    kind: str
    id: str = ""
    values: dict[str, str] = field(default_factory=dict)
    remove: bool = False

    @property
    def label(self) -> str:
        return KINDS[self.kind]

    @property
    def fields(self) -> list[FieldView]:
        return [self._view(name) for name in FIELDS[self.kind]]

    def _view(self, name: str) -> FieldView:
        value = self.values.get(name, "")
        label = _FLYPPER_KEY if self.kind == "flypper_rollout" and name == "actor_key" else None
        if name == "operator":
            return FieldView(name, LABELS[name], value, "select", tuple(_TESTS[self.kind].items()))
        if name in _CHOICES:
            return FieldView(name, LABELS[name], value, "select", tuple(_CHOICES[name].items()))
        widget = "textarea" if name in _TEXTAREAS else "text"
        return FieldView(name, label or LABELS[name], value, widget)


@dataclass
class GroupDraft:
    prefix: str
    id: str = ""
    conditions: list[ConditionDraft] = field(default_factory=list)
    remove: bool = False


@dataclass
class RuleDraft:
    """A rule as its form shows it (``id`` empty: a new rule)."""

    id: str = ""
    name: str = ""
    rule_type: str = "standard"
    priority: str = "0"
    value: str = "on"
    conditions: list[ConditionDraft] = field(default_factory=list)
    groups: list[GroupDraft] = field(default_factory=list)
    new_id: str = ""
    """A new rule's id as typed (optional)."""


RULE_TYPE_CHOICES = tuple(RULE_TYPES.items())
KIND_CHOICES = tuple(KINDS.items())


# -- from a rule -------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _field_text(c: Condition, name: str) -> str:
    if name == "actors":
        return "\n".join(actors_text(c.actors))
    if name == "resource_ids":
        return "\n".join(c.resource_ids)
    if name == "percentage":
        return f"{c.percentage:g}"
    if name == "metric_value":
        return _number(c.metric_value)
    if name == "trait_value":
        value = c.trait_value
        if isinstance(value, bool):
            return "true" if value else "false"
        return _number(value) if isinstance(value, int | float) else value or ""
    found = getattr(c, name)
    return "" if found is None else str(found)


def condition_draft(c: Condition, prefix: str) -> ConditionDraft:
    values = {name: _field_text(c, name) for name in FIELDS[c.condition_type]}
    return ConditionDraft(prefix, c.condition_type, c.id or "", values)


def blank_condition(kind: str, prefix: str) -> ConditionDraft:
    return condition_draft(Condition.model_validate({"condition_type": kind}), prefix)


def rule_draft(rule: Rule) -> RuleDraft:
    return RuleDraft(
        id=rule.id or "",
        name=rule.name,
        rule_type=rule.rule_type,
        priority=str(rule.priority),
        value="on" if rule.value else "off",
        conditions=[condition_draft(c, f"c{i}.") for i, c in enumerate(rule.conditions)],
        groups=[
            GroupDraft(
                f"g{j}.",
                g.id or "",
                [condition_draft(c, f"g{j}.c{i}.") for i, c in enumerate(g.conditions)],
            )
            for j, g in enumerate(rule.condition_groups)
        ],
    )


# -- from a form -------------------------------------------------------------------------------


def _count(form: Form, name: str) -> int:
    text = form.get(name, "0")
    return min(int(text), _MAX_ITEMS) if text.isdigit() else 0


def _condition_from_form(form: Form, prefix: str) -> ConditionDraft | None:
    kind = form.get(prefix + "condition_type", "")
    if kind not in FIELDS:
        return None
    values = {name: form.get(prefix + name, "") for name in FIELDS[kind]}
    return ConditionDraft(
        prefix, kind, form.get(prefix + "id", ""), values, form.get(prefix + "remove") == "on"
    )


def _conditions_from_form(form: Form, prefix: str) -> list[ConditionDraft]:
    found = (
        _condition_from_form(form, f"{prefix}c{i}.")
        for i in range(_count(form, prefix + "conditions"))
    )
    return [c for c in found if c is not None]


def draft_from_form(form: Form) -> RuleDraft:
    """What the user submitted, as a draft (nothing validated yet)."""
    groups = [
        GroupDraft(
            f"g{j}.",
            form.get(f"g{j}.id", ""),
            _conditions_from_form(form, f"g{j}."),
            form.get(f"g{j}.remove") == "on",
        )
        for j in range(_count(form, "groups"))
    ]
    return RuleDraft(
        id=form.get("rule_id", ""),
        name=form.get("name", ""),
        rule_type=form.get("rule_type", "standard"),
        priority=form.get("priority", "0"),
        value=form.get("value", "on"),
        conditions=_conditions_from_form(form, ""),
        groups=groups,
        new_id=form.get("new_id", ""),
    )


def add_to(draft: RuleDraft, where: str, kind: str) -> str:
    """Add a blank condition of ``kind``: ``where`` is "condition" (AND), "group" (a new
    group of alternatives) or a group's prefix ("g0.": one more alternative). The notice."""
    if kind not in FIELDS:
        return "Pick the kind of condition to add."
    if where == "condition":
        draft.conditions.append(blank_condition(kind, f"c{len(draft.conditions)}."))
    else:
        group = next((g for g in draft.groups if g.prefix == where), None)
        if group is None:
            group = GroupDraft(f"g{len(draft.groups)}.")
            draft.groups.append(group)
        group.conditions.append(blank_condition(kind, f"{group.prefix}c{len(group.conditions)}."))
    return "Fill in the new condition, then save the rule."


# -- to a rule ---------------------------------------------------------------------------------


class Problems(Exception):
    """What is wrong with a form, in plain words (one sentence each)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _scalar(text: str) -> str | int | float | bool | None:
    """A trait value typed in a form: numbers and true/false as such, else the text."""
    stripped = text.strip()
    if not stripped:
        return None
    if stripped in ("true", "false"):
        return stripped == "true"
    if re.fullmatch(r"-?\d+", stripped):
        return int(stripped)
    if _NUMBER.fullmatch(stripped) and math.isfinite(float(stripped)):
        return float(stripped)
    return text


def _as_number(text: str, where: str, problems: list[str]) -> float | int | None:
    stripped = text.strip()
    if not stripped:
        return None
    if not _NUMBER.fullmatch(stripped):
        problems.append(f"{where}: “{text}” is not a number.")
        return None
    number = float(stripped)
    return int(number) if number.is_integer() and "." not in stripped else number


def _lines(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"[\n,]", text) if item.strip()]


def _actors(text: str) -> list[dict[str, str]]:
    entries = []
    for line in text.splitlines():
        pairs = [p.strip() for p in line.split(",") if p.strip()]
        entry = {}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            entry[name.strip() if sep else "id"] = value.strip() if sep else name.strip()
        if entry:
            entries.append(entry)
    return entries


def _field_value(name: str, text: str, where: str, problems: list[str]) -> Any:
    if name == "actors":
        return _actors(text)
    if name == "resource_ids":
        return _lines(text)
    if name == "trait_value":
        return _scalar(text)
    if name == "metric_value":
        return _as_number(text, f"{where}, {LABELS[name].lower()}", problems)
    if name == "percentage":
        found = _as_number(text, f"{where}, percentage", problems)
        return 0 if found is None else found
    if name in ("actor_key", "trait_key", "comparison_trait_key", "event_name"):
        return text.strip() or None
    return text


def _condition_data(c: ConditionDraft, where: str, problems: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {"condition_type": c.kind, "id": c.id or None}
    for name in FIELDS[c.kind]:
        data[name] = _field_value(name, c.values.get(name, ""), where, problems)
    return data


def _where(n: int, group: int | None = None) -> str:
    return f"Condition {n + 1}" if group is None else f"Group {group + 1}, alternative {n + 1}"


def rule_data(draft: RuleDraft, problems: list[str]) -> dict[str, Any]:
    """The draft as the API's rule body (removed conditions and groups left out); problems
    found on the way (numbers that are not numbers) are added to ``problems``."""
    priority = draft.priority.strip() or "0"
    whole = re.fullmatch(r"-?\d+", priority) is not None
    if not whole:
        problems.append(f"Priority: “{draft.priority}” is not a whole number.")
    conditions = [
        _condition_data(c, _where(n), problems)
        for n, c in enumerate(draft.conditions)
        if not c.remove
    ]
    groups = [
        {
            "id": g.id or None,
            "conditions": [
                _condition_data(c, _where(n, j), problems)
                for n, c in enumerate(g.conditions)
                if not c.remove
            ],
        }
        for j, g in enumerate(draft.groups)
        if not g.remove
    ]
    data: dict[str, Any] = {
        "name": draft.name.strip(),
        "rule_type": draft.rule_type,
        "priority": int(priority) if whole else 0,
        "value": draft.value == "on",
        "conditions": conditions,
        "condition_groups": groups,
    }
    if not draft.id and draft.new_id.strip():
        data["id"] = draft.new_id.strip()
    return data


def rule_input(draft: RuleDraft) -> RuleInput:
    """The draft validated as the API validates a rule; :class:`Problems` when it is not."""
    problems: list[str] = []
    data = rule_data(draft, problems)
    if problems:
        raise Problems(problems)
    return validated(data)


def validated(data: Any) -> RuleInput:
    try:
        return RuleInput.model_validate(data)
    except ValidationError as exc:
        raise Problems([plain(e) for e in exc.errors()]) from None


def rule_from_json(text: str) -> RuleInput:
    """A rule typed as JSON (the API's rule body)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Problems(
            [f"This is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}."]
        ) from None
    if not isinstance(data, dict):
        raise Problems(["The rule must be a JSON object: {…}."])
    data.pop("flag_key", None)
    return validated(data)


def rule_json(rule: Rule) -> str:
    body = rule.model_dump(mode="json", exclude={"flag_key"})
    return json.dumps(body, indent=2, ensure_ascii=False)


# -- validation errors in plain words ----------------------------------------------------------


def _place(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    words = []
    if parts[:1] == ["condition_groups"] and len(parts) >= 2 and isinstance(parts[1], int):
        if len(parts) >= 4 and parts[2] == "conditions" and isinstance(parts[3], int):
            words.append(_where(parts[3], parts[1]))
            parts = parts[4:]
        else:
            words.append(f"Group {parts[1] + 1}")
            parts = parts[2:]
    elif parts[:1] == ["conditions"] and len(parts) >= 2 and isinstance(parts[1], int):
        words.append(_where(parts[1]))
        parts = parts[2:]
    names = [p for p in parts if isinstance(p, str) and not p.startswith(("function-", "literal"))]
    if names:
        label = LABELS.get(names[-1], names[-1].replace("_", " "))
        words.append(label if not words else label.lower())
    return ", ".join(words) or "The rule"


def _limit(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plain(error: Any) -> str:
    """One pydantic error as a sentence: "Condition 1, percentage (0 to 100): must be at
    most 100."."""
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind == "less_than_equal":
        what = f"must be at most {_limit(ctx.get('le'))}"
    elif kind == "greater_than_equal":
        what = f"must be at least {_limit(ctx.get('ge'))}"
    elif kind == "literal_error":
        what = f"must be one of {ctx.get('expected', 'the listed choices')}"
    elif kind == "string_pattern_mismatch":
        what = (
            "may hold letters, digits, '_', '.', ':' and '-' only, starting with a letter or"
            " digit (up to 128 characters)"
        )
    elif kind == "missing":
        what = "is required"
    elif kind == "extra_forbidden":
        what = "is not a field of a rule"
    else:
        what = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
        what = what[:1].lower() + what[1:]
    place = _place(tuple(error.get("loc", ())))
    return f"{place[:1].upper()}{place[1:]}: {what}."
