"""Which process space a lease's holder runs in: the host's boot and its PID namespace.

"Same host" meant "same hostname": two containers with one hostname and separate PID
namespaces each took the other's live driver for dead (its pid is not among theirs) and took
its lease (issue 26 D5). A holder now also stores `process_space` (boot id / PID namespace,
`nas.db.lease.process_space`); a lease is judged by its pid only from the same space. NULL for
leases written before this revision (judged by hostname, as then) and where /proc has none.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nas_experiment_leases") as batch:
        batch.add_column(sa.Column("process_space", sa.String(120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nas_experiment_leases") as batch:
        batch.drop_column("process_space")
