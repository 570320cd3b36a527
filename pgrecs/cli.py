"""The `pgrecs` command line. Exit status: 0 success, 1 error (pgrecs, database or file), 2 usage
error, 130 interrupted (Ctrl-C)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from pgrecs import embedded
from pgrecs.config import ENVIRONMENT_HELP, masked
from pgrecs.errors import ConfigurationError, InvalidParameter, PgrecsError


def _ranged(
    cast: Callable[[str], float], low: float, high: float | None = None, *, above: bool = False
) -> Callable[[str], Any]:
    """An argparse type: a number in [low, high] (above: greater than low). Out of range is a
    usage error (exit 2), like a value that is not a number."""
    bounds = f"> {low:g}" if above else f"{low:g}..{high:g}" if high is not None else f">= {low:g}"

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value > low if above else value >= low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range ({bounds})")
        return value

    return parse


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
    from pgrecs import migrate

    if args.downgrade and not args.revision:
        args.usage_error(
            "--downgrade needs --revision (e.g. --revision 0006; --revision base drops every "
            "pgrecs table and its data)"
        )
    # only the dimensions given: an existing schema keeps its own (and refuses others)
    x = {k: str(v) for k, v in (("dim", args.dim), ("collab_dim", args.collab_dim)) if v}
    if args.downgrade:
        migrate.downgrade(args.database_url, args.revision, sql=args.sql, **x)
    else:
        migrate.upgrade(args.database_url, args.revision or "head", sql=args.sql, **x)
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
    with _client(args) as client:
        if args.switch_sql:
            print(embed.switch_sql(client.conn, args.model), end="")
            return 0
        if not (args.reembed_all or args.watch):
            idle = embed.nothing_pending(client.conn, args.model)
            if idle is not None:  # no model to load
                print(idle)
                return 0
        embedder = embed.SentenceTransformerEmbedder(
            args.model, batch_size=args.batch_size, progress=not args.quiet
        )
        if args.reembed_all:
            print(client.reembed_all(embedder, progress=not args.quiet))
            return 0
        if not args.watch:
            done = client.embed_pending(embedder, progress=not args.quiet)
            print(done)
            _report_failed(done.failed)
            return 1 if done.failed else 0

    told: set[tuple[str, str]] = set()

    def show(report: embed.EmbedReport) -> None:
        if report.embedded or report.cached:
            print(f"{datetime.now():%Y-%m-%d %H:%M:%S} {report}", flush=True)
        _report_failed([f for f in report.failed if f not in told])  # once per row and reason
        told.update(report.failed)

    print(f"pgrecs: watching pgrecs_items with {embedder.name!r} (Ctrl-C to stop)", flush=True)
    watch.watch_embeddings(
        resolve_url(args.database_url),
        embedder,
        poll_interval=args.poll_interval,
        stop=watch.stop_on_signals(),
        report=show,
    )
    return 0


def _report_failed(failed: Sequence[tuple[str, str]]) -> None:
    for _, why in failed:
        print(f"pgrecs: error: {why}; the item stays pending", file=sys.stderr, flush=True)


def cmd_similar(args: argparse.Namespace) -> int:
    filter_ = _filter(args.filter)
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


def cmd_refresh(args: argparse.Namespace) -> int:
    from datetime import datetime

    from pgrecs import users, watch
    from pgrecs.db import resolve_url

    if not args.watch:
        with _client(args) as client:
            report = users.refresh_users(
                client.conn, all_users=args.all, chunk_size=args.chunk_size, progress=not args.quiet
            )
        print(report)
        return 0

    def show(report: users.RefreshReport) -> None:
        print(f"{datetime.now():%Y-%m-%d %H:%M:%S} {report}", flush=True)

    with _client(args):  # checks the schema before following
        pass
    print("pgrecs: watching pgrecs_interactions (Ctrl-C to stop)", flush=True)
    users.watch_users(
        resolve_url(args.database_url),
        poll_interval=args.poll_interval,
        chunk_size=args.chunk_size,
        all_users=args.all,
        stop=watch.stop_on_signals(),
        report=show,
    )
    return 0


def _filter(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"--filter is not valid JSON: {exc.msg}") from exc


def cmd_recommend(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.recommend(
            args.user_id,
            k=args.k,
            categories=args.category or None,
            filter=_filter(args.filter),
            exclude_seen=not args.include_seen,
            diversity=args.diversity,
        )
    if args.json:
        print(json.dumps([vars(r) for r in rows]))
    else:
        for r in rows:
            print(f"{r.score:.4f}\t{r.item_id}\t{r.source}\t{r.because_of or ''}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.explain(args.user_id, args.item_id)
    if args.json:
        print(json.dumps([{**vars(r), "occurred_at": r.occurred_at.isoformat()} for r in rows]))
    else:
        for r in rows:
            print(
                f"{r.weight * r.similarity:.4f}\t{r.history_item_id}\t{r.event_type}"
                f"\t{r.occurred_at:%Y-%m-%d %H:%M}\tweight {r.weight:.3f}"
                f"\tsimilarity {r.similarity:.3f}"
            )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pgrecs.train import train

    with _client(args) as client:
        given = {
            name: getattr(args, name)
            for name in ("epochs", "batch_size", "learning_rate")
            if getattr(args, name) is not None
        }  # the others keep TrainSettings' defaults (chosen on validation)
        report = train(
            client.conn, **given, seed=args.seed, threads=args.threads, progress=not args.quiet
        )
    print(report)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json as json_module
    from pathlib import Path

    from pgrecs import evaluate
    from pgrecs.embed import SentenceTransformerEmbedder

    if args.dataset == "movielens" and args.path and not (args.items or args.interactions):
        dataset = evaluate.load_movielens(args.path)
    elif not args.dataset and args.items and args.interactions:
        dataset = evaluate.load_files(args.items, args.interactions)
    else:
        print(
            "pgrecs evaluate: error: give `movielens PATH`, or --items FILE --interactions FILE",
            file=sys.stderr,
        )
        return 2
    if args.sample_users is not None:
        dataset = evaluate.sample(dataset, args.sample_users, seed=args.seed)
    settings: dict[str, Any] = {}
    for item in args.set or []:
        name, _, value = item.partition("=")
        try:
            settings[name] = json.loads(value)
        except json.JSONDecodeError:
            print(f"pgrecs evaluate: error: --set {item!r}: expected NAME=JSON", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # before the long run: a bad --out fails now
    if not os.access(out, os.W_OK):
        raise ConfigurationError(f"--out {out}: the folder is not writable")
    embedder = SentenceTransformerEmbedder(args.model, progress=not args.quiet)
    url = evaluate.scratch_database(args.scratch_url, embedder.dimension)
    size = f"{len(dataset.items)} items, {len(dataset.ratings)} ratings"
    print(f"evaluating in {masked(url)} ({size})")
    train = evaluate.default_train(seed=args.seed)
    weighting = args.weighting
    if args.tune:
        tuning = evaluate.tune(dataset, url, embedder, train=train, progress=not args.quiet)
        print(tuning.markdown())
        weighting = tuning.chosen.pop("weighting")
        settings = {**tuning.chosen, **settings}
    report = evaluate.run(
        dataset,
        url,
        embedder,
        weighting=weighting,
        settings=settings,
        train=train,
        cold_start=not args.no_cold_start,
        seed=args.seed,
        progress=not args.quiet,
    )
    (out / "report.md").write_text(report.markdown())
    (out / "report.json").write_text(json_module.dumps(report.as_dict(), indent=2) + "\n")
    evaluate.chart(report.rows, out / "ndcg.png", "pgrecs evaluate: all test users")
    print(report.markdown())
    print(f"written: {out / 'report.md'}, {out / 'report.json'}, {out / 'ndcg.png'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pgrecs import bench

    chroma = not args.no_chroma
    if chroma and not bench.chroma_available():
        print(f"pgrecs bench: {bench.CHROMA_INSTALL}; running the PostgreSQL part only")
        chroma = False
    report = bench.run(
        args.size,
        queries=args.queries,
        chroma=chroma,
        scratch_url=args.scratch_url,
        qps_seconds=args.qps_seconds,
        chroma_queries=args.chroma_queries,
        reuse=args.reuse,
        progress=not args.quiet,
        private=args.private_server,
    )
    md, js = bench.write(report, Path(args.out))
    print(report.markdown())
    print(f"written: {md}, {js}")
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
    database_help = "PostgreSQL URL or conninfo (default: $PGRECS_DATABASE_URL, PG*, else embedded)"
    top.add_argument("--database-url", metavar="URL", help=database_help)
    # also accepted after the command; SUPPRESS: absent there, the value given before stays
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", metavar="URL", default=argparse.SUPPRESS, help=database_help
    )
    subs = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub(name: str, help_: str) -> argparse.ArgumentParser:
        return subs.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=ENVIRONMENT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )

    p = sub("db", "start, stop or locate the embedded PostgreSQL")
    p.add_argument("action", choices=["start", "stop", "url"])
    p.set_defaults(func=cmd_db)

    p = sub("migrate", "bring the schema to the latest version (wraps `alembic upgrade`)")
    p.add_argument(
        "--revision",
        help="target revision (default: head; required with --downgrade, where base drops "
        "every pgrecs table)",
    )
    p.add_argument(
        "--downgrade", action="store_true", help="downgrade to --revision instead of upgrading"
    )
    p.add_argument(
        "--sql", action="store_true", help="print the SQL for a DBA instead of running it"
    )
    p.add_argument(
        "--dim",
        type=int,
        help="content vector dimension of a new schema (default 384; an existing schema "
        "keeps its own and refuses another)",
    )
    p.add_argument(
        "--collab-dim", type=int, help="collaborative dimension of a new schema (default 64)"
    )
    p.set_defaults(func=cmd_migrate, usage_error=p.error)

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
    p.add_argument(
        "--batch-size", type=_ranged(int, 1), default=64, help="model batch size (default 64)"
    )
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
        type=_ranged(float, 0, above=True),
        default=60.0,
        metavar="SECONDS",
        help="with --watch: also catch up this often (default 60)",
    )
    p.set_defaults(func=cmd_embed)

    p = sub("similar", "items similar to an item (pgrecs.similar_items)")
    p.add_argument("item_id")
    p.add_argument(
        "-k", type=_ranged(int, 1, 1000), default=10, help="how many (1..1000, default 10)"
    )
    p.add_argument("--category", action="append", help="only this category (repeatable)")
    p.add_argument("--same-category", action="store_true", help="only the item's own category")
    p.add_argument(
        "--filter", metavar="JSON", help='attribute containment, e.g. \'{"format": "ebook"}\''
    )
    p.add_argument("--exclude-seen-by", metavar="USER", help="leave out items this user has seen")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_similar)

    p = sub("recommend", "recommendations for a user (pgrecs.recommend)")
    p.add_argument("user_id")
    p.add_argument(
        "-k", type=_ranged(int, 1, 1000), default=10, help="how many (1..1000, default 10)"
    )
    p.add_argument("--category", action="append", help="only this category (repeatable)")
    p.add_argument(
        "--filter", metavar="JSON", help='attribute containment, e.g. \'{"format": "ebook"}\''
    )
    p.add_argument("--include-seen", action="store_true", help="keep items the user has seen")
    p.add_argument(
        "--diversity",
        type=_ranged(float, 0, 1),
        default=0.0,
        help="MMR re-ranking, 0 (off) .. 1 (default 0)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_recommend)

    p = sub("explain", "why an item is recommended to a user (pgrecs.explain)")
    p.add_argument("user_id")
    p.add_argument("item_id")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_explain)

    p = sub("refresh", "recompute stored user vectors whose interactions changed")
    p.add_argument(
        "--all",
        action="store_true",
        help="every user, not only the stale ones (with --watch: in the first catch-up)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep running: refresh users as their interactions commit "
        "(LISTEN pgrecs_interactions)",
    )
    p.add_argument(
        "--chunk-size",
        type=_ranged(int, 1),
        default=1000,
        help="users per transaction (default 1000)",
    )
    p.add_argument(
        "--poll-interval",
        type=_ranged(float, 0, above=True),
        default=60.0,
        metavar="SECONDS",
        help="with --watch: also catch up this often (default 60)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_refresh)

    p = sub(
        "train",
        "train the collaborative two-tower model on the interaction log and make it active",
    )
    p.add_argument("--epochs", type=_ranged(int, 1), help="passes over the log (default 20)")
    p.add_argument("--batch-size", type=_ranged(int, 1), help="examples per step (default 512)")
    p.add_argument(
        "--learning-rate", type=_ranged(float, 0, above=True), help="Adam step (default 0.001)"
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same model (default 0)")
    p.add_argument(
        "--threads", type=_ranged(int, 1), help="torch threads (default: torch's choice)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub(
        "evaluate",
        "offline evaluation through pgrecs.recommend, with baselines (popularity, implicit ALS)",
    )
    p.add_argument("dataset", nargs="?", choices=["movielens"], help="a known dataset layout")
    p.add_argument("path", nargs="?", help="its folder (e.g. ml-latest-small)")
    p.add_argument("--items", metavar="FILE", help="items file (CSV/JSONL, as `import items`)")
    p.add_argument(
        "--interactions",
        metavar="FILE",
        help="CSV with user_id, item_id, occurred_at and an optional weight (the rating)",
    )
    p.add_argument(
        "--sample-users", type=_ranged(int, 10), metavar="N", help="a reduced run on N users"
    )
    p.add_argument(
        "--weighting",
        choices=["rating", "binary", "centered"],
        default="rating",
        help="interaction weight from the rating: itself, 1, or rating - 3 (default rating)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=JSON",
        help="a pgrecs setting for the pgrecs rows, e.g. --set content_weight_warm=0.25",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="first choose weighting and settings on a validation split carved from train",
    )
    p.add_argument("--no-cold-start", action="store_true", help="skip the item cold-start run")
    p.add_argument(
        "--model",
        help="embedding model (default: $PGRECS_MODEL or the bundled all-MiniLM-L6-v2)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed (default 0)")
    p.add_argument(
        "--scratch-url",
        metavar="URL",
        help="an empty database to evaluate in; its interactions are replaced "
        "(default: the embedded server's pgrecs_eval)",
    )
    p.add_argument(
        "--out", default="pgrecs-evaluation", help="report folder (default pgrecs-evaluation)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = sub(
        "bench",
        "performance benchmark (spec section 6): synthetic catalogue, latency, QPS, recall@10 "
        "and the k guarantee for raw pgvector, the pgrecs functions and ChromaDB",
    )
    p.add_argument(
        "--size", choices=["20k", "100k", "1m"], default="100k", help="catalogue (default 100k)"
    )
    p.add_argument(
        "--queries", type=_ranged(int, 10), default=200, help="queries per row (default 200)"
    )
    p.add_argument(
        "--chroma-queries",
        type=_ranged(int, 1),
        default=50,
        help="queries per ChromaDB row (default 50)",
    )
    p.add_argument("--no-chroma", action="store_true", help="skip ChromaDB")
    p.add_argument(
        "--qps-seconds",
        type=_ranged(float, 0),
        default=3.0,
        help="seconds of 2-client load per row for QPS (0: skip; default 3)",
    )
    p.add_argument(
        "--out", default="benchmarks/results", help="results folder (default benchmarks/results)"
    )
    p.add_argument(
        "--scratch-url",
        metavar="URL",
        help="a database to benchmark in; it is WIPED (default: the embedded server's "
        "pgrecs_bench_perf)",
    )
    p.add_argument(
        "--private-server",
        action="store_true",
        help="run on a PostgreSQL of its own (data in the pgrecs data directory, bench-pg18) "
        "with shared_buffers sized for the catalogue; stopped afterwards",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep the catalogue when the scratch database already holds this one",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)

    p = sub("demo", "load the bundled demo catalogue into the database and show recommendations")
    p.set_defaults(func=cmd_demo)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (PgrecsError, OSError) as exc:
        print(f"pgrecs: error: {_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _message(exc: BaseException) -> str:
    """The error's message; only its first line when it quotes psycopg, whose connection errors
    go on with libpq's advice."""
    text = str(exc).strip()
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, psycopg.Error):
        cause = cause.__cause__
    return text.splitlines()[0] if cause is not None and text else text


if __name__ == "__main__":
    sys.exit(main())
