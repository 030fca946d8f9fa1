"""Ablation looks: the seeds at which an ablation study's first and last test are planned.

`nas ablate` tests each variant against the reference at planned looks (nas.sequential):
round `first_look` seeds to `last_look` seeds (one look when both are equal), alpha spent
over them. Rows from before have NULL: their report takes one look at the seeds each variant
has (the fixed-size test).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nas_ablation_variants") as batch:
        batch.add_column(sa.Column("first_look", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("last_look", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nas_ablation_variants") as batch:
        batch.drop_column("last_look")
        batch.drop_column("first_look")
