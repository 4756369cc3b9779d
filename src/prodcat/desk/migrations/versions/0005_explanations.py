"""Explanations: items.explanation_json, the reasons `prodcat queue` stored for a queued product.

Existing rows have none (NULL); the next `prodcat queue` with a model that explains fills them in
for the products it re-scores.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("explanation_json", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("explanation_json")
