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
- A store on read-only media (a mounted results share, a read-only bind mount)
  can still be read. WAL needs its ``-shm`` file: where it exists (a writer is
  live or did not close cleanly) ``mode=ro`` reads through it; where it does not
  and cannot be made (the directory is read-only), no writer has the file open,
  every transaction is in the main file, and it is opened ``immutable=1`` (no
  locks, no WAL). A writer that starts on that file later, through another
  mount, is not seen by a reader opened that way until it reopens.
- Every connection has a timeout: SQLite waits BUSY_TIMEOUT_MS for a lock;
  PostgreSQL (psycopg) gives up connecting after _CONNECT_TIMEOUT_S and a
  statement after _STATEMENT_TIMEOUT_MS, unless the URL sets ``connect_timeout``
  or ``options`` itself (``?connect_timeout=30``,
  ``?options=-c%20statement_timeout%3D600000``); a server that accepts and never
  answers is one line, not a hang. Pooled connections are pinged before use
  (``pool_pre_ping``), so one a server restart closed is replaced, not used.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import QueuePool, StaticPool

from explorer.store.errors import StoreError
from explorer.store.retry import StoreUnreachable, explain, reason, transient

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DB_FILENAME",
    "cannot_open",
    "database_path",
    "describe",
    "open_engine",
    "resolve",
    "store_url",
]

DB_FILENAME = "explorer.db"
BUSY_TIMEOUT_MS = 30_000
_CONNECT_TIMEOUT_S = 10
_STATEMENT_TIMEOUT_MS = 120_000
_PSYCOPG = ("psycopg", "psycopg2")


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
        url = _checked_url(url_or_path)
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


def _checked_url(text: str) -> URL:
    """A store URL parsed and checked before anything connects: its form, its port, and
    that its dialect and driver exist here; StoreError naming the URL otherwise."""
    shown = text.split("@")[-1] if "@" in text else text  # never echo a password
    scheme = text.split("://", 1)[0]
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as err:
        raise StoreError(f"the store URL ...@{shown} is malformed ({err}): use "
                         "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
                         ) from None
    if url.port is not None and not 0 < url.port < 65536:
        raise StoreError(f"the store URL's port {url.port} is out of range (1-65535)")
    try:
        dialect = url.get_dialect()
        if url.get_backend_name() != "sqlite":
            dialect.import_dbapi()
    except ArgumentError:
        raise StoreError(f"unknown database {scheme!r} in the store URL: use sqlite:///PATH "
                         "or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB") from None
    except ImportError as err:
        raise StoreError(f"the store URL's database {scheme!r} needs a Python driver that is "
                         f"not installed ({err}); explorer's stores are sqlite:///PATH and "
                         "postgresql+psycopg://... (pip install 'explorer[postgres]')") from None
    return url


def describe(url_or_path: str | os.PathLike[str]) -> str:
    """Where a store is, for messages (no password); the text given if it does not parse."""
    try:
        target = resolve(url_or_path)
    except StoreError:
        return str(url_or_path).split("@")[-1]
    if isinstance(target, URL):
        return target.render_as_string(hide_password=True)
    return str(target) if target is not None else ":memory:"


def open_engine(url_or_path: str | os.PathLike[str], *, readonly: bool) -> tuple[Engine, str]:
    """An engine for the database, and where it is (for messages; no password).

    A read-only open never creates anything: a missing file raises StoreError
    naming it and how to make one. A writer creates the file's folder.
    """
    target = resolve(url_or_path)
    if isinstance(target, URL):
        return _server_engine(target, readonly), target.render_as_string(hide_password=True)
    where = str(target) if target is not None else ":memory:"
    if readonly and target is None:
        raise StoreError("an in-memory database cannot be opened read-only")
    if readonly and target is not None and not target.is_file():
        raise StoreError(f"no results database at {where}: run `explorer run SPEC` "
                         "first (or pass the runs directory it was written to)")
    if target is not None and not readonly:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot make the folder of the results database {where}: "
                             f"{err.strerror or err}") from None
    return _sqlite_engine(target, readonly), where


def cannot_open(where: str, err: DBAPIError) -> StoreError:
    """The driver's complaint on opening, as one line."""
    problem = explain(err, where, "to it on opening")
    if problem is not None:
        return problem
    message = f"cannot open the results database at {where}: {reason(err)}"
    return StoreUnreachable(message, reason(err)) if transient(err) else StoreError(message)


def _sqlite_engine(path: Path | None, readonly: bool) -> Engine:
    """A pooled SQLite engine with the pragmas set on every new connection."""
    if path is None:
        target, uri = ":memory:", False
    elif readonly:
        target, uri = f"{path.resolve().as_uri()}?{_readonly_mode(path)}", True
    else:
        target, uri = f"{path.resolve().as_uri()}?mode=rwc", True

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


def _readonly_mode(path: Path) -> str:
    """``mode=ro``, or ``immutable=1`` where a WAL database cannot be read that way: its
    ``-shm`` file is missing and its directory is read-only (see the module's note)."""
    probe = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(probe, uri=True)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as err:
        if "unable to open" in str(err) or "readonly" in str(err):
            return "immutable=1"
    except sqlite3.DatabaseError:  # not a database: the reader's own check says so
        pass
    return "mode=ro"


_READONLY_SQL = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}


def _server_engine(url: URL, readonly: bool) -> Engine:
    """An engine for a database server; a read-only session where the backend has one."""
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in _PSYCOPG:
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = _CONNECT_TIMEOUT_S
        if "options" not in url.query:
            connect_args["options"] = f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}"
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
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
