"""Label Studio bookkeeping: the tasks exported (so a re-export adds only new products) and the
annotations imported (keyed by Label Studio's annotation id, so an edit replaces its answer).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "labelstudio_tasks",
        sa.Column(
            "product_id", sa.String(200), sa.ForeignKey("items.product_id"), primary_key=True
        ),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("exported_at", sa.DateTime, nullable=False),
        sa.Column("task_id", sa.Integer, nullable=True),
        sa.Column("project", sa.Integer, nullable=True),
    )
    op.create_table(
        "labelstudio_annotations",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("task_id", sa.Integer, nullable=True),
        sa.Column("product_id", sa.String(200), sa.ForeignKey("items.product_id"), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("skipped", sa.Boolean, nullable=False),
        sa.Column("lead_time_s", sa.Float, nullable=True),
        sa.Column(
            "answer_id",
            sa.Integer,
            sa.ForeignKey("answers.id", ondelete="SET NULL"),
            nullable=True,
        ),
    )
    op.create_index(
        "ix_labelstudio_annotations_product_id", "labelstudio_annotations", ["product_id"]
    )


def downgrade() -> None:
    op.drop_table("labelstudio_annotations")
    op.drop_table("labelstudio_tasks")
