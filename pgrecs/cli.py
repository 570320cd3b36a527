"""The `pgrecs` command line. Exit status: 0 success, 1 pgrecs error, 2 usage error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from pgrecs import embedded
from pgrecs.config import ENVIRONMENT_HELP
from pgrecs.errors import ConfigurationError, InvalidParameter, PgrecsError, translate


def _client(args: argparse.Namespace) -> Any:
    from pgrecs.client import connect

    return connect(args.database_url)


def cmd_db(args: argparse.Namespace) -> int:
    if args.action == "start":
        print(embedded.start())
    elif args.action == "url":
        url = embedded.url()
        if url is None:
            print(
                "pgrecs: the embedded PostgreSQL is not running (pgrecs db start)", file=sys.stderr
            )
            return 1
        print(url)
    else:
        print("stopped" if embedded.stop() else "not running")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from pgrecs import migrate

    x = {"dim": str(args.dim), "collab_dim": str(args.collab_dim)}
    try:
        if args.downgrade:
            migrate.downgrade(args.database_url, args.revision or "base", sql=args.sql, **x)
        else:
            migrate.upgrade(args.database_url, args.revision or "head", sql=args.sql, **x)
    except CommandError as exc:
        print(f"pgrecs: error: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        raise translate(exc) from exc
    except DBAPIError as exc:  # SQLAlchemy wraps driver errors raised through its engine
        if isinstance(exc.orig, psycopg.Error):
            if isinstance(exc.orig, psycopg.OperationalError) and not exc.orig.sqlstate:
                raise ConfigurationError(f"cannot reach PostgreSQL: {exc.orig}") from exc
            raise translate(exc.orig) from exc
        raise
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.kind == "items":
            count = client.import_items(args.file)
            print(f"imported {args.file}: {count} items inserted or changed")
        else:
            count = client.import_interactions(args.file)
            print(f"imported {args.file}: {count} interactions")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from datetime import datetime

    from pgrecs import embed, watch
    from pgrecs.db import resolve_url

    if (args.reembed_all or args.switch_sql) and not args.model:
        option = "--reembed-all" if args.reembed_all else "--switch-sql"
        print(f"pgrecs embed: error: {option} needs --model", file=sys.stderr)
        return 2
    if args.poll_interval <= 0 or args.batch_size < 1:
        print(
            "pgrecs embed: error: --poll-interval and --batch-size must be positive",
            file=sys.stderr,
        )
        return 2
    with _client(args) as client:
        if args.switch_sql:
            print(embed.switch_sql(client.conn, args.model), end="")
            return 0
        embedder = embed.SentenceTransformerEmbedder(args.model, batch_size=args.batch_size)
        if args.reembed_all:
            print(client.reembed_all(embedder, progress=not args.quiet))
            return 0
        if not args.watch:
            print(client.embed_pending(embedder, progress=not args.quiet))
            return 0

    def show(report: embed.EmbedReport) -> None:
        print(f"{datetime.now():%Y-%m-%d %H:%M:%S} {report}", flush=True)

    print(f"pgrecs: watching pgrecs_items with {embedder.name!r} (Ctrl-C to stop)", flush=True)
    watch.watch_embeddings(
        resolve_url(args.database_url),
        embedder,
        poll_interval=args.poll_interval,
        stop=watch.stop_on_signals(),
        report=show,
    )
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    try:
        filter_ = json.loads(args.filter) if args.filter else None
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"--filter is not valid JSON: {exc.msg}") from exc
    with _client(args) as client:
        rows = client.similar_items(
            args.item_id,
            k=args.k,
            categories=args.category or None,
            same_category=args.same_category,
            filter=filter_,
            exclude_seen_by=args.exclude_seen_by,
        )
    if args.json:
        print(json.dumps([{"item_id": r.item_id, "score": r.score} for r in rows]))
    else:
        for row in rows:
            print(f"{row.score:.4f}\t{row.item_id}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pgrecs.demo import run

    run(args.database_url)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pgrecs",
        description="Recommendations inside PostgreSQL, on pgvector.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version="pgrecs 0.1.0")
    top.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL or conninfo (default: $PGRECS_DATABASE_URL, PG*, else embedded)",
    )
    subs = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub(name: str, help_: str) -> argparse.ArgumentParser:
        return subs.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=ENVIRONMENT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = sub("db", "start, stop or locate the embedded PostgreSQL")
    p.add_argument("action", choices=["start", "stop", "url"])
    p.set_defaults(func=cmd_db)

    p = sub("migrate", "bring the schema to the latest version (wraps `alembic upgrade`)")
    p.add_argument("--revision", help="target revision (default: head, or base with --downgrade)")
    p.add_argument("--downgrade", action="store_true", help="downgrade instead of upgrade")
    p.add_argument(
        "--sql", action="store_true", help="print the SQL for a DBA instead of running it"
    )
    p.add_argument("--dim", type=int, default=384, help="content vector dimension (default 384)")
    p.add_argument(
        "--collab-dim", type=int, default=64, help="collaborative dimension (default 64)"
    )
    p.set_defaults(func=cmd_migrate)

    p = sub(
        "import", "import items or interactions from CSV (with header) or JSONL, all or nothing"
    )
    p.add_argument("kind", choices=["items", "interactions"])
    p.add_argument("file")
    p.set_defaults(func=cmd_import)

    p = sub("embed", "embed new and changed items (reuses cached vectors), or switch models")
    p.add_argument(
        "--model",
        help="sentence-transformers name or path (default: $PGRECS_MODEL "
        "or the bundled all-MiniLM-L6-v2)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="model batch size (default 64)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--watch",
        action="store_true",
        help="keep running: embed rows inserted or changed by anyone (LISTEN pgrecs_items)",
    )
    mode.add_argument(
        "--reembed-all",
        action="store_true",
        help="switch every item to --model: stage its vectors in the cache, then swap in one "
        "transaction (same dimension only)",
    )
    mode.add_argument(
        "--switch-sql",
        action="store_true",
        help="print (do not run) the DBA script that switches to --model, whose vectors "
        "--reembed-all staged (any dimension)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --watch: also catch up this often (default 60)",
    )
    p.set_defaults(func=cmd_embed)

    p = sub("similar", "items similar to an item (pgrecs.similar_items)")
    p.add_argument("item_id")
    p.add_argument("-k", type=int, default=10, help="how many (1..1000, default 10)")
    p.add_argument("--category", action="append", help="only this category (repeatable)")
    p.add_argument("--same-category", action="store_true", help="only the item's own category")
    p.add_argument(
        "--filter", metavar="JSON", help='attribute containment, e.g. \'{"format": "ebook"}\''
    )
    p.add_argument("--exclude-seen-by", metavar="USER", help="leave out items this user has seen")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_similar)

    p = sub("demo", "load the bundled demo catalogue into the database and show recommendations")
    p.set_defaults(func=cmd_demo)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PgrecsError as exc:
        print(f"pgrecs: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
