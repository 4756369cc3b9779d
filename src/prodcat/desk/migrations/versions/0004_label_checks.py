"""Label checks from `prodcat audit --to-desk`: items.given_category, the catalogue's label.

A label check is queued with decision "check"; the desk offers the given category among the
options without saying which one it is. Existing rows are no checks: NULL.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("given_category", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("given_category")
