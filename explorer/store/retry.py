"""Store faults: which database errors pass by themselves (retried, bounded), and which
the user must act on (one line each).

A PostgreSQL server restarting, a connection reset, or a SQLite file held locked by
another process past its busy timeout are *transient*: the same statement succeeds
once the server is back or the lock is free. Every write of the store is idempotent and
its own transaction (explorer/store/writer.py), so a transient failure is retried by
running the whole write again, with a doubling wait, for at most `RetryPolicy.seconds`
(`explorer run --store-retry`, 60 s by default). Past that the store is unavailable:
StoreUnavailable names it and says that the same command resumes.

A full disk under the store and a read-only store are not transient: they become one
StoreError naming the store and what was being written (`explain`).
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from explorer.store.errors import StoreError

__all__ = [
    "DEFAULT_RETRY_SECONDS",
    "RetryPolicy",
    "StoreUnavailable",
    "StoreUnreachable",
    "call_with_retry",
    "disk_full",
    "explain",
    "outage_notice",
    "read_only",
    "read_only_store",
    "reason",
    "transient",
    "unavailable",
]

DEFAULT_RETRY_SECONDS = 60.0
# Less free space than this under a SQLite store that reports an I/O error: the disk is full
# (its -shm file alone grows by 32 KiB at a time).
_FULL_BELOW = 256 * 1024

_Result = TypeVar("_Result")

# SQLSTATE classes and codes of a server going or coming back: connection exceptions
# (08xxx), an administrator's or a crash shutdown (57P01, 57P02), the server still starting
# (57P03), too many connections while it restarts (53300).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03", "53300")
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


class StoreUnreachable(StoreError):
    """The store could not be reached on opening (refused, reset, timed out): transient."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class StoreUnavailable(StoreError):
    """The store stayed unreachable past the retry bound; the same command resumes."""


def reason(err: BaseException) -> str:
    """The driver's complaint in one line (no SQL, no parameters)."""
    if isinstance(err, StoreUnreachable):
        return err.why
    orig = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def transient(err: BaseException) -> bool:
    """Whether the same write may succeed a moment later: a lost or refused connection,
    a server (re)starting, a SQLite lock held past the busy timeout."""
    if isinstance(err, StoreUnreachable):
        return True
    if not isinstance(err, DBAPIError):
        return False
    if err.connection_invalidated:
        return True
    orig = err.orig
    if isinstance(orig, sqlite3.OperationalError):
        return any(text in str(orig) for text in _SQLITE_BUSY)
    sqlstate = getattr(orig, "sqlstate", None)
    if not sqlstate:
        # psycopg's own, without a server's code: a connection refused, closed or timed out.
        return isinstance(err, OperationalError)
    return str(sqlstate).startswith(_TRANSIENT_SQLSTATE_PREFIXES)


def disk_full(err: BaseException, where: str) -> bool:
    """SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100), ENOSPC in the message; or
    SQLite's I/O error on a file store whose folder has no room left (SQLite says only
    "disk I/O error" when it cannot grow its -shm file)."""
    orig = err.orig if isinstance(err, DBAPIError) else err
    text = str(orig)
    if (getattr(orig, "sqlite_errorname", "") == "SQLITE_FULL"
            or getattr(orig, "sqlstate", "") == "53100"
            or "database or disk is full" in text or "No space left on device" in text):
        return True
    if isinstance(orig, sqlite3.Error) and "disk I/O error" in text:
        with contextlib.suppress(OSError):
            return shutil.disk_usage(Path(where).parent).free < _FULL_BELOW
    return False


def read_only(err: BaseException) -> bool:
    """SQLite refusing to write a read-only file or directory; PostgreSQL's read-only
    transaction (25006)."""
    orig = err.orig if isinstance(err, DBAPIError) else err
    name = getattr(orig, "sqlite_errorname", "")
    return (name.startswith("SQLITE_READONLY") or "readonly database" in str(orig)
            or getattr(orig, "sqlstate", "") == "25006")


def explain(err: BaseException, where: str, doing: str) -> StoreError | None:
    """A full disk or a read-only store as one line naming the store and `doing`
    (what was being written); None for any other error."""
    if disk_full(err, where):
        return StoreError(f"the disk holding the results database at {where} is full: could "
                          f"not write {doing} ({reason(err)}); free some space there, then the "
                          "same command resumes")
    if read_only(err):
        return read_only_store(where, err)
    if isinstance(err, DBAPIError) and getattr(err.orig, "sqlstate", "") == "57014":
        return StoreError(f"the results database at {where} did not finish writing {doing} "
                          f"within its statement timeout ({reason(err)}); the same command "
                          "resumes")
    return None


def read_only_store(where: str, err: BaseException | None = None) -> StoreError:
    """`explorer run` on a store it cannot write."""
    why = f" ({reason(err)})" if err is not None else ""
    return StoreError(f"the results database at {where} is read-only{why}: `explorer run` "
                      "writes to it; run on a writable copy (--runs-dir or --store), or read "
                      "this one with status, export, report, compare or dashboard")


def unavailable(where: str, err: BaseException, seconds: float) -> StoreUnavailable:
    return StoreUnavailable(
        f"the results database at {where} has not answered for {seconds:.0f} s "
        f"({reason(err)}); this run stopped, and the same command resumes it once the store "
        "is back (--store-retry SECONDS waits longer)")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a transient store failure is waited out, and how often it is retried."""

    seconds: float = DEFAULT_RETRY_SECONDS
    first_wait: float = 0.25
    longest_wait: float = 4.0

    def wait_after(self, previous: float | None) -> float:
        """The next pause: doubling from `first_wait` up to `longest_wait`."""
        return self.first_wait if previous is None else min(previous * 2, self.longest_wait)


def call_with_retry(write: Callable[[], _Result], policy: RetryPolicy, where: str, doing: str,
                    *, on_outage: Callable[[str], None] | None = None,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> _Result:
    """`write()`, run again while it fails transiently, for at most `policy.seconds`.

    Raises StoreUnavailable past the bound, StoreError for a full disk or a read-only
    store, and anything else as it came. `on_outage` hears one line when the first
    transient failure starts the waiting.
    """
    since: float | None = None
    wait: float | None = None
    while True:
        try:
            return write()
        except Exception as err:
            if not transient(err):
                problem = explain(err, where, doing)
                if problem is None:
                    raise
                raise problem from None
            now = clock()
            if since is None:
                since = now
                if on_outage is not None:
                    on_outage(outage_notice(where, err, policy.seconds))
            left = policy.seconds - (now - since)
            if left <= 0:
                raise unavailable(where, err, policy.seconds) from None
            wait = policy.wait_after(wait)
            sleep(min(wait, left))


def outage_notice(where: str, err: BaseException, seconds: float) -> str:
    return (f"the results database at {where} is not answering ({reason(err)}); "
            f"retrying for up to {seconds:.0f} s, the sweep's results held meanwhile")
