"""Ranking performance: the choice between HNSW walks and exact scans, partial HNSW indexes for
selective categories, better-built graphs, and cheaper user histories.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Measured with `pgrecs bench` (docs/performance.md); no table or signature changes:
- pgrecs._rank walks the categories' own partial HNSW indexes when every requested category has
  one (created by a DBA, docs/performance.md: `where category = '...'`; one walk per category,
  merged); otherwise it takes the exact scan only when it is cheaper than a walk through the
  whole graph (eligible <= settings.exact_scan_threshold and eligible^2 <= 10 * (ef_search +
  skipped) * catalogue size), counting through the category index alone. Seen items and
  excluded ids are counted for that rule for every caller; recommend no longer widens the beam
  past them (ef_floor NULL): the iterative scan steps over them at the same recall. jit is off.
- pgrecs._nearest: jit off (an exact scan's cost estimate can trigger JIT compilation, which
  costs more than the scan).
- pgrecs.recommend: counts the history without the decay (only the signs matter); because_of
  scores the 32 heaviest history items first and then only the items heavy enough to beat them
  (the same result), with one distance per pair when only the content space counts.
- pgrecs._history: the half-life setting is read once per call instead of once per row.
- The HNSW indexes build their graphs with ef_construction = 128 (was 64): at 1M items recall@10
  at ef_search 100 goes from 0.85 to 0.96 for item queries and from 0.92 to 1.00 for user
  vectors. Only the option changes here (no rebuild): rows written later are linked with it,
  and `REINDEX INDEX CONCURRENTLY pgrecs.items_embedding_hnsw` rebuilds the existing graph
  (docs/performance.md).
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Same signatures as revision 0002: `create or replace` keeps their owners and privileges.
FUNCTIONS = ["_history.sql", "_nearest.sql", "_rank.sql", "recommend.sql"]


def upgrade() -> None:
    for name in FUNCTIONS:
        execute_sql_file("0004", name)
    execute_sql("""
alter index pgrecs.items_embedding_hnsw set (ef_construction = 128);
alter index pgrecs.items_collab_embedding_hnsw set (ef_construction = 128);
""")


def downgrade() -> None:
    execute_sql("""
alter index pgrecs.items_embedding_hnsw set (ef_construction = 64);
alter index pgrecs.items_collab_embedding_hnsw set (ef_construction = 64);
""")
    for name in FUNCTIONS:
        execute_sql_file("0002", name)
