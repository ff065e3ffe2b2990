"""Stopped trials, what each trial ran with, and the driver's lease on an experiment.

- trials.status may be 'stopped' (ended early by the scheduler). SQLite cannot
  change a CHECK constraint in place, so the table is rebuilt (Alembic's batch
  mode); the writer runs upgrades with SQLite's foreign keys off, so dropping
  the old table does not cascade into the epochs that reference it.
- trials gain the provenance columns (explorer/metrics.py's PROVENANCE).
- leases: one row per experiment, its driver's token, host, pid and heartbeat.

Spelled out, not taken from explorer.store.schema: a revision is a fixed step.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_OLD_STATUSES = "status IN ('pending', 'running', 'finished', 'failed')"
_NEW_STATUSES = "status IN ('pending', 'running', 'finished', 'stopped', 'failed')"
_PROVENANCE = (
    ("gpu_name", sa.String(128)),
    ("precision", sa.String(128)),
    ("channels_last", sa.Boolean()),
    ("compiled", sa.Boolean()),
    ("torch_version", sa.String(128)),
    ("resumed_from_epoch", sa.Integer()),
    ("node", sa.String(128)),
)


def upgrade() -> None:
    with op.batch_alter_table("trials", recreate="auto") as batch:
        batch.drop_constraint("ck_trials_status", type_="check")
        batch.create_check_constraint("ck_trials_status", sa.text(_NEW_STATUSES))
        for name, kind in _PROVENANCE:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_table(
        "leases",
        sa.Column("experiment_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("token", sa.String(64)),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer()),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("experiment_id"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("trials", recreate="auto") as batch:
        for name, _ in reversed(_PROVENANCE):
            batch.drop_column(name)
        batch.drop_constraint("ck_trials_status", type_="check")
        batch.create_check_constraint("ck_trials_status", sa.text(_OLD_STATUSES))
