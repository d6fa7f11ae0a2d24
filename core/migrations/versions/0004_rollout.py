"""Safe roll-outs: the roll-out state and its events; which role answered a
prediction, and the shadow's answer beside it

Revision ID: 0004
Revises: 0003
Created: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollout",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("stable", sa.BigInteger(), nullable=True),
        sa.Column("canary", sa.BigInteger(), nullable=True),
        sa.Column("canary_share", sa.Float(), nullable=False),
        sa.Column("shadow", sa.BigInteger(), nullable=True),
        sa.Column("auto_canary", sa.Boolean(), nullable=False),
        sa.Column("canary_since", sa.DateTime(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "rollout_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_events_created_at", "rollout_events", ["created_at"])
    op.create_index("ix_rollout_events_kind", "rollout_events", ["kind"])
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("model_role", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("shadow_version", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("shadow_label", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("shadow_confidence", sa.Float(), nullable=True))
        batch.create_index("ix_predictions_model_role", ["model_role"])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_index("ix_predictions_model_role")
        batch.drop_column("shadow_confidence")
        batch.drop_column("shadow_label")
        batch.drop_column("shadow_version")
        batch.drop_column("model_role")
    op.drop_index("ix_rollout_events_kind", table_name="rollout_events")
    op.drop_index("ix_rollout_events_created_at", table_name="rollout_events")
    op.drop_table("rollout_events")
    op.drop_table("rollout")
