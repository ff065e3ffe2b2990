"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every write that must not leave a partial result behind (tables, reports,
checkpoints, cached decodes, downloads, extracted archives) goes through here,
so the temp-file-and-rename dance is written once.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from explorer.errors import ExplorerError

__all__ = [
    "NotWritten",
    "atomic_directory",
    "atomic_path",
    "atomic_write",
    "atomic_write_text",
    "scratch_file",
]

# What a full or read-only disk says: the file cannot be written there, whatever wrote it.
_MEDIA_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class NotWritten(ExplorerError, OSError):
    """A file could not be written because its disk is full or read-only: one line naming
    the file and the reason (an ExplorerError: the CLI exits 2 with it). An OSError too, so
    code that handles those handles it."""

    def __init__(self, target: Path, problem: OSError) -> None:
        super().__init__(problem.errno, f"cannot write {target}: {_reason(problem)}")
        self.target = target

    def __str__(self) -> str:
        return str(self.strerror)


def _reason(problem: OSError) -> str:
    # By its number: pyarrow's text for ENOSPC is "Error writing bytes to file. Detail: ...".
    return os.strerror(problem.errno) if problem.errno else str(problem).splitlines()[0]


@contextlib.contextmanager
def _media_errors_named(target: Path) -> Iterator[None]:
    """A full or read-only disk met while the block writes `target` raises NotWritten
    naming it (torch's own writer, given a path, says only "unexpected pos")."""
    try:
        yield
    except NotWritten:
        raise
    except OSError as problem:
        if problem.errno not in _MEDIA_ERRORS:
            raise
        raise NotWritten(target, problem) from problem


@contextlib.contextmanager
def scratch_file(
    directory: str | Path, *, prefix: str = "", suffix: str = ".tmp"
) -> Iterator[Path]:
    """A new empty file in `directory`, deleted when the block ends, whatever happens.

    It lies beside what it is for (not in /tmp) so that renaming it into place
    never crosses a file system, and a crash leaves only a dot-file behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside `target`, renamed onto it only if the block succeeds.

    `fsync` flushes the new file to disk before the rename, for a file whose
    loss in a power cut would cost real work (a checkpoint). A full or read-only disk
    raises NotWritten naming `target`; the scratch file is gone either way.
    """
    target = Path(target)
    with _media_errors_named(target), \
            scratch_file(target.parent, prefix=f".{target.name}.") as tmp:
        yield tmp
        # mkstemp makes the file private (0600); the result should carry the
        # mode a plain open() would have given it, so others can read a table.
        os.chmod(tmp, 0o666 & ~_umask())
        if fsync:
            _fsync(tmp)
        os.replace(tmp, target)


@functools.cache
def _umask() -> int:
    # The only way to read the umask is to set it; done once, before any thread needs it.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write(
    target: str | Path, write: Callable[[Path], None], *, fsync: bool = False
) -> None:
    """Call `write(tmp_path)`, then move the result into place."""
    with atomic_path(target, fsync=fsync) as tmp:
        write(tmp)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """A path for a folder the block creates, renamed onto `target` if the block succeeds.

    The path (named like `target`) lies in a fresh scratch folder beside
    `target`, so the block may leave other things next to it, such as an
    archive's other members: the scratch folder is removed either way. A
    folder another process put at `target` in the meantime is kept (both were
    complete).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield scratch / target.name
        try:
            os.replace(scratch / target.name, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
