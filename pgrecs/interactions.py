"""The interaction log: validated bulk writes and file imports."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pgrecs.errors import ImportFileError, InvalidParameter, translated
from pgrecs.files import read_rows
from pgrecs.items import id_text, rows_of
from pgrecs.queries import query

MAX_WEIGHT = 1e6  # the table's check constraint: 0, or MIN_WEIGHT..MAX_WEIGHT in magnitude
MIN_WEIGHT = 1e-6
INTERACTION_COLUMNS = {"user_id", "item_id", "event_type", "occurred_at", "weight"}


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    event_type: str
    occurred_at: datetime | None = None
    weight: float | None = None

    def __post_init__(self) -> None:
        """The same rules as from_row for an Interaction built directly."""
        for key in ("user_id", "item_id", "event_type"):
            value = getattr(self, key)
            if not isinstance(value, str):
                raise InvalidParameter(f"{key} must be a str, got {type(value).__name__}")
            id_text(value, key)
        object.__setattr__(self, "occurred_at", event_time(self.occurred_at))
        object.__setattr__(self, "weight", _weight(self.weight))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Interaction:
        unknown = set(row) - INTERACTION_COLUMNS
        if unknown:
            raise InvalidParameter(f"unknown interaction field(s): {', '.join(sorted(unknown))}")
        return cls(
            user_id=id_text(row.get("user_id"), "user_id"),
            item_id=id_text(row.get("item_id"), "item_id"),
            event_type=id_text(row.get("event_type"), "event_type"),
            occurred_at=_timestamp(row.get("occurred_at")),
            weight=_weight(row.get("weight")),
        )


def event_time(value: Any) -> datetime | None:
    """An event time given in Python: a datetime or None (a naive one is UTC)."""
    if value is not None and not isinstance(value, datetime):
        raise InvalidParameter(f"occurred_at must be a datetime, got {value!r}")
    return _timestamp(value)


def _timestamp(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise InvalidParameter(f"occurred_at {value!r} is not an ISO 8601 timestamp") from exc
    else:
        raise InvalidParameter(f"occurred_at must be an ISO 8601 string, got {value!r}")
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)
    except OverflowError as exc:  # stored, it would read back as a year Python lacks
        raise InvalidParameter(
            f"occurred_at {value!r} is outside the years 1 to 9999 in UTC"
        ) from exc
    return moment


def _weight(value: Any) -> float | None:
    if value is None or value == "":
        return None
    # float() would also take True (1.0) and "1_000" (1000.0)
    if isinstance(value, bool) or (isinstance(value, str) and "_" in value):
        raise InvalidParameter(f"weight {value!r} is not a number")
    try:
        weight = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(f"weight {value!r} is not a number") from exc
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT or 0 < abs(weight) < MIN_WEIGHT:
        raise InvalidParameter(
            f"weight must be 0 or between {MIN_WEIGHT:g} and {MAX_WEIGHT:g} in magnitude"
            f" (negative for negative feedback), got {value!r}"
        )
    return weight


def record_interactions(
    conn: psycopg.Connection[Any], events: Iterable[Interaction | Mapping[str, Any]]
) -> int:
    """Append events in one statement (interaction ids in the events' order). An unknown item
    (UnknownItem) or event type (IntegrityError) fails the whole batch."""
    rows = [e if isinstance(e, Interaction) else Interaction.from_row(e) for e in rows_of(events)]
    if not rows:
        return 0
    params = {
        "user_ids": [e.user_id for e in rows],
        "item_ids": [e.item_id for e in rows],
        "event_types": [e.event_type for e in rows],
        "occurred_at": [e.occurred_at for e in rows],
        "weights": [e.weight for e in rows],
    }
    with translated(), conn.transaction():
        conn.execute(query("insert_interactions"), params)
    return len(rows)


def read_interactions_file(path: str | Path) -> list[tuple[int, Interaction]]:
    """(line number, event) for a whole file, or ImportFileError naming the first bad line."""
    events = []
    for line, row in read_rows(
        path, {"user_id", "item_id", "event_type"}, {"occurred_at", "weight"}
    ):
        try:
            events.append((line, Interaction.from_row(row)))
        except InvalidParameter as exc:
            raise ImportFileError(str(path), line, str(exc)) from exc
    return events


def import_interactions_file(conn: psycopg.Connection[Any], path: str | Path) -> int:
    """Import a whole file or nothing; unknown items or event types name the first bad line."""
    events = read_interactions_file(path)
    with translated():
        known_items = {
            row[0]
            for row in conn.execute(
                "select item_id from pgrecs.items where item_id = any(%s)",
                (sorted({e.item_id for _, e in events}),),
            )
        }
        known_types = {row[0] for row in conn.execute("select event_type from pgrecs.event_types")}
    for line, event in events:
        if event.item_id not in known_items:
            raise ImportFileError(str(path), line, f"unknown item {event.item_id!r}")
        if event.event_type not in known_types:
            raise ImportFileError(
                str(path),
                line,
                f"unknown event type {event.event_type!r} "
                f"(known: {', '.join(sorted(known_types))})",
            )
    return record_interactions(conn, (event for _, event in events))
