"""Initial schema: experiments, architectures, trials, epoch results.

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nas_experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("config_json", sa.Text(), nullable=True),
        sa.Column("space_yaml", sa.Text(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nas_experiments")),
        sa.UniqueConstraint("name", name=op.f("uq_nas_experiments_name")),
    )
    op.create_table(
        "nas_architectures",
        sa.Column("hash", sa.String(length=16), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("short_name", sa.String(length=200), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=False),
        sa.Column("flops", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_nas_architectures")),
    )
    op.create_table(
        "nas_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("arch_hash", sa.String(length=16), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("epochs_planned", sa.Integer(), nullable=False),
        sa.Column("epochs_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("final_train_loss", sa.Float(), nullable=True),
        sa.Column("final_train_acc", sa.Float(), nullable=True),
        sa.Column("final_val_acc", sa.Float(), nullable=True),
        sa.Column("final_test_acc", sa.Float(), nullable=True),
        sa.Column("best_val_acc", sa.Float(), nullable=True),
        sa.Column("train_seconds", sa.Float(), nullable=True),
        sa.Column("device", sa.String(length=100), nullable=False),
        sa.Column("recipe_json", sa.Text(), nullable=False),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["arch_hash"],
            ["nas_architectures.hash"],
            name=op.f("fk_nas_trials_arch_hash_nas_architectures"),
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["nas_experiments.id"],
            name=op.f("fk_nas_trials_experiment_id_nas_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nas_trials")),
    )
    op.create_index(op.f("ix_nas_trials_arch_hash"), "nas_trials", ["arch_hash"])
    op.create_index(
        "ix_nas_trials_experiment_phase_status",
        "nas_trials",
        ["experiment_id", "phase", "status"],
    )
    op.create_table(
        "nas_epoch_results",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("train_acc", sa.Float(), nullable=False),
        sa.Column("val_acc", sa.Float(), nullable=True),
        sa.Column("test_acc", sa.Float(), nullable=True),
        sa.Column("epoch_seconds", sa.Float(), nullable=False),
        sa.Column("cumulative_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["nas_trials.id"],
            name=op.f("fk_nas_epoch_results_trial_id_nas_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("trial_id", "epoch", name=op.f("pk_nas_epoch_results")),
    )


def downgrade() -> None:
    op.drop_table("nas_epoch_results")
    op.drop_index("ix_nas_trials_experiment_phase_status", table_name="nas_trials")
    op.drop_index(op.f("ix_nas_trials_arch_hash"), table_name="nas_trials")
    op.drop_table("nas_trials")
    op.drop_table("nas_architectures")
    op.drop_table("nas_experiments")
