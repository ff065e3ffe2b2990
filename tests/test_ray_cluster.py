"""`explorer run` on a Ray cluster started the way users start one.

A head (`ray start --head`) and a second node (`ray start --address`) run as separate
processes on this machine, with token authentication on: Ray turns it on for a head once
~/.ray/auth_token exists (and any local `ray.init()` writes that file), and a joining
node needs RAY_AUTH_MODE=token. The explorer command runs as a subprocess through its
real entry point, with RAY_AUTH_MODE unset, as a user's shell has it.

Everything is isolated: a temporary HOME holds the token (the user's ~/.ray is never
read), a short temporary RAY_TMPDIR holds Ray's sessions, every port is chosen free, and
afterwards the cluster's processes are ended by pid (found by that RAY_TMPDIR), never by
`ray stop`, which would stop every Ray on the machine, the test session's own included.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import processes_with_env, tiny_spec, wait_for_no_processes_with_env

from explorer.store import Reader

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Ray's variables a user's shell may carry; the cluster and the command get only what the
# test gives them.
RAY_VARIABLES = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

# Lists the alive nodes once both have registered (a joining node can take a moment).
NODES_SCRIPT = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False)
deadline = time.monotonic() + 60
while len(alive := [n["NodeID"] for n in ray.nodes() if n["Alive"]]) < 2:
    assert time.monotonic() < deadline, f"only {len(alive)} node(s) joined"
    time.sleep(0.5)
print(json.dumps(alive))
"""


@dataclass(frozen=True)
class TokenCluster:
    address: str  # the head's HOST:PORT
    env: dict[str, str]  # the nodes' environment, less RAY_AUTH_MODE: HOME has the token
    nodes: tuple[str, ...]  # node ids


def free_ports(n: int) -> list[int]:
    """n distinct ports nobody listens on now (held open together, so they differ)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def node_ports() -> list[str]:
    """A node's own ports, chosen free: the defaults (52365, 8080, ...) are one per machine."""
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
    return [f"--{name}={port}" for name, port in zip(names, free_ports(len(names)), strict=True)]


def ray_start(env: dict[str, str], *args: str) -> None:
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--node-ip-address=127.0.0.1",
               "--num-cpus=1", "--disable-usage-stats", *node_ports(), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, f"ray start {args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"


def explorer_run(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "explorer.cli", "run", *args], env=env,
                          capture_output=True, text=True, timeout=400, check=False)
    return done, time.monotonic() - started


def end_processes(folder: str) -> list[int]:
    """End every process of the cluster by pid (TERM, then KILL); returns any left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_with_env("RAY_TMPDIR", folder):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        if not wait_for_no_processes_with_env("RAY_TMPDIR", folder, seconds=10):
            return []
    return processes_with_env("RAY_TMPDIR", folder)


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenCluster]:
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc to find the cluster's processes afterwards")
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    folder = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k not in RAY_VARIABLES}
    env.update(HOME=str(home), RAY_TMPDIR=folder)
    port = free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    try:
        ray_start(env, "--head", f"--port={port}", "--include-dashboard=false")
        # `ray start --address` turns token mode on only when told.
        ray_start({**env, "RAY_AUTH_MODE": "token"}, f"--address={address}")
        listed = subprocess.run([sys.executable, "-c", NODES_SCRIPT, address],
                                env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True,
                                text=True, timeout=120, check=False)
        assert listed.returncode == 0, listed.stderr[-3000:]
        nodes = tuple(json.loads(listed.stdout.strip().splitlines()[-1]))
        yield TokenCluster(address, env, nodes)
    finally:
        left = end_processes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"processes of the test's Ray cluster left running: {left}"


def trials(runs: Path, experiment: str) -> Any:
    with Reader.open(runs) as store:
        return store.trials_frame([experiment]).drop_duplicates("trial_key")


def test_a_run_joins_a_token_cluster_with_the_token_ray_finds_and_trains_on_both_nodes(
        token_cluster: TokenCluster, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, name="token-cluster")
    runs = tmp_path / "runs"

    done, seconds = explorer_run(token_cluster.env, str(spec), "--runs-dir", str(runs),
                                 "--address", token_cluster.address)

    print(f"explorer run --address {token_cluster.address}: exit {done.returncode} after "
          f"{seconds:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "token-cluster v1: 4 finished, 0 failed this run" in done.stdout
    assert "InvalidAuthToken" not in done.stderr
    stored = trials(runs, "token-cluster")
    assert len(stored) == 4 and set(stored["status"]) == {"finished"}
    used = {device.split("@")[1] for device in stored["device"]}
    print(f"nodes {[node[:8] for node in token_cluster.nodes]}: trials on "
          f"{sorted(stored['device'])}")
    assert used == {node[:8] for node in token_cluster.nodes}
    log = (runs / "token-cluster" / "ray.log").read_text()
    assert (f"Ray at {token_cluster.address} requires token authentication: joined with the "
            "token Ray found on this machine") in log


def test_without_a_token_the_run_fails_in_one_line_naming_it(
        token_cluster: TokenCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"  # a machine the cluster's token was never copied to
    home.mkdir()
    env = {**token_cluster.env, "HOME": str(home), "RAY_ADDRESS": token_cluster.address}
    spec = tiny_spec(tmp_path, name="no-token")
    runs = tmp_path / "runs"

    done, seconds = explorer_run(env, str(spec), "--runs-dir", str(runs))

    print(f"RAY_ADDRESS={token_cluster.address}, no token: exit {done.returncode} after "
          f"{seconds:.1f} s")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"joining the Ray cluster at {token_cluster.address} (RAY_ADDRESS)" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: Ray at {token_cluster.address} requires token authentication and this machine "
        "has no token: put the cluster's token (`ray get-auth-token` on the head prints it) in "
        "~/.ray/auth_token, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"]
    # One refused call, not ray.init's 20 s of retries (a refusal a second), and in the log.
    refusals = (runs / "no-token" / "ray.log").read_text().count("InvalidAuthToken")
    assert refusals == 1, f"{refusals} refused calls"
    assert seconds < 90  # imports and the digits on a busy machine; no wait on Ray
    assert not (home / ".ray").exists(), "no token may be made up on the joining machine"
