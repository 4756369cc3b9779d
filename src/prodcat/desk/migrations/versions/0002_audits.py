"""Blind audits: items.audit, items.priority (the desk's order) and items.gate_case.

Existing rows are review / unknown / auto-labelled items: not audits, ordered by their probability
as before, modality case unknown.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("priority", sa.Float, nullable=True))
        batch.add_column(sa.Column("audit", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("gate_case", sa.String(16), nullable=True))
    op.execute("UPDATE items SET priority = probability")
    with op.batch_alter_table("items") as batch:
        batch.alter_column("priority", existing_type=sa.Float, nullable=False)
        batch.drop_index("ix_items_queue_order")
        batch.create_index("ix_items_queue_order", ["queued", "priority", "product_id"])


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_index("ix_items_queue_order")
        batch.create_index("ix_items_queue_order", ["queued", "probability", "product_id"])
        batch.drop_column("gate_case")
        batch.drop_column("audit")
        batch.drop_column("priority")
