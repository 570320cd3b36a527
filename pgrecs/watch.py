"""Follow a NOTIFY channel: catch up, react to notifications, reconnect when the server goes away.

`follow` is the loop behind `pgrecs embed --watch` (channel `pgrecs_items`) and
`pgrecs refresh --watch` (channel `pgrecs_interactions`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgrecs import embed
from pgrecs.db import open_connection

TICK = 0.5  # seconds between checks of `stop` while waiting
BACKOFF_FIRST = 0.5  # seconds before the first reconnection attempt; doubles up to BACKOFF_MAX
BACKOFF_MAX = 30.0


def follow(
    conninfo: str,
    channel: str,
    handle: Callable[[set[str] | None], None],
    *,
    poll_interval: float = 60.0,
    stop: threading.Event | None = None,
    debounce: float = 0.1,
) -> None:
    """LISTEN on `channel` and call `handle` until `stop` is set. Runs in the calling thread.

    Contract for `handle`:

    - `handle(None)`: catch up on everything pending. Called once LISTEN is in place after each
      (re)connection, so nothing committed while the follower was down is missed, and again
      every `poll_interval` seconds (a safety net: a notification is never the only trigger).
    - `handle(payloads)`: the distinct payloads of the notifications received since the previous
      call (never empty). Notifications are gathered for `debounce` seconds after the first one,
      so a burst of commits makes one call. Notifications that arrive while `handle` runs are
      delivered on the next call.
    - Delivery is at least once: `handle` must be idempotent and read the current state of the
      database (a payload says what changed, not what to write).
    - If the connection is lost, here or inside `handle` (a `psycopg.OperationalError` without
      an SQLSTATE or of class 08, a server shutdown, 57P01-57P03, or 57P05; also when wrapped in a
      pgrecs error), or the server reports a transient failure (class 40: deadlock or
      serialization failure; class 53: out of resources), `follow` reconnects with exponential
      backoff (0.5 s doubling to 30 s) and calls `handle(None)` again. Any other exception from
      `handle` (a statement or lock timeout included) propagates and ends `follow`.
    - When `stop` is set, `follow` returns within about 0.5 s, or after the `handle` call in
      progress (give `handle` the same Event if it should cut a long catch-up short).
    """
    stop = stop or threading.Event()
    delay = 0.0
    while not stop.is_set():
        if delay and stop.wait(delay):
            return
        try:
            with psycopg.connect(resilient(conninfo, channel), autocommit=True) as conn:
                conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
                delay = 0.0
                _serve(conn, handle, poll_interval, stop, debounce)
            return
        except Exception as exc:
            what = _retryable(exc)
            if what is None:
                raise
            delay = min(max(2 * delay, BACKOFF_FIRST), BACKOFF_MAX)
            print(
                f"pgrecs: {what} ({_first_line(exc)}); reconnecting in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )


def _serve(
    conn: psycopg.Connection[Any],
    handle: Callable[[set[str] | None], None],
    poll_interval: float,
    stop: threading.Event,
    debounce: float,
) -> None:
    handle(None)
    next_poll = time.monotonic() + poll_interval
    while not stop.is_set():
        wait = min(TICK, max(0.0, next_poll - time.monotonic()))
        payloads = {n.payload for n in conn.notifies(timeout=wait, stop_after=1)}
        if payloads and not stop.is_set():
            if debounce > 0:
                payloads.update(n.payload for n in conn.notifies(timeout=debounce))
            handle(payloads)
        if time.monotonic() >= next_poll and not stop.is_set():
            conn.execute("select 1")  # notices a silently dropped connection
            handle(None)
            next_poll = time.monotonic() + poll_interval


def _retryable(exc: BaseException) -> str | None:
    """What went wrong when `exc` (or what it was raised from) is worth a reconnection: the
    connection is gone, or the server failed transiently; None otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, psycopg.OperationalError):
            state = seen.sqlstate or ""
            # 57P01-03: the server shut down or is starting; 57P05: idle_session_timeout
            if not state or state.startswith("08") or state in ("57P01", "57P02", "57P03", "57P05"):
                return "lost the connection"
            if state[:2] in ("40", "53"):
                return "transient server error"
            return None
        seen = seen.__cause__
    return None


# A watcher's connections live for days, mostly idle: a peer that vanished without closing the
# connection (a dropped NAT entry, a failed-over host) is noticed by TCP keepalives within about
# a minute, and a connection attempt to a host that does not answer gives up after 10 s.
# Settings given in the connection string or PG* variables win; with a service file (service=,
# PGSERVICE) nothing is added, since what is added would override the file's settings.
RESILIENCE = {
    "connect_timeout": ("PGCONNECT_TIMEOUT", "10"),
    "keepalives_idle": (None, "30"),
    "keepalives_interval": (None, "10"),
    "keepalives_count": (None, "3"),
}


def resilient(conninfo: str, channel: str | None = None) -> str:
    """`conninfo` with a watcher's connection timeout and TCP keepalives, unless it sets them;
    with `channel`, the listening session is named in pg_stat_activity unless the user named
    it already."""
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:  # malformed: let connect() report it
        return conninfo
    extra = {}
    if channel and "application_name" not in given and not os.environ.get("PGAPPNAME"):
        extra["application_name"] = f"pgrecs watch {channel}"
    if "service" not in given and not os.environ.get("PGSERVICE"):
        extra.update(
            (key, value)
            for key, (variable, value) in RESILIENCE.items()
            if key not in given and not (variable and os.environ.get(variable))
        )
    return make_conninfo(conninfo, **extra) if extra else conninfo


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def stop_on_signals() -> threading.Event:
    """An Event set by SIGINT or SIGTERM (a clean stop for `follow`). Call from the main thread."""
    stop = threading.Event()

    def set_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, set_stop)
    signal.signal(signal.SIGTERM, set_stop)
    return stop


def watch_embeddings(
    conninfo: str,
    embedder: embed.Embedder,
    *,
    batch_size: int = embed.BATCH_ROWS,
    poll_interval: float = 60.0,
    stop: threading.Event | None = None,
    report: Callable[[embed.EmbedReport], None] | None = None,
) -> None:
    """`pgrecs embed --watch`: embed pending items now, then whenever pgrecs_items is notified
    (a row was inserted or its text changed), until `stop` is set."""
    stop = stop or threading.Event()
    state: dict[str, psycopg.Connection[Any]] = {}

    def handle(payloads: set[str] | None) -> None:
        conn = state.get("conn")
        if conn is None or conn.closed or conn.broken:
            conn = state["conn"] = open_connection(resilient(conninfo), autocommit=True)
        try:
            done = embed.embed_pending(
                conn, embedder, batch_size=batch_size, progress=False, stop=stop
            )
        except Exception:
            state.pop("conn").close()
            raise
        if report is not None and (done.embedded or done.cached or done.failed):
            report(done)

    try:
        follow(conninfo, "pgrecs_items", handle, poll_interval=poll_interval, stop=stop)
    finally:
        if "conn" in state:
            state["conn"].close()
