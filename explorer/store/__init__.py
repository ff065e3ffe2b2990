"""The results database: experiments, candidates, trials and per-epoch metrics.

One writer (the sweep driver) and any number of readers (the dashboard, the
CLI's reports) share it, SQLite by default or any SQLAlchemy URL. The package
is split by role:

- `schema`: the tables, their metric columns derived from explorer/metrics.py,
  and the schema version;
- `migrations/` and `migrate`: the Alembic revisions, which the writer runs
  when it opens a database (readers never migrate);
- `engine`: URLs and paths, the SQLite WAL engine and the read-only engines;
- `reader`: `Reader`, read-only by construction;
- `writer`: `Writer`, the reader plus the idempotent write methods;
- `records`: the records readers return and the casts writers apply;
- `provenance`: the code's revision and versions an experiment records.

``python -m explorer.store upgrade PATH`` upgrades a database without running
anything; ``python -m explorer.store revision -m WHAT`` writes the next revision.

Needs neither torch, ray nor streamlit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from explorer.metrics import STATUSES
from explorer.store.engine import DB_FILENAME, database_path, store_url
from explorer.store.errors import SpecChanged, StoreError
from explorer.store.provenance import (
    differing_keys,
    environment_info,
    git_revision,
    package_versions,
)
from explorer.store.reader import STAGE_LIST_COLUMNS, Reader
from explorer.store.records import ExperimentRecord, TrialRecord
from explorer.store.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from explorer.store.writer import Writer


def __getattr__(name: str) -> Any:
    """`Writer`, imported when first asked for: a command that only reads (status,
    compare, report, export) does not pay for the writer's imports (its SQL dialects)."""
    if name == "Writer":
        from explorer.store.writer import Writer

        return Writer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "STAGE_LIST_COLUMNS",
    "STATUSES",
    "ExperimentRecord",
    "Reader",
    "SpecChanged",
    "StoreError",
    "TrialRecord",
    "Writer",
    "database_path",
    "differing_keys",
    "environment_info",
    "git_revision",
    "package_versions",
    "store_url",
]
