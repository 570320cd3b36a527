"""`pgrecs demo`: the bundled catalogue, embedded with the real model, queried the way a service
would query it."""

from __future__ import annotations

from importlib.resources import as_file, files

from pgrecs import migrate
from pgrecs.client import connect
from pgrecs.config import masked
from pgrecs.db import resolve_url
from pgrecs.errors import translated

QUERIES = [
    (
        "More like 'Deep Learning with PyTorch'",
        "select s.item_id, s.score, i.title, i.category\n"
        "from pgrecs.similar_items('book-001', k => 5) as s\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by s.score desc",
    ),
    (
        "Same, but only courses",
        "select s.item_id, s.score, i.title, i.category\n"
        "from pgrecs.similar_items('book-001', k => 5, categories => '{courses}') as s\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by s.score desc",
    ),
    (
        "Kitchen items like the Kestrel chef's knife (its duplicate listing kitchen-103 collapses)",
        "select s.item_id, s.score, i.title, i.category\n"
        "from pgrecs.similar_items('kitchen-003', k => 5, same_category => true) as s\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by s.score desc",
    ),
    (
        "Like the PostgreSQL tuning course, for user u09, leaving out what u09 has seen",
        "select s.item_id, s.score, i.title, i.category\n"
        "from pgrecs.similar_items('course-005', k => 5, exclude_seen_by => 'u09') as s\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by s.score desc",
    ),
    (
        "Outdoor gear like the backpacking tent, 3-season only (attribute filter)",
        "select s.item_id, s.score, i.title, i.attributes ->> 'price' as price\n"
        "from pgrecs.similar_items('gear-001', k => 5, categories => '{outdoor}',\n"
        '                          filter => \'{"season": "3-season"}\') as s\n'
        "join pgrecs.items as i using (item_id)\n"
        "order by s.score desc",
    ),
    (
        "A visitor who viewed a knife and a cast-iron skillet (pgrecs.recommend_for_items)",
        "select s.item_id, s.score, i.title, i.category\n"
        "from pgrecs.recommend_for_items('{kitchen-003,kitchen-001}', k => 5) as s\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by s.score desc",
    ),
    (
        "Most popular courses (pgrecs.popular_items: summed event weights)",
        "select s.item_id, s.score, i.title\n"
        "from pgrecs.popular_items(k => 5, categories => '{courses}') as s\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by s.score desc",
    ),
    (
        "For user u01 (pgrecs.recommend: recency-weighted history, seen items left out)",
        "select r.item_id, r.score, r.source, r.because_of, i.title\n"
        "from pgrecs.recommend('u01', k => 5) as r\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by r.score desc",
    ),
    (
        "Why u01 gets its top item (pgrecs.explain: history items that pull it up)",
        "select e.history_item_id, e.event_type, e.weight, e.similarity\n"
        "from (select item_id from pgrecs.recommend('u01', k => 1)) as top,\n"
        "     pgrecs.explain('u01', top.item_id) as e\n"
        "limit 5",
    ),
    (
        "The same for u01 with MMR diversity",
        "select r.item_id, r.score, i.category, i.title\n"
        "from pgrecs.recommend('u01', k => 5, diversity => 0.5) as r\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by r.score desc",
    ),
    (
        "A visitor nobody has seen before: popular items (source 'popular')",
        "select r.item_id, r.score, r.source, i.title\n"
        "from pgrecs.recommend('new-visitor', k => 3) as r\n"
        "join pgrecs.items as i using (item_id)\n"
        "order by r.score desc",
    ),
]


def run(url: str | None = None) -> None:
    conninfo = resolve_url(url)
    print(f"database: {masked(conninfo)}")
    print("migrating to head ...")
    migrate.upgrade(conninfo)
    data = files("pgrecs") / "data"
    with connect(conninfo) as client:
        with as_file(data / "demo_items.jsonl") as path:
            changed = client.import_items(path)
        print(f"demo catalogue: {changed} items inserted or changed")
        has_events = client.conn.execute("select exists (select from pgrecs.interactions)")
        if not has_events.fetchone()[0]:  # type: ignore[index]
            with as_file(data / "demo_interactions.csv") as path:
                print(f"demo interactions: {client.import_interactions(path)} recorded")
        print("embedding with the default model (all-MiniLM-L6-v2, offline) ...")
        print(client.embed_pending())
        print(client.refresh_users())
        for title, sql in QUERIES:
            print(f"\n== {title}\n{_indent(sql)};\n")
            with translated():
                cur = client.conn.execute(sql)
                names = [column.name for column in cur.description or []]
                rows = cur.fetchall()
            print(_table(names, rows))
    print("\nThe same from the command line: pgrecs similar book-001 -k 5; pgrecs recommend u01")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _table(names: list[str], rows: list[tuple[object, ...]]) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join("    " + line for line in lines)
