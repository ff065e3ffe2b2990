"""Indexes for the dashboard's poll.

Each poll reads the trials running, started or finished since it last looked, the
newest start and finish times, and the candidates with a measured cost. Without these
indexes each of those was a scan of every trial or candidate (90 ms of a 140 ms poll at
100,000 trials); with them, a lookup.

Spelled out, not taken from explorer.store.schema: a revision is a fixed step.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_INDEXES = (
    ("ix_trials_status", "trials", "status"),
    ("ix_trials_started_at", "trials", "started_at"),
    ("ix_trials_finished_at", "trials", "finished_at"),
    ("ix_candidates_latency_ms", "candidates", "latency_ms"),
)


def upgrade() -> None:
    for name, table, column in _INDEXES:
        op.create_index(name, table, [column], unique=False)


def downgrade() -> None:
    for name, table, _column in _INDEXES:
        op.drop_index(name, table_name=table)
