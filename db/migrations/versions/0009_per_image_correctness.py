"""Per-image correctness: which val and test images each evaluation got right, as a bitset.

One bit per image in the split's order (numpy.packbits, little bit order; 5,000 val images
are 625 bytes), so two architectures' results pair image by image (`nas.stats.pack_correct`,
`image_difference`). Nullable: rows written before this revision, and evaluations that did
not keep it, have NULL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nas_epoch_results") as batch:
        batch.add_column(sa.Column("val_correct", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("test_correct", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nas_epoch_results") as batch:
        batch.drop_column("test_correct")
        batch.drop_column("val_correct")
