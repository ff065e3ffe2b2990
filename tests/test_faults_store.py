"""Store faults injected into the real `explorer` command (a subprocess with a Ray of its
own): a PostgreSQL server restarted or stopped mid-sweep (its own throwaway server, not
the shared one), a server that accepts TCP and never answers, read-only media (a
read-only bind mount, an immutable file), a full tmpfs under the store, and store URLs
and seeds the store cannot take.

Each checks the exit code, at most 3 lines on stderr, and the store afterwards: after a
rerun every trial finished, exactly one row per trial and epoch. Mounting needs root
(CAP_SYS_ADMIN): without it those tests skip, and fail under CI=true. The time each fault
took to answer is printed (run with -s to see it), never asserted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import POSTGRES_URL_ENV, processes_with_env, tiny_spec

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parent.parent
EXPLORER = [sys.executable, "-m", "explorer.cli"]
EPOCHS = 2
TRIALS = 2  # tiny_spec's two cardinalities, one seed


def must_skip(reason: str) -> None:
    """Skip, or fail under CI, where a fault cannot be set up here."""
    if os.environ.get("CI"):
        pytest.fail(f"fault test under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@dataclass
class Ran:
    code: int
    stderr: list[str]
    stdout: str
    seconds: float


def explorer(*args: str, env: dict[str, str], timeout: float = 300) -> Ran:
    started = time.monotonic()
    done = subprocess.run([*EXPLORER, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    return Ran(done.returncode, lines(done.stderr), done.stdout, time.monotonic() - started)


def spec_for(tmp_path: Path, name: str) -> Path:
    return tiny_spec(tmp_path, name=name, train={"epochs": EPOCHS, "seeds": [0]})


def store_state(url: str) -> tuple[dict[str, int], int, int]:
    """Trials by status, epoch rows, distinct (trial, epoch) pairs."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            statuses = dict(conn.execute(sa.text(
                "SELECT status, count(*) FROM trials GROUP BY status")).all())
            rows, distinct = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT trial_id || '-' || epoch) FROM epochs")).one()
    finally:
        engine.dispose()
    return {str(k): int(v) for k, v in statuses.items()}, int(rows), int(distinct)


def assert_complete(url: str) -> None:
    statuses, rows, distinct = store_state(url)
    assert statuses == {"finished": TRIALS}
    assert rows == distinct == TRIALS * EPOCHS


def epochs_stored(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM epochs")).scalar_one())
    except sa.exc.SQLAlchemyError:  # not created yet, or the server away
        return 0
    finally:
        engine.dispose()


def start_and_wait_for_an_epoch(args: list[str], env: dict[str, str], url: str,
                                log: Path) -> subprocess.Popen[str]:
    """`explorer ARGS` started; returns once it has stored an epoch (mid-sweep)."""
    driver = subprocess.Popen([*EXPLORER, *args], env=env, text=True, cwd=ROOT,
                              stdout=log.open("w"), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while epochs_stored(url) < 1:
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            pytest.fail(f"the sweep stored no epoch in time:\n{log.read_text()}"
                        f"{driver.communicate()[1]}")
        time.sleep(0.2)
    return driver


def finish(driver: subprocess.Popen[str], timeout: float = 300) -> tuple[int, list[str]]:
    _, stderr = driver.communicate(timeout=timeout)
    return driver.returncode, lines(stderr)


@contextlib.contextmanager
def killed_on_failure(driver: subprocess.Popen[str]) -> Iterator[None]:
    """The driver is killed if injecting the fault fails (ray_env then reaps its Ray)."""
    try:
        yield
    except BaseException:
        driver.kill()
        driver.communicate()
        raise


# --- a PostgreSQL server of the test's own ------------------------------------------------


@dataclass
class OwnPostgres:
    url: str
    folder: Path
    bin: Path

    def pg_ctl(self, *args: str) -> None:
        command = [str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), *args]
        if os.geteuid() == 0:  # the server runs as postgres (initdb refuses root)
            command = ["runuser", "-u", "postgres", "--", *command]
        # Not captured: the server it starts would hold the pipe open for its lifetime.
        subprocess.run(command, check=True, cwd="/", stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)

    def restart(self) -> None:
        self.pg_ctl("-l", str(self.folder / "server.log"), "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        port = sa.make_url(self.url).port
        self.pg_ctl("-l", str(self.folder / "server.log"), "-w", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {self.folder} -c fsync=off",
                    "start")


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A throwaway PostgreSQL started by .ci/postgres.sh's start_test_postgres, for this
    test alone (it restarts and stops it), stopped and removed after."""
    env = {k: v for k, v in os.environ.items() if k != POSTGRES_URL_ENV}
    script = (f"source {ROOT / '.ci' / 'postgres.sh'} && start_test_postgres >&2 && "
              'printf "%s\\n%s\\n%s\\n" "$EXPLORER_TEST_POSTGRES_URL" "$TEST_PG_DIR" '
              '"$TEST_PG_BIN"')
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=180)
    found = done.stdout.splitlines()
    if done.returncode != 0 or len(found) < 3 or not found[0]:
        must_skip(f"no PostgreSQL server could be started here: {done.stderr.strip()}")
    server = OwnPostgres(found[0], Path(found[1]), Path(found[2]))
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            if (server.folder / "data" / "postmaster.pid").exists():
                server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


def test_a_postgres_restart_mid_sweep_is_ridden_out(
        tmp_path: Path, ray_env: dict[str, str], own_postgres: OwnPostgres) -> None:
    url = own_postgres.url
    args = ["run", str(spec_for(tmp_path, "restarted")), "--runs-dir", str(tmp_path / "runs"),
            "--store", url, "--num-cpus", "2", "--store-retry", "30"]
    driver = start_and_wait_for_an_epoch(args, ray_env, url, tmp_path / "run.log")
    faulted = time.monotonic()
    with killed_on_failure(driver):
        own_postgres.restart()
        code, stderr = finish(driver)
    print(f"\npostgres restart: exit {code} {time.monotonic() - faulted:.1f} s after it")
    assert code == 0, (stderr, (tmp_path / "run.log").read_text())
    assert len(stderr) <= 3, stderr
    assert_complete(url)


def test_postgres_stopped_past_the_bound_stops_in_one_line_and_the_rerun_finishes(
        tmp_path: Path, ray_env: dict[str, str], own_postgres: OwnPostgres) -> None:
    url = own_postgres.url
    args = ["run", str(spec_for(tmp_path, "stopped")), "--runs-dir", str(tmp_path / "runs"),
            "--store", url, "--num-cpus", "2", "--store-retry", "3"]
    driver = start_and_wait_for_an_epoch(args, ray_env, url, tmp_path / "run.log")
    faulted = time.monotonic()
    with killed_on_failure(driver):
        own_postgres.stop()
        code, stderr = finish(driver)
    print(f"\npostgres stopped: exit {code} {time.monotonic() - faulted:.1f} s after; "
          f"{stderr}")
    assert code == 2, (stderr, (tmp_path / "run.log").read_text())
    assert len(stderr) == 1, stderr
    shown = sa.make_url(url).render_as_string(hide_password=True)
    assert shown in stderr[0] and "has not answered for 3 s" in stderr[0]
    assert "the same command resumes" in stderr[0]
    assert sa.make_url(url).password not in stderr[0]

    own_postgres.start()
    again = explorer(*args, env=ray_env)
    assert again.code == 0, again
    assert len(again.stderr) <= 3, again.stderr
    assert_complete(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:  # the dead driver's lease was taken over and given back
            assert conn.execute(sa.text("SELECT token FROM leases")).scalars().all() == [None]
    finally:
        engine.dispose()


# --- a server that accepts and never answers ----------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel completes the handshake) and never
    says a word; its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def test_a_server_that_never_answers_is_one_line_for_status_and_run(
        tmp_path: Path, ray_env: dict[str, str], silent_server: int) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://someone:secret@127.0.0.1:{silent_server}/explorer"
    status = explorer("status", "--store", url, env=ray_env, timeout=120)
    print(f"\nsilent server, status: exit {status.code} in {status.seconds:.1f} s; "
          f"{status.stderr}")
    assert status.code == 2 and len(status.stderr) == 1, status
    assert "timeout" in status.stderr[0] and "secret" not in status.stderr[0]

    run = explorer("run", str(spec_for(tmp_path, "silent")), "--runs-dir",
                   str(tmp_path / "runs"), "--store", url, "--store-retry", "1",
                   env=ray_env, timeout=120)
    print(f"silent server, run: exit {run.code} in {run.seconds:.1f} s; {run.stderr}")
    assert run.code == 2 and len(run.stderr) == 1, run
    assert "has not answered" in run.stderr[0] and "secret" not in run.stderr[0]


# --- read-only media ---------------------------------------------------------------------


def mounted(*command: str) -> None:
    done = subprocess.run(["mount", *command], capture_output=True, text=True)
    if done.returncode != 0:
        must_skip(f"cannot mount here (needs root): {done.stderr.strip()}")


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A runs directory with one finished experiment, 'done', on SQLite; the driver closed
    cleanly, so no -wal or -shm file is left beside the store."""
    folder = tmp_path_factory.mktemp("finished")
    ray_tmp = tempfile.mkdtemp(prefix="rf", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmp
    try:
        ran = explorer("run", str(spec_for(folder, "done")), "--runs-dir", str(folder / "runs"),
                       "--num-cpus", "2", env=env)
        assert ran.code == 0, ran
    finally:
        for pid in processes_with_env("RAY_TMPDIR", ray_tmp):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    yield folder / "runs"


def read_only_commands(runs: Path, out: Path) -> dict[str, list[str]]:
    """Every read-only command on the runs directory, each expected to succeed."""
    return {
        "status": ["status", "--runs-dir", str(runs)],
        "export": ["export", "done", "--runs-dir", str(runs), "-o", str(out / "done.csv")],
        "report": ["report", "done", "--runs-dir", str(runs), "-o", str(out / "done.html")],
        "compare": ["compare", "done", "--runs-dir", str(runs)],
    }


def test_every_read_only_command_reads_a_store_on_a_read_only_mount(
        tmp_path: Path, finished_runs: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(finished_runs, source, ignore=shutil.ignore_patterns("ray", "checkpoints"))
    assert not list(source.glob("explorer.db-*")), "the store was not closed cleanly"
    view = tmp_path / "view"
    view.mkdir()
    mounted("--bind", str(source), str(view))
    try:
        mounted("-o", "remount,ro,bind", str(view))
        with pytest.raises(OSError):
            (view / "probe").touch()  # really read-only, also to root
        env = dict(os.environ)
        for name, args in read_only_commands(view, tmp_path).items():
            ran = explorer(*args, env=env, timeout=120)
            assert ran.code == 0, (name, ran)
            assert ran.stderr == [], (name, ran.stderr)
        assert "done" in explorer("status", "--runs-dir", str(view), env=env).stdout
        assert (tmp_path / "done.csv").read_text().count("\n") == TRIALS + 1
        from explorer.store import Reader  # the dashboard's opening: Reader.open

        with Reader.open(view) as reader:
            assert len(reader.trials_frame(["done"])) == TRIALS

        refused = explorer("run", str(spec_for(tmp_path, "done")), "--runs-dir", str(view),
                           "--num-cpus", "2", env=env, timeout=120)
        assert refused.code == 2 and len(refused.stderr) == 1, refused
        assert "read-only" in refused.stderr[0] and str(view) in refused.stderr[0]
    finally:
        unmount(view)


def test_a_read_only_store_file_is_read_and_run_refuses_it(
        tmp_path: Path, finished_runs: Path) -> None:
    if shutil.which("chattr") is None:
        must_skip("chattr is not installed: cannot make an immutable file")
    runs = tmp_path / "runs"
    shutil.copytree(finished_runs, runs, ignore=shutil.ignore_patterns("ray", "checkpoints"))
    store = runs / "explorer.db"
    made = subprocess.run(["chattr", "+i", str(store)], capture_output=True, text=True)
    if made.returncode != 0:
        must_skip(f"cannot make the store immutable here: {made.stderr.strip()}")
    try:
        env = dict(os.environ)
        for name, args in read_only_commands(runs, tmp_path).items():
            ran = explorer(*args, env=env, timeout=120)
            assert ran.code == 0 and ran.stderr == [], (name, ran)
        refused = explorer("run", str(spec_for(tmp_path, "done")), "--runs-dir", str(runs),
                           "--num-cpus", "2", env=env, timeout=120)
        print(f"\nread-only store file, run: exit {refused.code} in {refused.seconds:.1f} s; "
              f"{refused.stderr}")
        assert refused.code == 2 and len(refused.stderr) == 1, refused
        assert "read-only" in refused.stderr[0] and str(store) in refused.stderr[0]
    finally:
        subprocess.run(["chattr", "-i", str(store)], capture_output=True)


# --- a full disk under the store ----------------------------------------------------------


def test_a_full_disk_under_the_store_is_one_line_and_the_rerun_finishes(
        tmp_path: Path, ray_env: dict[str, str]) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk))
    try:
        url = f"sqlite:///{disk / 'explorer.db'}"
        args = ["run", str(spec_for(tmp_path, "full")), "--runs-dir", str(tmp_path / "runs"),
                "--store", url, "--num-cpus", "2"]
        driver = start_and_wait_for_an_epoch(args, ray_env, url, tmp_path / "run.log")
        filler = disk / "filler"
        with killed_on_failure(driver):
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
                while True:  # until ENOSPC
                    out.write(b"\0" * 4096)
            faulted = time.monotonic()
            code, stderr = finish(driver)
        print(f"\nfull disk: exit {code} {time.monotonic() - faulted:.1f} s after; {stderr}")
        assert code == 2, (stderr, (tmp_path / "run.log").read_text())
        assert len(stderr) == 1, stderr
        assert "full" in stderr[0] and str(disk / "explorer.db") in stderr[0]
        assert "could not write" in stderr[0]

        filler.unlink()
        again = explorer(*args, env=ray_env)
        assert again.code == 0 and len(again.stderr) <= 3, again
        assert_complete(url)
    finally:
        unmount(disk)


# --- what the store cannot take, refused before anything is written ----------------------


@pytest.mark.parametrize("seed", ["3000000000", str(2**63), str(2**64)])
def test_a_seed_beyond_the_stores_range_is_refused_at_its_line_and_nothing_is_stored(
        tmp_path: Path, seed: str) -> None:
    spec = spec_for(tmp_path, "seeds")
    text = spec.read_text().replace("  - 0\n", f"  - {seed}\n", 1)
    assert seed in text
    spec.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if seed in row)
    ran = explorer("run", str(spec), "--runs-dir", str(tmp_path / "runs"), env=dict(os.environ),
                   timeout=120)
    assert ran.code == 2 and 1 <= len(ran.stderr) <= 3, ran
    assert ran.stderr[0].startswith(f"{spec}:{line}: train.seeds")
    assert "0 to 2147483647" in ran.stderr[0]  # PostgreSQL's integer, 32-bit signed
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("url", "says"), [
    ("mysql://someone:secret@127.0.0.1/explorer", "needs a Python driver"),
    ("nosuchdb://someone:secret@127.0.0.1/explorer", "unknown database 'nosuchdb'"),
    ("postgresql+psycopg://someone:secret@127.0.0.1:54x2/explorer", "malformed"),
    ("postgresql+psycopg://someone:secret@127.0.0.1:99999/explorer", "out of range"),
])
@pytest.mark.parametrize("command", ["run", "status"])
def test_a_store_url_is_checked_before_use(tmp_path: Path, url: str, says: str,
                                           command: str) -> None:
    args: list[Any] = (["run", str(spec_for(tmp_path, "urls")), "--runs-dir",
                        str(tmp_path / "runs")] if command == "run" else ["status"])
    ran = explorer(*args, "--store", url, env=dict(os.environ), timeout=120)
    assert ran.code == 2 and len(ran.stderr) == 1, ran
    assert says in ran.stderr[0] and "secret" not in ran.stderr[0]
    assert not (tmp_path / "runs").exists()
