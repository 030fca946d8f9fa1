"""Ablation variants: which architectures `nas ablate` ran against which reference.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nas_ablation_variants",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("reference_hash", sa.String(length=16), nullable=False),
        sa.Column("arch_hash", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("move", sa.String(length=8), nullable=False),
        sa.Column("change", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["nas_experiments.id"],
            name=op.f("fk_nas_ablation_variants_experiment_id_nas_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reference_hash"],
            ["nas_architectures.hash"],
            name=op.f("fk_nas_ablation_variants_reference_hash_nas_architectures"),
        ),
        sa.ForeignKeyConstraint(
            ["arch_hash"],
            ["nas_architectures.hash"],
            name=op.f("fk_nas_ablation_variants_arch_hash_nas_architectures"),
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id", "reference_hash", "arch_hash", name=op.f("pk_nas_ablation_variants")
        ),
    )


def downgrade() -> None:
    op.drop_table("nas_ablation_variants")
