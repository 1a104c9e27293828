"""flypper's flag data on millpond flags, both ways, without flypper itself.

A flag made through flypper is one millpond flag: ``default_value`` false and one standard
rule ``flypper`` whose ``value`` is flypper's ``enabled`` and whose conditions are its gates,
AND'ed as flypper ANDs them: ``enabled_for_actors`` an ``actor_list`` condition (the entry
name kept in its ``actor_key``), ``enabled_for_percentage_of_actors`` a ``flypper_rollout``
condition (flypper's own md5 hashing). A disabled flag keeps its gates (the rule's value is
false, so it never turns the flag on). So millpond's SDK, CLI and console answer as flypper
does for the same actor. Entry names map to millpond keys as everywhere in millpond:
``user_id`` is the user's ``id`` key, ``company_<key>`` a company key, any other name a
user key.

A flag flypper cannot express (traits, plans, a feature, several rules, millpond's salted
``rollout``…) is shown to flypper as disabled and without gates; writing it through flypper
replaces its rules by flypper's (and clears its ``default_value`` and feature), unless the
write changes nothing flypper can see (soft delete and reactivate keep its rules).

:func:`import_flypper` reads flypper-sqlalchemy's tables (``flypper_flags``) into millpond.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..engine.flags import flypper_actor
from ..errors import ApiError, ConfigurationError, NotFoundError
from ..models.flags import Condition, Flag, FlagRuleset, Rule

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..client import Millpond

RULE_ID = "flypper"
Outcome = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Gates:
    """What flypper sees of a flag, apart from its name, version and deletion."""

    enabled: bool
    enabled_for_actors: dict[str, Any] | None = None
    enabled_for_percentage_of_actors: dict[str, Any] | None = None


def _entry_name(condition: Condition) -> str | None:
    """An actor list's flypper entry name: the one kept in ``actor_key`` when it names the
    same key, else ``<entity>_<key>``; None when the entries use several key names."""
    names = {name for entry in condition.actors for name in entry}
    if any(len(entry) != 1 for entry in condition.actors) or len(names) > 1:
        return None
    kept = condition.actor_key
    of_company = condition.actor_entity == "company"
    if kept is not None and (not names or flypper_actor(kept) == (of_company, *names)):
        return kept
    return f"{condition.actor_entity}_{next(iter(names), 'id')}"


def _gates_rule(rule: Rule) -> Gates | None:
    """The gates of a rule shaped as flypper's (standard, an ``eq`` actor list on one key
    and/or a ``flypper_rollout``, nothing else); None for any other rule."""
    if rule.rule_type != "standard" or rule.condition_groups:
        return None
    actors: dict[str, Any] | None = None
    percentage: dict[str, Any] | None = None
    for condition in rule.conditions:
        kind = condition.condition_type
        if kind == "actor_list" and actors is None and condition.operator == "eq":
            name = _entry_name(condition)
            if name is None:
                return None
            ids = [value for entry in condition.actors for value in entry.values()]
            actors = {"actor_key": name, "actor_ids": ids}
        elif kind == "flypper_rollout" and percentage is None:
            key = condition.actor_key or ""
            percentage = {"actor_key": key, "percentage": condition.percentage}
        else:
            return None
    return Gates(rule.value, actors, percentage)


def gates_of(ruleset: FlagRuleset) -> Gates | None:
    """flypper's view of a flag; None when flypper cannot express it. Expressible: one
    flypper-shaped rule over a false default, or rules that all give the default value
    (on or off for everyone, e.g. after ``millpond flags toggle``)."""
    flag, rules = ruleset.flag, ruleset.rules
    if flag.feature_id is not None or ruleset.feature is not None or ruleset.entitlements:
        return None
    if len(rules) == 1 and not flag.default_value:
        gates = _gates_rule(rules[0])
        if gates is not None:
            return gates
    if all(rule.value == flag.default_value for rule in rules):
        return Gates(enabled=flag.default_value)
    return None


def flag_data(ruleset: FlagRuleset) -> dict[str, Any]:
    """flypper's ``FlagData`` of a millpond flag (disabled when flypper cannot express it)."""
    flag = ruleset.flag
    gates = gates_of(ruleset) or Gates(enabled=False)
    return {
        "name": flag.key,
        "deleted": flag.deleted_at is not None,
        "enabled": gates.enabled,
        "enabled_for_actors": gates.enabled_for_actors,
        "enabled_for_percentage_of_actors": gates.enabled_for_percentage_of_actors,
        "updated_at": flag.updated_at.timestamp() if flag.updated_at else 0.0,
        "version": flag.version,
    }


def gates_from(data: Mapping[str, Any]) -> Gates:
    """The gates of flypper's (unversioned) flag data, normalized as they are stored."""
    actors = data.get("enabled_for_actors")
    percentage = data.get("enabled_for_percentage_of_actors")
    return Gates(
        enabled=bool(data["enabled"]),
        enabled_for_actors={
            "actor_key": str(actors["actor_key"]),
            "actor_ids": [str(a) for a in actors["actor_ids"]],
        }
        if actors
        else None,
        enabled_for_percentage_of_actors={
            "actor_key": str(percentage["actor_key"]),
            "percentage": float(percentage["percentage"]),
        }
        if percentage
        else None,
    )


def rule_of(gates: Gates) -> dict[str, Any]:
    """The millpond rule (API input) of flypper's gates."""
    conditions: list[dict[str, Any]] = []
    if gates.enabled_for_actors is not None:
        name = gates.enabled_for_actors["actor_key"]
        of_company, key = flypper_actor(name)
        conditions.append(
            {
                "id": "flypper-actors",
                "condition_type": "actor_list",
                "actor_entity": "company" if of_company else "user",
                "actors": [{key: actor} for actor in gates.enabled_for_actors["actor_ids"]],
                "actor_key": name,
            }
        )
    if gates.enabled_for_percentage_of_actors is not None:
        conditions.append(
            {
                "id": "flypper-percentage",
                "condition_type": "flypper_rollout",
                "actor_key": gates.enabled_for_percentage_of_actors["actor_key"],
                "percentage": gates.enabled_for_percentage_of_actors["percentage"],
            }
        )
    return {"id": RULE_ID, "name": "flypper", "value": gates.enabled, "conditions": conditions}


class FlypperFlags:
    """flypper's storage operations on the flags of a millpond client's environment, over
    the HTTP API (each write is committed by the server when it returns)."""

    def __init__(self, client: Millpond) -> None:
        self.client = client

    def read(self, since_version: int = 0) -> list[dict[str, Any]]:
        """flypper's data of every flag changed after ``since_version``, deleted ones
        included, by version (``0``: every flag)."""
        rulesets = self.client.flags.rulesets(since_version=since_version)
        return [flag_data(ruleset) for ruleset in rulesets]

    def _flag(self, name: str) -> Flag | None:
        """The flag, deleted or not; None when there is none (any other error raises)."""
        try:
            return self.client.flags.get(name, include_deleted=True)
        except NotFoundError as exc:
            if exc.code != "flag_not_found":
                raise
            return None

    def _current(self, name: str) -> FlagRuleset | None:
        flag = self._flag(name)
        if flag is None:
            return None
        changed = self.client.flags.rulesets(since_version=flag.version - 1)
        return next((r for r in changed if r.flag.key == name), None)

    def write(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], Outcome]:
        """Make the flag say what ``data`` says (create, change, soft delete or restore it);
        its new flypper data and what was done."""
        name, deleted = str(data["name"]), bool(data["deleted"])
        gates = gates_from(data)
        flags = self.client.flags
        current = self._current(name)
        if current is None:
            flags.create(name, rules=[rule_of(gates)])
            if deleted:
                flags.delete(name)
            return self._data(name), "created"
        was_deleted = current.flag.deleted_at is not None
        same = (gates_of(current) or Gates(enabled=False)) == gates  # what flypper saw
        if same and was_deleted == deleted:
            return flag_data(current), "unchanged"
        if not same:
            if was_deleted:
                flags.restore(name)
            try:
                flags.set_rules(name, [rule_of(gates)])
            except ApiError:
                if was_deleted:  # deleted it was, deleted it stays
                    flags.delete(name)
                raise
            if current.flag.default_value or current.flag.feature_id is not None:
                flags.update(name, default_value=False, clear_feature=True)
            was_deleted = False
        if deleted and not was_deleted:
            flags.delete(name)
        elif was_deleted and not deleted:
            flags.restore(name)
        return self._data(name), "updated"

    def _data(self, name: str) -> dict[str, Any]:
        found = self._current(name)
        if found is None:  # pragma: no cover - removed by someone else meanwhile
            raise NotFoundError(404, "flag_not_found", f"flag {name!r} is gone")
        return flag_data(found)

    def remove(self, name: str | None) -> None:
        """Remove the flag for good (soft-deleting it first if live, so clients polling by
        version see it go); no such flag: nothing to do."""
        flag = self._flag(name) if name else None
        if flag is None:
            return
        if flag.deleted_at is None:
            self.client.flags.delete(flag.key)
        self.client.flags.purge(flag.key)


# -- import from flypper-sqlalchemy --------------------------------------------------------


def _rows(engine: Engine) -> list[tuple[str, Any]]:
    """flypper-sqlalchemy's flags: (name, data) by version, as its ``list()`` reads them."""
    from sqlalchemy import text
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    query = text("SELECT name, data FROM flypper_flags ORDER BY version, name")
    try:
        with engine.connect() as conn:
            rows = [(str(name), data) for name, data in conn.execute(query)]
    except NoSuchModuleError as exc:
        raise ConfigurationError(f"cannot read flypper-sqlalchemy's tables: {exc}") from None
    except ArgumentError:  # its message would repeat the URL, password and all
        raise ConfigurationError(
            "not a SQLAlchemy URL: dialect+driver://user:password@host/database"
        ) from None
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise ConfigurationError(
            f"cannot read flypper-sqlalchemy's flypper_flags table: {reason}"
        ) from None
    return [
        (name, json.loads(data) if isinstance(data, str | bytes) else data) for name, data in rows
    ]


def import_flypper(client: Millpond, source: str | Engine) -> list[tuple[str, Outcome | Exception]]:
    """Copy flypper-sqlalchemy's flags (its ``flypper_flags`` table, at a SQLAlchemy URL
    or through an engine) into the client's environment: each flag created, updated or left
    unchanged (running it again changes nothing), deleted ones kept deleted. One bad flag
    (e.g. a name millpond refuses) does not stop the others: its error is in the result.
    The table that cannot be read raises :class:`~millpond.errors.ConfigurationError`."""
    try:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError as exc:  # pragma: no cover - SQLAlchemy is in the dev environment
        raise ConfigurationError(
            'reading flypper-sqlalchemy tables needs SQLAlchemy: pip install "millpond[sqlalchemy]"'
        ) from exc
    if isinstance(source, str):
        try:
            engine = create_engine(source)
        except NoSuchModuleError as exc:
            raise ConfigurationError(f"cannot read flypper-sqlalchemy's tables: {exc}") from None
        except ArgumentError:  # its message would repeat the URL, password and all
            raise ConfigurationError(
                "not a SQLAlchemy URL: dialect+driver://user:password@host/database"
            ) from None
        except ImportError as exc:
            raise ConfigurationError(f"the database's driver is not installed: {exc}") from None
        try:
            rows = _rows(engine)
        finally:
            engine.dispose()
    else:
        rows = _rows(source)
    flags = FlypperFlags(client)
    done: list[tuple[str, Outcome | Exception]] = []
    for name, data in rows:
        try:
            done.append((name, flags.write({**data, "name": name})[1]))
        except (ApiError, KeyError, TypeError, ValueError) as exc:
            done.append((name, exc))
    return done
