"""Items: the catalogue rows, their enriched text, and how they are written."""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgrecs.errors import ImportFileError, InvalidParameter, translated
from pgrecs.files import read_rows, strict_json
from pgrecs.queries import query

ITEM_COLUMNS = {"item_id", "title", "description", "category", "tags", "attributes", "available"}
MAX_TEXT = 100_000  # characters per text field; the model reads ~256 tokens anyway


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str = ""
    description: str = ""
    category: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    available: bool = True

    def __post_init__(self) -> None:
        """What the table would refuse or misread, checked for an Item built directly too (a
        str of tags would be stored letter by letter); None for a text field means empty. The
        length limit is from_row's: it is the import's policy, and rows written by SQL may
        exceed it."""
        if not isinstance(self.item_id, str):
            raise InvalidParameter(f"item_id must be a str, got {type(self.item_id).__name__}")
        id_text(self.item_id, "item_id")
        for key in ("title", "description", "category"):
            value = getattr(self, key)
            if value is None:
                if key != "category":
                    object.__setattr__(self, key, "")
            elif not isinstance(value, str):
                raise InvalidParameter(f"{key} must be a str, got {type(value).__name__}")
            else:
                check_text(value, key)
        if not isinstance(self.tags, list | tuple) or not all(
            isinstance(tag, str) for tag in self.tags
        ):
            raise InvalidParameter("tags must be a list or tuple of strings")
        for tag in self.tags:
            check_text(tag, "tags")
        object.__setattr__(self, "tags", tuple(self.tags))
        if not isinstance(self.attributes, dict):
            raise InvalidParameter("attributes must be a JSON object (a dict)")
        check_json(self.attributes, "attributes")
        if not isinstance(self.available, bool):
            raise InvalidParameter(f"available must be true or false, got {self.available!r}")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Item:
        """Validate a loose mapping (a file row, a dict from a caller) into an Item."""
        unknown = set(row) - ITEM_COLUMNS
        if unknown:
            raise InvalidParameter(f"unknown item field(s): {', '.join(sorted(unknown))}")
        return cls(
            item_id=id_text(row.get("item_id"), "item_id"),
            title=_text(row, "title"),
            description=_text(row, "description"),
            category=_text(row, "category") or None,
            tags=_tags(row.get("tags")),
            attributes=_attributes(row.get("attributes")),
            available=_bool(row.get("available")),
        )

    def text(self) -> str:
        """The enriched text that is embedded: more context gives better neighbours."""
        parts = [self.title.strip()]
        if self.category:
            parts.append(f"Category: {self.category}")
        if self.tags:
            parts.append(f"Tags: {', '.join(self.tags)}")
        if self.description.strip():
            parts.append(self.description.strip())
        if self.attributes:
            parts.append(
                "; ".join(
                    f"{key}: {_attr_text(value)}" for key, value in sorted(self.attributes.items())
                )
            )
        return ". ".join(part for part in parts if part)

    def content_hash(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()


def id_text(value: Any, key: str) -> str:
    """An id from a loose row (a file, a caller's dict): a non-empty string, or an int taken as
    its text. Anything else (a float, a dict) is refused rather than passed through str()."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidParameter(f"{key} is required (a non-empty string)")
    return as_text(value, key)


def as_text(value: Any, key: str) -> str:
    """A str, or an int as its text (numpy's integers too), that PostgreSQL can store."""
    if not isinstance(value, str | numbers.Integral) or isinstance(value, bool):
        raise InvalidParameter(f"{key} must be a string, got {type(value).__name__}")
    # str.__str__: the text itself, also for a str subclass such as a (str, Enum) member
    text = str.__str__(value) if isinstance(value, str) else str(int(value))
    check_text(text, key)
    return text


def check_text(text: str, key: str) -> None:
    """Refuse what PostgreSQL's UTF-8 text cannot hold: NUL, and lone UTF-16 surrogates (a
    JSON escape such as "\\ud800" without its pair), which psycopg could not even send."""
    verb = "contain" if key.endswith("s") else "contains"  # tags, attributes, item_ids
    if "\x00" in text:
        raise InvalidParameter(f"{key} {verb} a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidParameter(
            f"{key} {verb} a lone UTF-16 surrogate ({text[exc.start]!r}), which is not text"
        ) from exc


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidParameter(f"{key} must be text, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):  # JSON 1e400 reads as inf
        raise InvalidParameter(f"{key} must be text, got the number {value!r}")
    text = str(value)
    if len(text) > MAX_TEXT:
        raise InvalidParameter(f"{key} is {len(text)} characters long; the limit is {MAX_TEXT}")
    check_text(text, key)
    return text


def _tags(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        stripped = value.strip()
        is_json = stripped.startswith("[") and stripped.endswith("]")  # not "[new]|sale"
        value = _json(stripped, "tags") if is_json else stripped.split("|")
    if not isinstance(value, list | tuple) or not all(isinstance(tag, str) for tag in value):
        raise InvalidParameter("tags must be a list of strings (JSON array or `a|b|c`)")
    return tuple(tag.strip() for tag in value if tag.strip())


def _attributes(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = _json(value, "attributes")
    if not isinstance(value, dict):
        raise InvalidParameter("attributes must be a JSON object")
    return value


def _json(text: str, key: str) -> Any:
    try:
        return strict_json(text)
    except ValueError as exc:
        raise InvalidParameter(f"{key}: {exc}") from exc


def check_json(value: Any, key: str) -> None:
    """Refuse what PostgreSQL's jsonb would: numbers that are not finite (1e400 reads as
    infinity), NUL characters, values that are not JSON (a set, a date); and nesting deeper
    than json can write back."""
    todo = [(value, 0)]
    while todo:
        node, depth = todo.pop()
        if depth > 500:
            raise InvalidParameter(f"{key} are nested too deeply (more than 500 levels)")
        if isinstance(node, dict):
            for name, inner in node.items():
                if not isinstance(name, str):
                    raise InvalidParameter(f"{key}: keys must be strings, got {name!r}")
                check_text(name, key)
                todo.append((inner, depth + 1))
        elif isinstance(node, list | tuple):
            todo.extend((inner, depth + 1) for inner in node)
        elif isinstance(node, str):
            check_text(node, key)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidParameter(f"{key} contain a number that is not finite ({node!r})")
        elif node is not None and not isinstance(node, bool | int):
            raise InvalidParameter(f"{key}: {type(node).__name__} is not a JSON value")


def _bool(value: Any) -> bool:
    if value is None:  # absent, or JSON null: the default
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "t", "1", "yes", ""}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "f", "0", "no"}:
        return False
    raise InvalidParameter(f"available must be true or false, got {value!r}")


def _attr_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(part) for part in value)
    return str(value)


def upsert_items(conn: psycopg.Connection[Any], items: Iterable[Item | Mapping[str, Any]]) -> int:
    """Insert or update items in one transaction; returns how many rows changed.

    Vectors are not touched: `embed_pending` notices the changed text by its hash.
    """
    rows = [item if isinstance(item, Item) else Item.from_row(item) for item in rows_of(items)]
    _check_unique(rows)
    params = [
        {
            "item_id": item.item_id,
            "title": item.title,
            "description": item.description,
            "category": item.category,
            "tags": list(item.tags),
            "attributes": Jsonb(item.attributes),
            "available": item.available,
        }
        for item in rows
    ]
    with translated(), conn.transaction(), conn.cursor() as cur:
        cur.executemany(query("upsert_item"), params, returning=False)
        return max(cur.rowcount, 0)


def _check_unique(items: Sequence[Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise InvalidParameter(f"item {item.item_id!r} appears twice in one upsert")
        seen.add(item.item_id)


def delete_items(conn: psycopg.Connection[Any], item_ids: Sequence[str]) -> list[str]:
    """Delete items (and their interactions); returns the ids that existed."""
    params = {"item_ids": string_list(item_ids, "item_ids")}
    with translated(), conn.transaction():
        return [row[0] for row in conn.execute(query("delete_items"), params)]


def string_list(values: Sequence[str], name: str) -> list[str]:
    """A list of texts from a sequence of ids or categories (an int is taken as its text, as
    for a single id; None is left for the SQL functions to name). A lone string is refused:
    list("sku-1") would silently mean 's', 'k', 'u', '-', '1'."""
    if isinstance(values, str | bytes):
        raise InvalidParameter(f"{name} must be a list, not a single string: write [{values!r}]")
    return [None if value is None else as_text(value, name) for value in values]


def rows_of(values: Iterable[Any]) -> Iterable[Any]:
    """Rows for a bulk write; a lone mapping is refused: iterating it would yield its keys."""
    if isinstance(values, Mapping | str | bytes):
        raise InvalidParameter(
            f"expected a list of rows, got a single {type(values).__name__}: write [row]"
        )
    return values


def read_items_file(path: str | Path) -> list[Item]:
    """Parse a whole items file, or raise ImportFileError naming the first bad line."""
    items: list[Item] = []
    seen: dict[str, int] = {}
    for line, row in read_rows(path, {"item_id"}, ITEM_COLUMNS - {"item_id"}):
        try:
            item = Item.from_row(row)
        except InvalidParameter as exc:
            raise ImportFileError(str(path), line, str(exc)) from exc
        if item.item_id in seen:
            raise ImportFileError(
                str(path),
                line,
                f"item {item.item_id!r} already appears on line {seen[item.item_id]}",
            )
        seen[item.item_id] = line
        items.append(item)
    return items
