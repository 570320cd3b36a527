"""Read import files: CSV with a header, or JSONL. Rows come with their line numbers so that
errors can name the line."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pgrecs.errors import ImportFileError

# Characters in one CSV field. csv's default (128 kB) is too small for attributes; the limit
# is process-wide, so it is raised once here, never lowered. It also bounds what a stray quote
# makes the reader buffer before it reports the line.
MAX_FIELD = 1 << 24  # 16 MiB
csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD))


def read_rows(
    path: str | Path, required: set[str], optional: set[str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row) from a .csv or .jsonl/.ndjson file, checking the columns."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise ImportFileError(name, None, "no such file")
    suffix = path.suffix.lower()
    known = required | optional
    reader: Any = None
    start: int | None = None
    # utf-8-sig: Excel writes a byte order mark, which would otherwise stick to the first column.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            if suffix == ".csv":
                # rows are numbered by their first line: a quoted field can span several
                reader = csv.reader(handle, strict=True)
                header: list[str] = next(reader, [])
                twice = sorted({column for column in header if header.count(column) > 1})
                if twice:  # a dict of the row would keep the last of them only
                    raise ImportFileError(
                        name, 1, f"column(s) named twice in the header: {_names(twice)}"
                    )
                _check_columns(name, 1, set(header), required, known)
                while True:
                    start = reader.line_num + 1
                    fields = next(reader, None)
                    if fields is None:
                        break
                    if not fields:  # a blank line
                        continue
                    if len(fields) != len(header):
                        raise ImportFileError(name, start, "wrong number of fields for the header")
                    yield start, dict(zip(header, fields, strict=True))
            elif suffix in (".jsonl", ".ndjson"):
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = strict_json(line)
                    except ValueError as exc:
                        raise ImportFileError(name, number, str(exc)) from exc
                    if not isinstance(row, dict):
                        raise ImportFileError(name, number, "each line must be a JSON object")
                    _check_columns(name, number, set(row), required, known)
                    yield number, row
            else:
                raise ImportFileError(
                    name, None, "unknown file type: use .csv (with a header) or .jsonl / .ndjson"
                )
        except UnicodeDecodeError as exc:
            raise ImportFileError(name, _bad_line(path), f"not UTF-8 text ({exc.reason})") from exc
        except csv.Error as exc:
            # the line its row starts on (in the header: the line the reader failed on)
            at = start if start is not None else reader.line_num if reader is not None else None
            raise ImportFileError(name, at, f"malformed CSV ({exc})") from exc


def _bad_line(path: Path) -> int | None:
    """The line of the first byte that is not UTF-8 (the text reader only knows its offset in
    a decoded buffer)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")  # a byte order mark is UTF-8 too: offsets count from the file's start
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1
    return None


def _names(columns: list[str]) -> str:
    """Column names quoted, so that a stray space or an empty name is visible."""
    return ", ".join(repr(column) for column in columns)


def strict_json(text: str) -> Any:
    """json.loads for values PostgreSQL's json accepts: ValueError `not valid JSON (...)` for
    bad text, NaN/Infinity, and nesting Python cannot read; and for a key named twice in one
    object, which json would silently read as its last value."""
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from exc
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise ValueError("not valid JSON here (nested too deeply)") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) < len(pairs):
        twice = sorted(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        raise ValueError(f"key(s) named twice in one object: {_names(twice)}")
    return out


def _no_constant(name: str) -> Any:
    """json's parse_constant: NaN, Infinity and -Infinity are not JSON."""
    raise ValueError(f"{name} is not a JSON value")


def _check_columns(
    name: str, line: int, columns: set[str], required: set[str], known: set[str]
) -> None:
    missing = required - columns
    if missing:
        raise ImportFileError(name, line, f"missing column(s): {', '.join(sorted(missing))}")
    unknown = columns - known
    if unknown:
        raise ImportFileError(
            name,
            line,
            f"unknown column(s): {_names(sorted(unknown))} (expected {', '.join(sorted(known))})",
        )
