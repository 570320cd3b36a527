"""A missing content_weight_warm row means the shipped default, 0.25.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04

- pgrecs._content_weight: without a `content_weight_warm` row in pgrecs.settings, warm users'
  content share is 0.25, the default revision 0005 set from the quality benchmark. The function
  still fell back to 0.3, the value of revision 0002. Nothing changes while the row exists.
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql_file

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0014", "_content_weight.sql")


def downgrade() -> None:
    execute_sql_file("0002", "_content_weight.sql")
