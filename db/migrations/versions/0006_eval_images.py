"""Evaluation sizes: the val and test images each accuracy was measured on, per epoch and final.

Nullable: a store written before this revision keeps its rows with the sizes unknown (NULL),
and so does an accuracy that was not measured.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = {
    "nas_epoch_results": ("val_images", "test_images"),
    "nas_trials": ("final_val_images", "final_test_images"),
}


def upgrade() -> None:
    # Batch mode on SQLite; adding a nullable column is a plain ALTER TABLE ADD COLUMN there.
    for table, columns in _COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.add_column(sa.Column(column, sa.Integer(), nullable=True))


def downgrade() -> None:
    for table, columns in _COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in reversed(columns):
                batch.drop_column(column)
