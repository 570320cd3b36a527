"""because_of compares the results with the user's heaviest interactions only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Measured with `pgrecs bench` (docs/performance.md): at 100k items, for users with 500 seen items
and a 5% category filter, because_of took about 5 of recommend's 9 ms. It compared every result
with every positive history item: with equal weights (no pruning by weight) that is 500 vector
fetches and 5,000 distances per call. It now compares them with the user's
settings.because_of_history heaviest positive interactions (new setting, default 100; 0 or less:
all of them), which is still exactly pgrecs.explain's first row for users with no more positive
interactions than that; each pair's distance is computed once (it was computed twice), and the
history is read in one pass (the counts and the heaviest items together).

No table or signature changes: `create or replace` keeps the function's owner and privileges.
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql, execute_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql("""
insert into pgrecs.settings (name, value, description) values
    ('because_of_history', '100',
     'recommend''s because_of compares each result with this many of the user''s heaviest'
     ' positive interactions (0 or less: all of them)')
on conflict (name) do nothing;
""")
    execute_sql_file("0006", "recommend.sql")


def downgrade() -> None:
    execute_sql_file("0004", "recommend.sql")
    execute_sql("delete from pgrecs.settings where name = 'because_of_history';")
