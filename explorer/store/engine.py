"""Where the database is and how to connect to it: URLs, paths, and the engines.

SQLite is the default (``<runs_dir>/explorer.db``), in WAL mode so readers
never block the writer nor the writer the readers; any SQLAlchemy URL (e.g.
``postgresql+psycopg://``) works as well.

- The writer's SQLite transactions start with ``BEGIN IMMEDIATE`` (take the
  write lock up front) so a read-then-write can never fail to upgrade its
  lock half way.
- Readers' engines are read-only: on SQLite the file is opened with a
  ``file:...?mode=ro`` URI (and ``query_only``), so nothing through a reader
  can write, and a missing database is reported instead of silently created;
  on PostgreSQL and MySQL/MariaDB the session is made read-only.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool, StaticPool

from explorer.store.errors import StoreError

DB_FILENAME = "explorer.db"
BUSY_TIMEOUT_MS = 30_000


def database_path(runs_dir: str | os.PathLike[str]) -> Path:
    """Where the default SQLite database of a runs directory lives."""
    return Path(runs_dir).expanduser() / DB_FILENAME


def store_url(runs_dir: Path, url: str | None) -> str:
    """The store's SQLAlchemy URL: the one given, or SQLite under the runs folder."""
    return url or f"sqlite:///{(runs_dir / DB_FILENAME).resolve()}"


def resolve(url_or_path: str | os.PathLike[str]) -> URL | Path | None:
    """A non-SQLite URL, a SQLite file path, or None for an in-memory SQLite database.

    A directory stands for its default database file (the runs directory), and
    so does a path that does not exist yet and has no suffix (``runs``), so a
    fresh runs directory is not mistaken for a database file.
    """
    if isinstance(url_or_path, str) and "://" in url_or_path:
        url = make_url(url_or_path)
        if url.get_backend_name() != "sqlite":
            return url
        if url.database in (None, "", ":memory:"):
            return None
        path = Path(url.database)
    else:
        path = Path(url_or_path)
    path = path.expanduser()
    is_runs_dir = path.is_dir() or (not path.exists() and not path.suffix)
    return path / DB_FILENAME if is_runs_dir else path


def open_engine(url_or_path: str | os.PathLike[str], *, readonly: bool) -> tuple[Engine, str]:
    """An engine for the database, and where it is (for messages; no password).

    A read-only open never creates anything: a missing file raises StoreError
    naming it and how to make one. A writer creates the file's folder.
    """
    target = resolve(url_or_path)
    if isinstance(target, URL):
        return server_engine(target, readonly), target.render_as_string(hide_password=True)
    where = str(target) if target is not None else ":memory:"
    if readonly and target is None:
        raise StoreError("an in-memory database cannot be opened read-only")
    if readonly and target is not None and not target.is_file():
        raise StoreError(f"no results database at {where}: run `explorer run SPEC` "
                         "first (or pass the runs directory it was written to)")
    if target is not None and not readonly:
        target.parent.mkdir(parents=True, exist_ok=True)
    return sqlite_engine(target, readonly), where


def cannot_open(where: str, err: DBAPIError) -> StoreError:
    """The driver's complaint on opening, as one line."""
    reason = str(err.orig).splitlines()[0] if err.orig is not None else str(err)
    return StoreError(f"cannot open the results database at {where}: {reason}")


def sqlite_engine(path: Path | None, readonly: bool) -> Engine:
    """A pooled SQLite engine with the pragmas set on every new connection."""
    if path is None:
        target, uri = ":memory:", False
    else:
        target, uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}", True

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(target, uri=uri, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)

    engine = create_engine(
        URL.create("sqlite+pysqlite", database=str(path) if path else None),
        creator=connect, poolclass=StaticPool if path is None else QueuePool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level; transactions are begun explicitly below.
        dbapi_connection.isolation_level = None
        pragmas = [f"busy_timeout={BUSY_TIMEOUT_MS}", "foreign_keys=ON"]
        if readonly:
            pragmas.append("query_only=ON")
        else:
            pragmas += ["journal_mode=WAL", "synchronous=NORMAL"]
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(f"PRAGMA {pragma}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


_READONLY_SQL = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}


def server_engine(url: URL, readonly: bool) -> Engine:
    """An engine for a database server; a read-only session where the backend has one."""
    engine = create_engine(url, pool_pre_ping=True)
    statement = _READONLY_SQL.get(url.get_backend_name())
    if readonly and statement is not None:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()
            # Committed, or the pool's reset-on-return rollback would undo the SET.
            dbapi_connection.commit()

    return engine
