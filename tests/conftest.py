"""Shared fixtures: one Ray for the whole test session, and tiny digits specs."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

# A network small enough that an epoch on 8x8 digits takes well under a second on one core.
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "model": {"family": "resnext", "template": "cifar", "depths": [1, 1], "stem_width": 8,
              "widths": [16, 32], "cardinality": 1, "bottleneck_width": 4, "block": "grouped"},
    "spaces": {"grid": {"axes": {"cardinality": [1, 2]}}},
    "data": {"dataset": "digits", "resolution": 8},
    "train": {"epochs": 2, "batch_size": 64, "precision": "fp32", "channels_last": False,
              "seeds": [0, 1]},
    "search": {"strategy": "grid"},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
}


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Sections given as mappings update the base's section key by key; others replace."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key].update(copy.deepcopy(dict(value)))
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_spec(tmp_path: Path, filename: str = "spec.yaml", **overrides: Any) -> Path:
    """Write a tiny digits spec (2 candidates x 2 seeds) into tmp_path; returns its path.

    Overrides update it section by section, one level deep:
    ``tiny_spec(tmp_path, name="other", train={"epochs": 3})`` changes the
    epochs only, ``spaces={"grid": {...}}`` replaces the space "grid".
    """
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(_merge(TINY_SPEC, overrides), sort_keys=False),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A local Ray with 2 CPUs, started once for the session and shut down at its end.

    `address="local"` always starts a new instance, never joining one that
    `ray start` or another program left behind. Sweeps run in this process
    use it; tests that need their own Ray (clusters, killed drivers) run it in
    a subprocess.
    """
    import ray

    if ray.is_initialized():  # someone else's: use it, leave it to them
        yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of live processes (other than this one) whose environment has name=value.

    Ray renames its workers (``ray::ImplicitFunc.train``), so their command
    lines do not say which Ray they belong to; the environment they inherit does.
    """
    wanted = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or not ours to read
            continue
    return found


def wait_for_no_processes_with_env(name: str, value: str, seconds: float = 15.0) -> list[int]:
    """Wait until no process has name=value in its environment; returns those left."""
    deadline = time.monotonic() + seconds
    while (left := processes_with_env(name, value)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return left


@pytest.fixture
def ray_env() -> Iterator[dict[str, str]]:
    """The environment for a subprocess that starts a Ray of its own.

    Its RAY_TMPDIR is a fresh short folder (Ray's socket paths must stay
    short), so that Ray shares no session files, and no ``ray_current_cluster``
    address file, with any other; RAY_ADDRESS is removed. Afterwards every
    process still carrying that RAY_TMPDIR is killed by pid (never `ray stop`,
    which would stop every Ray on the machine).
    """
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc to find the processes a subprocess's Ray leaves")
    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = folder
    try:
        yield env
    finally:
        for pid in processes_with_env("RAY_TMPDIR", folder):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


# --- results stores: SQLite and PostgreSQL ------------------------------------------------

POSTGRES_URL_ENV = "EXPLORER_TEST_POSTGRES_URL"
STORE_BACKENDS = ("sqlite", "postgresql")


def postgres_server_url() -> str:
    """EXPLORER_TEST_POSTGRES_URL: a PostgreSQL database whose role may create databases.

    Without it the calling test is skipped, except under CI (env CI set), where
    that is a failure: .ci/run starts a throwaway server and sets it.
    """
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        return url
    reason = (f"{POSTGRES_URL_ENV} is not set (.ci/run starts a throwaway PostgreSQL and "
              "sets it; see .ci/postgres.sh)")
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL test under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on that server, its URL (password included); dropped after,
    its connections closed first (a killed driver's included)."""
    import uuid

    import sqlalchemy as sa

    server = sa.make_url(server_url)
    name = f"explorer_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test.

    Made on the server of EXPLORER_TEST_POSTGRES_URL (PostgreSQL 13 or newer; its
    role needs CREATEDB); skipped without it, failed instead under CI.
    """
    with fresh_postgres_database(postgres_server_url()) as url:
        yield url


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty results store as a SQLAlchemy URL, once per backend.

    Give it to `Writer.open`/`Reader.open`, `RunRequest(store_url=...)` or
    ``explorer run --store``; the test runs as ``[sqlite]`` and ``[postgresql]``:

    - sqlite: ``sqlite:///<tmp_path>/runs/explorer.db``, not created yet: exactly the
      default store of the runs directory ``tmp_path / "runs"``;
    - postgresql: `postgres_url`, a new database (skipped without
      EXPLORER_TEST_POSTGRES_URL, failed under CI).
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs' / 'explorer.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
