"""The tables as this explorer reads and writes them, and the schema version they are.

The metric columns are not spelled out here: the epochs table has one column
per `EPOCH_METRICS` name and the trials table one per `TRIAL_METRICS` name
(explorer/metrics.py), integers for the whole-number metrics and floats for the
rest. So adding an epoch metric is its field in `EpochMetrics` plus the Alembic
revision in `migrations/versions/` that adds its column to existing databases;
nothing here changes. Nor are the candidate's columns: the candidates table keeps
those explorer/columns.py declares stored, as it declares, so adding one is its line
there plus its revision. The revisions are what a database actually has; these
tables are what the newest revision leaves, and a test holds the two equal.

The schema version is the number of the newest revision (file
``vNNNN_*.py``, revision id ``NNNN``). A database records its own in
``alembic_version``; databases of the first release predate Alembic and have
only the ``schema_version`` table (one row per version applied), which every
upgrade still appends to so that those older releases see a newer database
and refuse it rather than misread it.

A trial belongs to an experiment, not to a space: one network in several
spaces of an experiment trains once, and the spaces come from the candidates
table (joined on experiment and key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
    text,
)

from explorer.columns import stored_order
from explorer.metrics import (
    EPOCH_METRICS,
    INTEGER_METRICS,
    PROVENANCE,
    PROVENANCE_TYPES,
    STATUSES,
    TRIAL_METRICS,
    Status,
)
from explorer.store.errors import StoreError

__all__ = [
    "ALEMBIC_TABLE",
    "CANDIDATE_FIELDS",
    "COST_FIELDS",
    "FIRST_RELEASE_VERSION",
    "LIST_FIELDS",
    "METRIC_INTEGER_TYPES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "candidate_table",
    "epoch_table",
    "experiment_table",
    "lease_table",
    "metadata",
    "revision_id",
    "revision_table",
    "stored_version",
    "too_new",
    "trial_table",
    "version_table",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_REVISION_FILE = re.compile(r"v(\d{4})_\w+\.py")
ALEMBIC_TABLE = "alembic_version"


def _newest_revision(versions: Path) -> int:
    """The highest revision number among the revision files (read from their names,
    so that knowing the version does not mean importing Alembic)."""
    numbers = [int(found.group(1)) for path in versions.iterdir()
               if (found := _REVISION_FILE.fullmatch(path.name))]
    if not numbers:
        raise RuntimeError(f"no schema revisions in {versions}: a broken installation")
    return max(numbers)


SCHEMA_VERSION = _newest_revision(MIGRATIONS / "versions")
# Databases made before the migrations existed are this version (schema_version table only).
FIRST_RELEASE_VERSION = 1


def revision_id(version: int) -> str:
    return f"{version:04d}"


# Whole-number metrics and their SQL types; every other metric column is a float.
METRIC_INTEGER_TYPES: dict[str, type[Integer]] = {
    **dict.fromkeys(INTEGER_METRICS, BigInteger), "epochs_completed": Integer}


def _metric_columns(names: Iterable[str]) -> list[Column[float | int]]:
    """Nullable columns for these metrics: a trial that has not reported one has NULL."""
    return [Column(name, METRIC_INTEGER_TYPES.get(name, Float)) for name in names]


_PROVENANCE_SQL: dict[type, Any] = {bool: Boolean, int: Integer, str: String(128)}


def _provenance_columns() -> list[Column[Any]]:
    """What ran, per trial (explorer/metrics.py's PROVENANCE), NULL until it starts."""
    return [Column(name, _PROVENANCE_SQL[PROVENANCE_TYPES[name]]) for name in PROVENANCE]


COST_FIELDS = ("latency_ms", "train_images_per_sec", "peak_memory_bytes", "cost_device")
# The candidate's columns (explorer/columns.py) the candidates table keeps, in its order:
# the scalars as their SQL types, the per-stage lists as JSON text (LIST_FIELDS). Those read
# from the architecture record (each stage's C and d) have no column of their own.
_CANDIDATE_SQL: dict[str, Any] = {"text": String(32), "int": Integer, "bigint": BigInteger,
                                  "float": Float, "json": Text}
CANDIDATE_FIELDS = tuple(c.name for c in stored_order() if c.stored in _CANDIDATE_SQL
                         and c.stored != "json")
LIST_FIELDS = tuple(c.name for c in stored_order() if c.stored == "json")

metadata = MetaData()

# One row per schema version applied (the first release's only record of its version).
version_table = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# A single row counting write transactions: the readers' cheap change detector.
revision_table = Table(
    "store_revision", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False, default=0),
)

experiment_table = Table(
    "experiments", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("spec_text", Text, nullable=False),
    Column("spec_hash", String(128), nullable=False),
    Column("spec_json", Text, nullable=False),
    Column("git_revision", String(64)),
    Column("package_versions", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("name", "version"),
)

candidate_table = Table(
    "candidates", metadata,
    Column("id", Integer, primary_key=True),
    Column("experiment_id", ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("space", String(128), nullable=False),
    Column("key", String(64), nullable=False),
    Column("architecture", Text),
    *(Column(c.name, _CANDIDATE_SQL[c.stored]) for c in stored_order()
      if c.stored in _CANDIDATE_SQL),
    # The measured cost (set_cost), not a training metric.
    Column("latency_ms", Float),
    Column("train_images_per_sec", Float),
    Column("peak_memory_bytes", BigInteger),
    Column("cost_device", String(128)),
    UniqueConstraint("experiment_id", "space", "key"),
    Index("ix_candidates_experiment_key", "experiment_id", "key"),
    # The dashboard's poll asks whether any candidate's measured cost changed: through
    # this index it reads the candidates that have one, not every candidate.
    Index("ix_candidates_latency_ms", "latency_ms"),
)

trial_table = Table(
    "trials", metadata,
    Column("id", Integer, primary_key=True),
    Column("experiment_id", ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("candidate_key", String(64), nullable=False),
    Column("trial_key", String(128), nullable=False, index=True),
    Column("seed", Integer, nullable=False),
    Column("status", String(16), nullable=False, default=Status.PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("device", String(128)),
    Column("created_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    *_metric_columns(TRIAL_METRICS),
    Column("reused_from_trial_id", ForeignKey("trials.id", ondelete="SET NULL")),
    *_provenance_columns(),
    UniqueConstraint("experiment_id", "trial_key"),
    Index("ix_trials_experiment_candidate", "experiment_id", "candidate_key"),
    # The dashboard's poll reads the trials running, started or finished since it last
    # looked, and the newest start and finish: through these, not a scan of every trial.
    Index("ix_trials_status", "status"),
    Index("ix_trials_started_at", "started_at"),
    Index("ix_trials_finished_at", "finished_at"),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})",
                    name="ck_trials_status"),
)

epoch_table = Table(
    "epochs", metadata,
    Column("trial_id", ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True),
    Column("epoch", Integer, primary_key=True, autoincrement=False),
    *_metric_columns(EPOCH_METRICS),
)


# The driver's lease on an experiment: one row per experiment, its holder (a random token,
# the host and pid) and when the holder last said it is alive. A free lease has no token.
lease_table = Table(
    "leases", metadata,
    Column("experiment_id", ForeignKey("experiments.id", ondelete="CASCADE"),
           primary_key=True, autoincrement=False),
    Column("token", String(64)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("started_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
)


def stored_version(conn: Connection) -> int | None:
    """The schema version a database says it has; None when it has no explorer schema.

    Only reads, so readers can call it; a first-release database (no
    alembic_version table) is the version its schema_version table names.
    """
    tables = set(inspect(conn).get_table_names())
    if ALEMBIC_TABLE in tables:
        found = conn.scalar(text(f"SELECT version_num FROM {ALEMBIC_TABLE}"))
        if found is None:
            return None
        if not re.fullmatch(r"\d{4}", str(found)):
            raise StoreError(f"alembic revision {found!r} is not one of explorer's: "
                             "the database belongs to something else")
        return int(found)
    if version_table.name in tables:
        return int(conn.scalar(select(func.max(version_table.c.version))) or 0)
    return None


def too_new(where: str, found: int) -> StoreError:
    return StoreError(f"{where} has schema version {found}, newer than this explorer's "
                      f"{SCHEMA_VERSION}: upgrade explorer to read it")
