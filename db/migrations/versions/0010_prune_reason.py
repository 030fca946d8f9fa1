"""Why a trial was pruned: the pruning rule's numbers at the epoch it stopped.

`nas.search.pruning.PruneReason` as JSON (epoch, value, threshold, the seed noise and its
degrees of freedom, the gap, the rank gate's rho), shown by `nas status` and the dashboard.
Nullable: trials that were not pruned, and pruned rows written before this revision, have NULL.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nas_trials") as batch:
        batch.add_column(sa.Column("prune_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nas_trials") as batch:
        batch.drop_column("prune_reason")
