"""predictions, batches and administrators

Revision ID: 0001
Revises: (none)
Created: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batches_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_batches_visitor"), ["visitor"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("batch_id", sa.String(length=24), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("image_format", sa.String(length=8), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("top_k", sa.JSON(), nullable=True),
        sa.Column("model_version", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("serving_ms", sa.Float(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("true_label", sa.String(length=255), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(), nullable=True),
        sa.Column("reviewed_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_predictions_batch_id"), ["batch_id"])
        batch_op.create_index(batch_op.f("ix_predictions_correct"), ["correct"])
        batch_op.create_index(batch_op.f("ix_predictions_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_predictions_image_sha256"), ["image_sha256"])
        batch_op.create_index(batch_op.f("ix_predictions_label"), ["label"])
        batch_op.create_index(batch_op.f("ix_predictions_model_version"), ["model_version"])
        batch_op.create_index(batch_op.f("ix_predictions_source"), ["source"])
        batch_op.create_index(batch_op.f("ix_predictions_status"), ["status"])
        batch_op.create_index(batch_op.f("ix_predictions_visitor"), ["visitor"])


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_visitor"))
        batch_op.drop_index(batch_op.f("ix_predictions_status"))
        batch_op.drop_index(batch_op.f("ix_predictions_source"))
        batch_op.drop_index(batch_op.f("ix_predictions_model_version"))
        batch_op.drop_index(batch_op.f("ix_predictions_label"))
        batch_op.drop_index(batch_op.f("ix_predictions_image_sha256"))
        batch_op.drop_index(batch_op.f("ix_predictions_created_at"))
        batch_op.drop_index(batch_op.f("ix_predictions_correct"))
        batch_op.drop_index(batch_op.f("ix_predictions_batch_id"))

    op.drop_table("predictions")
    op.drop_table("users")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_visitor"))
        batch_op.drop_index(batch_op.f("ix_batches_created_at"))

    op.drop_table("batches")
