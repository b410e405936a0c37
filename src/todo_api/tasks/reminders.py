"""A task's reminders as stored in `tasks.reminders`: what the client asked for, with the `id`, `fire_at` and
`fired_at` the service keeps. Pure functions; the triggers of migration 0009 arm what they return.

Stored as `{"at" | "before_due", "id", "fire_at", "fired_at"}` with the keys in jsonb's order (shorter first, then
by bytes), so a task renders to the same bytes from PostgreSQL's jsonb and from SQLite's JSON text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_json

from todo_api.tasks.models import REMINDER_NEEDS_DUE_DATE, ReminderIn

Stored = dict[str, Any]


def iso(moment: datetime) -> str:
    """A UTC date-time as the API writes it (pydantic's form: microseconds only when there are any)."""
    text: str = to_json(moment).decode()[1:-1]
    return text


def _spec(item: ReminderIn | Stored) -> tuple[str, Any]:
    if isinstance(item, ReminderIn):
        return ("at", iso(item.at)) if item.at is not None else ("before_due", item.before_due)
    return ("at", item["at"]) if "at" in item else ("before_due", item["before_due"])


def _fire_at(spec: tuple[str, Any], due: datetime | None) -> str:
    kind, value = spec
    if kind == "at":
        return str(value)
    if due is None:
        raise ValueError(REMINDER_NEEDS_DUE_DATE)
    return iso(due - timedelta(minutes=int(value)))


def _stored(spec: tuple[str, Any], reminder_id: int, fire_at: str, fired_at: str | None) -> Stored:
    item = {spec[0]: spec[1], "id": reminder_id, "fire_at": fire_at, "fired_at": fired_at}
    return {key: item[key] for key in sorted(item, key=lambda key: (len(key), key))}


def plan(
    wanted: Sequence[ReminderIn | Stored], current: Sequence[Stored], due: datetime | None, now: datetime
) -> list[Stored]:
    """The reminders a task gets when the client sends `wanted` (or, when only the due date changes, its `current`
    ones again) and its due date is `due`. A reminder the task already has (the same `at`, or the same `before_due`)
    keeps its id and, while its `fire_at` stays, its state; one whose `fire_at` moved into the future is armed again
    (`fired_at` null). Raises ValueError for a `before_due` without a due date."""
    unused = list(current)
    next_id = max((int(item["id"]) for item in current), default=0) + 1
    planned: list[Stored] = []
    for item in wanted:
        spec = _spec(item)
        fire_at = _fire_at(spec, due)
        match = next((old for old in unused if _spec(old) == spec), None)
        if match is None:
            planned.append(_stored(spec, next_id, fire_at, None))
            next_id += 1
            continue
        unused.remove(match)
        fired_at = match["fired_at"]
        if fire_at != match["fire_at"] and datetime.fromisoformat(fire_at) > now:
            fired_at = None
        planned.append(_stored(spec, int(match["id"]), fire_at, fired_at))
    return planned


def carried(current: Sequence[Stored], due: datetime) -> list[Stored]:
    """The next occurrence's reminders: the relative ones, from its due date, none fired (absolute ones stay)."""
    return [
        _stored(("before_due", item["before_due"]), int(item["id"]), _fire_at(_spec(item), due), None)
        for item in current
        if "before_due" in item
    ]


def fired(current: Sequence[Stored], reminder_id: int, at: datetime) -> list[Stored]:
    """`current` with reminder `reminder_id` delivered at `at`."""
    return [{**item, "fired_at": iso(at)} if item["id"] == reminder_id else item for item in current]
