"""Store a trained model's parameters with its row in pgrecs.models.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

The collaborative model's item tower is needed after training: `pgrecs embed` runs it to give a
brand-new item its collaborative vector as soon as the item's content is embedded. Its
parameters live in the database next to the vectors they produced, so every process that
writes vectors uses the same model (and the model guard can check it).
"""

from __future__ import annotations

from pgrecs.migrations.helpers import execute_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql("""
alter table pgrecs.models add column parameters bytea;
comment on column pgrecs.models.parameters is
    'Serialized parameters pgrecs needs to keep producing this model''s vectors (the collaborative item tower); NULL for embedding models.';
""")


def downgrade() -> None:
    execute_sql("alter table pgrecs.models drop column parameters;")
