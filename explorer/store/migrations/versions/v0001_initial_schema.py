"""The first release's schema, exactly as it created it (before there were migrations).

Spelled out rather than taken from explorer.store.schema: a revision is a fixed
step, and the schema module moves on as metrics are added. A database that
release made is stamped at this revision instead of running it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("applied_at", _when(), nullable=False),
    )
    store_revision = op.create_table(
        "store_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("spec_text", sa.Text, nullable=False),
        sa.Column("spec_hash", sa.String(128), nullable=False),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("git_revision", sa.String(64)),
        sa.Column("package_versions", sa.Text, nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_experiments_name", "experiments", ["name"])
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("experiment_id", sa.Integer,
                  sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
        sa.Column("space", sa.String(128), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("architecture", sa.Text),
        sa.Column("template", sa.String(32)),
        sa.Column("block", sa.String(32)),
        sa.Column("depths", sa.Text),
        sa.Column("widths", sa.Text),
        sa.Column("group_widths", sa.Text),
        sa.Column("stem_width", sa.Integer),
        sa.Column("cardinality", sa.Integer),
        sa.Column("bottleneck_width", sa.Integer),
        sa.Column("params", sa.BigInteger),
        sa.Column("flops", sa.BigInteger),
        sa.Column("acts", sa.BigInteger),
        sa.Column("params_deviation_pct", sa.Float),
        sa.Column("flops_deviation_pct", sa.Float),
        sa.Column("solved", sa.String(32)),
        sa.Column("latency_ms", sa.Float),
        sa.Column("train_images_per_sec", sa.Float),
        sa.Column("peak_memory_bytes", sa.BigInteger),
        sa.Column("cost_device", sa.String(128)),
        sa.UniqueConstraint("experiment_id", "space", "key"),
    )
    op.create_index("ix_candidates_experiment_key", "candidates", ["experiment_id", "key"])
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("experiment_id", sa.Integer,
                  sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
        sa.Column("candidate_key", sa.String(64), nullable=False),
        sa.Column("trial_key", sa.String(128), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("device", sa.String(128)),
        sa.Column("created_at", _when()),
        sa.Column("started_at", _when()),
        sa.Column("finished_at", _when()),
        sa.Column("test_error", sa.Float),
        sa.Column("test_top5_error", sa.Float),
        sa.Column("train_loss", sa.Float),
        sa.Column("train_error", sa.Float),
        sa.Column("train_images_per_sec", sa.Float),
        sa.Column("epochs_completed", sa.Integer),
        sa.Column("seconds", sa.Float),
        sa.Column("reused_from_trial_id", sa.Integer,
                  sa.ForeignKey("trials.id", ondelete="SET NULL")),
        sa.UniqueConstraint("experiment_id", "trial_key"),
        sa.CheckConstraint("status IN ('pending', 'running', 'finished', 'failed')",
                           name="ck_trials_status"),
    )
    op.create_index("ix_trials_experiment_candidate", "trials",
                    ["experiment_id", "candidate_key"])
    op.create_index("ix_trials_trial_key", "trials", ["trial_key"])
    op.create_table(
        "epochs",
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("train_loss", sa.Float),
        sa.Column("train_error", sa.Float),
        sa.Column("test_error", sa.Float),
        sa.Column("test_top5_error", sa.Float),
        sa.Column("lr", sa.Float),
        sa.Column("seconds", sa.Float),
        sa.Column("train_images_per_sec", sa.Float),
        sa.Column("peak_memory_bytes", sa.BigInteger),
    )
    # The counter's single row; the schema_version row is written by env.py, as for
    # every revision.
    op.bulk_insert(store_revision, [{"id": 1, "value": 0}])


def downgrade() -> None:
    for table in ("epochs", "trials", "candidates", "experiments", "store_revision",
                  "schema_version"):
        op.drop_table(table)
