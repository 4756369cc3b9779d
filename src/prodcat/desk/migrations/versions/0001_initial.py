"""The first desk schema: items, users, answers, leases, skips, settings.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("product_id", sa.String(200), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("image_path", sa.Text, nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("queued", sa.Boolean, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("ood_score", sa.Float, nullable=True),
        sa.Column("top_json", sa.Text, nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_items_queued", "items", ["queued"])
    op.create_index("ix_items_queue_order", "items", ["queued", "probability", "product_id"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("product_id", sa.String(200), sa.ForeignKey("items.product_id"), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("new_category", sa.Boolean, nullable=False),
        sa.Column("model_suggestion", sa.Text, nullable=False),
        sa.Column("agreed", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("product_id", "reviewer", name="uq_answer_reviewer"),
    )
    op.create_index("ix_answers_product_id", "answers", ["product_id"])
    op.create_index("ix_answers_reviewer", "answers", ["reviewer"])
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("product_id", sa.String(200), sa.ForeignKey("items.product_id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("product_id", "user_id", name="uq_lease_user"),
    )
    op.create_index("ix_leases_product_id", "leases", ["product_id"])
    op.create_index("ix_leases_expires_at", "leases", ["expires_at"])
    op.create_table(
        "skips",
        sa.Column(
            "product_id", sa.String(200), sa.ForeignKey("items.product_id"), primary_key=True
        ),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("settings", "skips", "leases", "answers", "users", "items"):
        op.drop_table(table)
