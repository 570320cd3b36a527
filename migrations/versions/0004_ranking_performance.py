"""Ranking performance: the routing between HNSW walks and exact scans, partial HNSW indexes for
selective categories, the beam past a user's seen items, and cheaper user histories.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Measured with `pgrecs bench` (docs/performance.md); no table or signature changes:
- pgrecs._rank walks a category's own partial HNSW index when every requested category has one
  (created by a DBA, docs/performance.md: `where category = '...'`), one walk per category,
  merged; otherwise it picks the exact scan only when it is cheaper than the walk through the
  whole graph (eligible^2 <= 10 * (ef_search + skipped) * catalogue size, and at most
  settings.exact_scan_threshold); it raises hnsw.ef_search past the number of the user's seen
  items (and excluded ids) itself, for every caller; jit is off for the ranking functions.
- pgrecs._nearest: jit off (an exact scan's cost estimate could trigger JIT compilation, which
  costs more than the scan).
- pgrecs.recommend: counts the history without the decay (only the signs matter), computes
  because_of with one distance per pair when only the content space counts, and leaves the
  beam to _rank.
- pgrecs._history: the half-life setting is read once per call instead of once per row.
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Same signatures as revision 0002: `create or replace` keeps their owners and privileges.
FUNCTIONS = ["_history.sql", "_nearest.sql", "_rank.sql", "recommend.sql"]


def upgrade() -> None:
    for name in FUNCTIONS:
        execute_sql_file("0004", name)


def downgrade() -> None:
    for name in FUNCTIONS:
        execute_sql_file("0002", name)
