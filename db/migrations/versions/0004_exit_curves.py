"""Early-exit curves: accuracy and mean inference FLOPs per threshold, per trial.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nas_exit_curves",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("split", sa.String(length=8), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("mean_flops", sa.Float(), nullable=False),
        sa.Column("exit_shares", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["nas_trials.id"],
            name=op.f("fk_nas_exit_curves_trial_id_nas_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("trial_id", "position", name=op.f("pk_nas_exit_curves")),
    )


def downgrade() -> None:
    op.drop_table("nas_exit_curves")
