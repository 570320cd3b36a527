"""Every `sql` example in docs/sql.md runs, against the fixture the page states at its top.

The fence's info string says how a block is checked:

- ```sql fixture: run first, in page order, and committed (the catalogue every example uses);
- ```sql fails=22023: must fail with that SQLSTATE;
- rows=N, ids=a,b, columns=a,b: the block's last result has N rows, that first column (in
  order), those column names.

Every other block runs on its own in a transaction that is rolled back, so examples that write do
not change what the next one sees. ```text blocks (signatures) are not run; ```python blocks
must compile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest

from tests.conftest import ROOT, _fresh

DOC = ROOT / "docs" / "sql.md"
LANGUAGES = {"sql", "text", "python"}
OPTIONS = {"fixture", "fails", "rows", "ids", "columns"}


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def where(self) -> str:
        return f"{DOC.name}:{self.line}"


def parse(markdown: str) -> list[Block]:
    """The fenced blocks of a Markdown page, with their info-string options."""
    blocks: list[Block] = []
    current: Block | None = None
    lines: list[str] = []
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = re.match(r"^```(.*)$", line)
        if not fence:
            if current is not None:
                lines.append(line)
            continue
        if current is not None:
            current.text = "\n".join(lines) + "\n"
            blocks.append(current)
            current = None
            continue
        info = fence.group(1).split()
        if not info:
            raise AssertionError(f"{DOC.name}:{number}: a fence without a language")
        current, lines = Block(number, info[0]), []
        for word in info[1:]:
            key, _, value = word.partition("=")
            current.options[key] = value
    if current is not None:
        raise AssertionError(f"{DOC.name}:{current.line}: unclosed fence")
    return blocks


def run(conn: psycopg.Connection, block: Block) -> None:
    """Run one sql block and check it against its options; AssertionError names the line."""
    expected_state = block.options.get("fails")
    try:
        with conn.cursor() as cur:
            cur.execute(block.text)
            last: tuple[list[str], list[tuple]] | None = None
            while True:
                if cur.description is not None:
                    last = ([c.name for c in cur.description], cur.fetchall())
                if not cur.nextset():
                    break
    except psycopg.Error as exc:
        if expected_state is not None and exc.sqlstate == expected_state:
            return
        raise AssertionError(
            f"{block.where}: failed with {exc.sqlstate}: {exc}\n{block.text}"
        ) from exc
    if expected_state is not None:
        raise AssertionError(f"{block.where}: ran, but should fail with {expected_state}")
    if not {"rows", "ids", "columns"} & block.options.keys():
        return
    assert last is not None, f"{block.where}: no result to check"
    names, rows = last
    if "rows" in block.options:
        assert len(rows) == int(block.options["rows"]), f"{block.where}: {rows}"
    if "ids" in block.options:
        assert [r[0] for r in rows] == block.options["ids"].split(","), f"{block.where}: {rows}"
    if "columns" in block.options:
        assert names == block.options["columns"].split(","), f"{block.where}: {names}"


BLOCKS = parse(DOC.read_text())
SQL = [b for b in BLOCKS if b.language == "sql"]
FIXTURE = [b for b in SQL if "fixture" in b.options]
EXAMPLES = [b for b in SQL if "fixture" not in b.options]


@pytest.fixture(scope="module")
def docs_db(admin_url: str, template: Callable[[int], str]) -> Iterator[str]:
    """A database at head (3-d content vectors) holding the page's fixture."""
    for url in _fresh(admin_url, template(3)):
        with psycopg.connect(url) as conn:
            for block in FIXTURE:
                run(conn, block)
        yield url


@pytest.fixture
def docs_conn(docs_db: str) -> Iterator[psycopg.Connection]:
    """A connection whose work is rolled back: each example sees the fixture only."""
    with psycopg.connect(docs_db) as conn:
        yield conn
        conn.rollback()


@pytest.mark.parametrize("block", EXAMPLES, ids=[f"line{b.line}" for b in EXAMPLES])
def test_example_runs(docs_conn: psycopg.Connection, block: Block) -> None:
    run(docs_conn, block)


def test_the_page_is_well_formed() -> None:
    """Fences the test would skip silently (```SQL, ```psql, typos in options) fail here."""
    for block in BLOCKS:
        assert block.language in LANGUAGES, f"{block.where}: language {block.language!r}"
        assert block.options.keys() <= OPTIONS, f"{block.where}: options {block.options}"
        if block.language != "sql":
            assert not block.options, f"{block.where}: options on a {block.language} block"
        if "fails" in block.options:
            assert re.fullmatch(r"[0-9A-Z]{5}", block.options["fails"]), block.where
    indented = re.findall(r"^[ \t]+```.*$", DOC.read_text(), flags=re.M)
    assert not indented, f"indented fences are not run: {indented}"
    assert FIXTURE, "the page states no fixture"
    assert len(EXAMPLES) >= 40, "examples went missing (a changed fence?)"
    assert BLOCKS.index(FIXTURE[-1]) < BLOCKS.index(EXAMPLES[0]), "the fixture comes first"
    functions = {"similar_items", "recommend", "recommend_for_items", "popular_items", "explain"}
    for name in functions | {"record_interaction"}:
        assert any(f"pgrecs.{name}(" in b.text for b in EXAMPLES), f"no example calls {name}"
    for name in functions:
        assert any(f"pgrecs.{name}(" in b.text and "fails" in b.options for b in EXAMPLES), (
            f"no error example for {name}"
        )


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.language == "python"], ids=lambda b: f"line{b.line}"
)
def test_python_examples_compile(block: Block) -> None:
    compile(block.text, block.where, "exec")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_within_the_page_resolve() -> None:
    text = DOC.read_text()
    outside = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.*)$", outside, flags=re.M)}
    for target in re.findall(r"\]\(#([^)]+)\)", outside):
        assert target in anchors, f"broken link #{target}"


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("```sql\nselec 1;\n```\n", "failed with 42601"),
        ("```sql fails=22023\nselect 1;\n```\n", "should fail with 22023"),
        ("```sql fails=22023\nselect 1/0;\n```\n", "failed with 22012"),
        ("```sql rows=2\nselect 1;\n```\n", "sql.md:1"),
        ("```sql ids=a,b\nselect 'a' union all select 'c';\n```\n", "sql.md:1"),
        ("```sql columns=x\nselect 1 as y;\n```\n", "sql.md:1"),
        (
            "```sql rows=1\nselect * from pgrecs.similar_items('no-such-item');\n```\n",
            "P0002",
        ),
    ],
    ids=["typo", "no-error", "other-error", "rows", "ids", "columns", "error-not-marked"],
)
def test_a_wrong_example_fails(docs_conn: psycopg.Connection, markdown: str, message: str) -> None:
    """The checks can fail: a typo, a wrong SQLSTATE, a wrong row count, ids or columns."""
    (block,) = parse(markdown)
    with pytest.raises(AssertionError) as info:
        run(docs_conn, block)
    docs_conn.rollback()
    assert message in str(info.value)
