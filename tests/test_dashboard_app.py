"""The dashboard app (Streamlit AppTest, no browser) on fixture databases, and
`explorer dashboard`: its checks, the streamlit command it runs, and a real
server that listens on loopback only."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixtures_store import ENVIRONMENT, fixture_spec, make_fixture_store
from streamlit.testing.v1 import AppTest
from test_compare import write_store
from typer.testing import CliRunner

from explorer import analysis, serve
from explorer.cli import app as cli_app
from explorer.compare import DEFAULT_NORMALIZE, CompareError, compare_spaces
from explorer.plan import plan_trials
from explorer.space import enumerate_spec
from explorer.store import Reader, Writer

VIEWS = ("Error vs cost", "Tradeoff", "Training curves", "EDFs", "Measured cost", "Trials")
EXPECTED_CHARTS = {
    "Error vs cost": {"error_vs_flops", "error_vs_params"},
    "Tradeoff": {"cardinality_tradeoff", "capacity_comparison"},
    "Training curves": {"training_curves"},
    "EDFs": {"error_edf"},
    "Measured cost": {"cost_latency_ms"},
    "Trials": set(),
}


def _script(url: str | None) -> None:
    """What `streamlit run dashboard/app.py -- --store URL` runs: the script's entry, with
    the arguments streamlit would put in sys.argv."""
    from dashboard.app import render, store_url

    render(store_url(["--store", url] if url is not None else []))


def app(url: str | None) -> AppTest:
    return AppTest.from_function(_script, args=(url,), default_timeout=60)


def ran(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def decode(value: Any) -> Any:
    """plotly's JSON writes numeric arrays as {dtype, bdata}: back to a numpy array."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" not in value:
            return array
        shape = value["shape"]  # "rows, columns" in plotly's JSON
        return array.reshape([int(n) for n in shape.split(",")] if isinstance(shape, str)
                             else shape)
    return value


def charts(at: AppTest) -> dict[str, dict[str, Any]]:
    """The plotly figures on the page, by the name in their layout.meta."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        out[spec["layout"]["meta"]["chart"]] = spec
    return out


def points(spec: dict[str, Any], role: str = "candidates") -> int:
    return sum(len(decode(t["x"])) for t in spec["data"] if t.get("meta", {}).get("role") == role)


def table(at: AppTest, column: str) -> Any:
    """The first dataframe on the page that has `column` (dataframes have no keys in AppTest)."""
    for element in at.dataframe:
        if column in element.value.columns:
            return element.value
    raise AssertionError(f"no table with a column {column!r}")


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(getattr(e, "value", "")) for e in at.get(kind)]


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two experiments, two seeds, one failed and one running trial in each."""
    path = tmp_path_factory.mktemp("dash") / "explorer.db"
    make_fixture_store(path, seeds=2, failed=1, running=1)
    return f"sqlite:///{path}"


def add_experiment(url: str, name: str, *, trials: bool) -> None:
    """An experiment whose trials are all pending (or which has none at all)."""
    spec, text = fixture_spec(name)
    with Writer.open(url) as store:
        record = store.create_or_get_experiment(name, text, spec.hash,
                                                spec.model_dump(mode="json"),
                                                environment=ENVIRONMENT)
        if trials:
            chosen = enumerate_spec(spec).candidates[:3]
            store.add_candidates(record.id, chosen)
            store.add_trials(record.id, [(p.trial_key, p.candidate_key, p.seed)
                                         for p in plan_trials(spec, chosen)])


@pytest.fixture(scope="module")
def pending_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('pending') / 'explorer.db'}"
    add_experiment(url, "no-trials-yet", trials=False)
    add_experiment(url, "all-pending", trials=True)
    return url


def expected_candidates(url: str, experiment: str) -> int:
    with Reader.open(url) as store:
        return len(analysis.by_candidate(store.trials_frame([experiment])))


# --- views ----------------------------------------------------------------------------------


def test_default_view_plots_one_point_per_candidate(fixture_db: str) -> None:
    at = ran(app(fixture_db))
    # The newest experiment is shown by default.
    assert at.sidebar.multiselect(key="experiments").value == ["cifar10-width"]
    shown = charts(at)
    assert set(shown) == {"error_vs_flops", "error_vs_params"}
    expected = expected_candidates(fixture_db, "cifar10-width")
    assert expected > 0
    for spec in shown.values():
        assert points(spec) == expected
        assert points(spec, "pareto") >= 1
        assert spec["layout"]["xaxis"]["type"] == "log"
    assert any("candidate means" in c for c in texts(at, "caption"))
    assert any("data version" in c for c in texts(at, "caption"))


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_renders(fixture_db: str, view: str) -> None:
    at = app(fixture_db)
    at.session_state["view"] = view
    ran(at)
    assert set(charts(at)) == EXPECTED_CHARTS[view]
    # Every chart, WebGL or not yet, draws one canvas pixel per CSS pixel (its WebGL
    # traces at four times the pixels draw twice as slowly without a GPU).
    assert [json.loads(e.proto.config).get("plotGlPixelRatio")
            for e in at.get("plotly_chart")] == [1] * len(charts(at))
    if view == "Trials":
        shown = table(at, "test error %")
        with Reader.open(fixture_db) as store:
            trials = store.trials_frame(["cifar10-width"])
        assert len(shown) == trials["trial_id"].nunique()
        assert {"C", "d", "depths", "status", "key"} <= set(shown.columns)
        assert at.get("download_button")
    if view == "Tradeoff":
        settings = table(at, "setting")["setting"].tolist()
        assert "1×64d" in settings and "4×24d" in settings
    if view == "Training curves":
        curves = charts(at)["training_curves"]["data"]
        assert curves and {t["meta"]["split"] for t in curves} == {"train", "test"}


def test_edf_normalised_and_cost_metric_switch(fixture_db: str) -> None:
    at = app(fixture_db)
    at.session_state["view"] = "EDFs"
    ran(at)
    at.radio(key="edf_normalize").set_value("params")
    ran(at)
    assert "params" in charts(at)["error_edf"]["layout"]["title"]["text"]
    at.session_state["view"] = "Measured cost"
    ran(at)
    at.radio(key="cost_metric").set_value("train_images_per_sec")
    ran(at)
    assert set(charts(at)) == {"cost_train_images_per_sec"}


def test_edf_normalisation_defaults_to_compares(fixture_db: str) -> None:
    at = app(fixture_db)
    at.session_state["view"] = "EDFs"
    ran(at)
    assert DEFAULT_NORMALIZE == "flops"  # docs/CONVENTIONS.md: compare's default, NDS's
    assert at.radio(key="edf_normalize").value == DEFAULT_NORMALIZE
    assert "flops" in charts(at)["error_edf"]["layout"]["title"]["text"]
    assert at.query_params["normalize"] == "flops"


def test_edf_default_falls_back_to_plain_edfs_with_a_notice(tmp_path: Path) -> None:
    """As `explorer compare` does: "preserved" sits in a flops bin that "resnet" and
    "resnext" do not both reach (tests/test_compare.py's store)."""
    url = f"sqlite:///{tmp_path / 'explorer.db'}"
    write_store(url, "trend", seeds=2, slope=-0.5, noise=0.1)
    with Reader.open(url) as store:  # the fallback is compare's, for the same trials
        trials = store.trials_frame(["trend"])
    with pytest.raises(CompareError):
        compare_spaces(trials)
    at = app(url)
    at.session_state["view"] = "EDFs"
    ran(at)
    assert at.radio(key="edf_normalize").value == DEFAULT_NORMALIZE
    assert any("share no flops bin" in i and "plain EDFs" in i for i in texts(at, "info"))
    assert not any("share no" in w for w in texts(at, "warning"))
    assert "flops" not in charts(at)["error_edf"]["layout"]["title"]["text"]


def test_filter_changes_the_points(fixture_db: str) -> None:
    at = ran(app(fixture_db))
    at.sidebar.multiselect(key="f_cardinality").set_value([1])
    ran(at)
    with Reader.open(fixture_db) as store:
        trials = store.trials_frame(["cifar10-width"])
    expected = len(analysis.by_candidate(trials[trials["cardinality"] == 1]))
    assert 0 < expected < expected_candidates(fixture_db, "cifar10-width")
    assert points(charts(at)["error_vs_flops"]) == expected
    at.sidebar.multiselect(key="f_seeds").set_value([1])
    ran(at)
    spec = charts(at)["error_vs_flops"]
    errors = [e for t in spec["data"] if t["meta"]["role"] == "candidates"
              for e in decode(t["error_y"]["array"])]
    assert errors and all(e == 0 for e in errors)  # one seed left: no spread


def test_filters_matching_nothing(fixture_db: str) -> None:
    at = ran(app(fixture_db))
    at.sidebar.multiselect(key="f_status").set_value(["failed"])
    at.sidebar.multiselect(key="f_cardinality").set_value([2])
    ran(at)
    assert any("No trials match" in m for m in texts(at, "info"))
    assert not charts(at)


def test_several_experiments_keep_their_spaces_apart(fixture_db: str) -> None:
    at = ran(app(fixture_db))
    at.sidebar.multiselect(key="experiments").set_value(["cifar10-cardinality", "cifar10-width"])
    ran(at)
    names = {t["name"] for t in charts(at)["error_vs_flops"]["data"]
             if t["meta"]["role"] == "candidates"}
    assert names == {"cifar10-cardinality / deeper", "cifar10-cardinality / preserved",
                     "cifar10-width / preserved", "cifar10-width / wider"}
    assert points(charts(at)["error_vs_flops"]) == (
        expected_candidates(fixture_db, "cifar10-cardinality")
        + expected_candidates(fixture_db, "cifar10-width"))


def test_failed_trials_are_listed_with_their_error(fixture_db: str) -> None:
    at = ran(app(fixture_db))
    assert any("1 trial failed" in w for w in texts(at, "warning"))
    failed = table(at, "error message")
    assert len(failed) == 1
    assert "CUDA out of memory" in failed["error message"].iloc[0]


def test_unpicking_every_experiment(fixture_db: str) -> None:
    at = ran(app(fixture_db))
    at.sidebar.multiselect(key="experiments").set_value([])
    ran(at)
    assert any("Pick one or more experiments" in m for m in texts(at, "info"))


# --- the view in the URL, numbers for people ------------------------------------------------


def test_a_link_sets_the_widgets_and_the_view(fixture_db: str) -> None:
    at = app(fixture_db)
    at.query_params["experiment"] = "cifar10-cardinality"
    at.query_params["C"] = ["1", "64"]  # 64 is in no candidate of the fixture
    at.query_params["seed"] = "1"
    at.query_params["view"] = "Error vs cost"
    ran(at)
    assert at.sidebar.multiselect(key="experiments").value == ["cifar10-cardinality"]
    assert at.sidebar.multiselect(key="f_cardinality").value == [1]
    assert at.sidebar.multiselect(key="f_seeds").value == [1]
    assert any("C=64" in w and "left out" in w for w in texts(at, "warning"))
    with Reader.open(fixture_db) as store:
        trials = store.trials_frame(["cifar10-cardinality"])
    chosen = trials[(trials["cardinality"] == 1) & (trials["seed"] == 1)]
    expected = len(analysis.by_candidate(chosen))
    assert 0 < expected < expected_candidates(fixture_db, "cifar10-cardinality")
    assert points(charts(at)["error_vs_flops"]) == expected
    # The page writes back what it shows, less what it left out.
    assert at.query_params == {"view": "Error vs cost", "experiment": "cifar10-cardinality",
                               "C": "1", "seed": "1"}


def test_a_link_opens_a_view_with_its_settings(fixture_db: str) -> None:
    at = app(fixture_db)
    at.query_params["view"] = "EDFs"
    at.query_params["normalize"] = "flops"
    at.query_params["status"] = "finished"
    ran(at)
    assert at.session_state["view"] == "EDFs"
    assert at.radio(key="edf_normalize").value == "flops"
    assert at.sidebar.multiselect(key="f_status").value == ["finished"]
    assert set(charts(at)) == {"error_edf"}
    assert "flops" in charts(at)["error_edf"]["layout"]["title"]["text"]


def test_widget_changes_are_written_to_the_url(fixture_db: str) -> None:
    at = ran(app(fixture_db))
    assert at.query_params == {"view": "Error vs cost", "experiment": "cifar10-width"}
    at.sidebar.multiselect(key="f_status").set_value(["finished", "running"])
    at.sidebar.multiselect(key="f_depths").set_value(
        [at.sidebar.multiselect(key="f_depths").options[0]])
    ran(at)
    depths = at.sidebar.multiselect(key="f_depths").value[0]
    assert at.query_params["status"] == ["finished", "running"]
    assert at.query_params["depths"] == str(depths)
    at.session_state["view"] = "Trials"
    ran(at)
    assert at.query_params["view"] == "Trials"
    # The same link in a new session shows the same selection.
    again = app(fixture_db)
    again.query_params.update(at.query_params)
    ran(again)
    for key in ("experiments", "f_status", "f_depths"):
        assert (again.sidebar.multiselect(key=key).value
                == at.sidebar.multiselect(key=key).value)
    assert again.session_state["view"] == "Trials"
    assert len(table(again, "test error %")) == len(table(at, "test error %"))


def column_formats(at: AppTest, column: str) -> dict[str, Any]:
    """The number formats streamlit sends for the first table that has `column`."""
    for element in at.dataframe:
        if column in element.value.columns:
            config = json.loads(element.proto.columns)
            return {name: c.get("type_config", {}).get("format") for name, c in config.items()}
    raise AssertionError(f"no table with a column {column!r}")


def test_tables_round_for_people_and_keep_the_data_exact(fixture_db: str) -> None:
    at = app(fixture_db)
    at.session_state["view"] = "Trials"
    ran(at)
    formats = column_formats(at, "test error %")
    assert formats["test error %"] == formats["top-5 error %"] == "%.2f"
    assert formats["latency ms"] == "%.2f"
    assert formats["params"] == formats["flops"] == formats["images/s"] == "localized"
    assert "error message" not in formats and "trial" not in formats
    # The data behind the display keeps every digit: it is the store's.
    shown = table(at, "test error %")
    with Reader.open(fixture_db) as store:
        trials = store.trials_frame(["cifar10-width"]).drop_duplicates("trial_id")
    exact = dict(zip(trials["trial_id"], trials["test_error"], strict=True))
    assert any(round(v, 2) != v for v in exact.values() if v == v)  # the fixture has digits
    for trial, error in zip(shown["trial"], shown["test error %"], strict=True):
        assert (error != error and exact[trial] != exact[trial]) or error == exact[trial]
    at.session_state["view"] = "Tradeoff"
    ran(at)
    formats = column_formats(at, "setting")
    assert formats["test_error_mean"] == formats["test_error_std"] == "%.2f"
    assert formats["params"] == formats["flops"] == "localized"


def test_the_csv_download_has_exact_values(fixture_db: str) -> None:
    from dashboard.app import trial_csv

    with Reader.open(fixture_db) as store:
        version = store.data_version()
        trials = store.trials_frame(["cifar10-width"]).drop_duplicates("trial_id")
    chosen = (("space", ()), ("status", ()), ("seed", ()))
    rows = pd.read_csv(io.StringIO(trial_csv(fixture_db, version, ("cifar10-width",), chosen)))
    exact = dict(zip(trials["trial_id"], trials["test_error"], strict=True))
    written = dict(zip(rows["trial"], rows["test error %"], strict=True))
    assert written.keys() == exact.keys()
    for trial, error in exact.items():
        assert (error != error and written[trial] != written[trial]) or written[trial] == error
    assert rows["params"].tolist() == trials["params"].tolist()


# --- empty and broken stores ----------------------------------------------------------------


def test_empty_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'explorer.db'}"
    Writer.open(url).close()
    at = ran(app(url))
    assert any("No experiments" in m and "explorer run SPEC" in m for m in texts(at, "info"))
    assert not charts(at)


def test_experiment_without_finished_trials(pending_db: str) -> None:
    at = ran(app(pending_db))
    assert at.sidebar.multiselect(key="experiments").value == ["all-pending"]
    infos = texts(at, "info")
    assert any("'all-pending'" in m and "no finished trials yet" in m and "pending" in m
               for m in infos)
    for view in VIEWS:
        at.session_state["view"] = view
        ran(at)
        assert not charts(at) or view == "Trials"
    at.sidebar.multiselect(key="experiments").set_value(["no-trials-yet"])
    ran(at)
    assert any("'no-trials-yet'" in m and "has no trials yet" in m for m in texts(at, "info"))


def test_missing_store_is_one_clear_error(tmp_path: Path) -> None:
    at = ran(app(f"sqlite:///{tmp_path / 'nothing.db'}"))
    assert any("no results database" in e for e in texts(at, "error"))


def test_no_store_argument(tmp_path: Path) -> None:
    at = ran(app(None))
    assert any("explorer dashboard" in e for e in texts(at, "error"))


def test_new_results_show_on_the_next_run(tmp_path: Path) -> None:
    """Reads are cached on the store's data version: a write is seen at the next rerun
    (the live fragment triggers one when the version changes)."""
    path = tmp_path / "explorer.db"
    make_fixture_store(path, experiments=("cifar10-cardinality",), failed=0, running=1)
    url = f"sqlite:///{path}"
    at = ran(app(url))
    before = points(charts(at)["error_vs_flops"])
    with Writer.open(url) as store:
        trials = store.trials_frame()
        live = trials[trials["status"] == "running"].iloc[0]
        experiment_id = int(live["experiment_id"])
        store.finish_trial(experiment_id, str(live["trial_key"]), "finished",
                           {"test_error": 4.0})
    ran(at)
    assert points(charts(at)["error_vs_flops"]) == before + 1


# --- explorer dashboard ---------------------------------------------------------------------


runner = CliRunner()



def test_streamlit_command_settings() -> None:
    command = serve.streamlit_command("sqlite:////x/explorer.db", "127.0.0.1", 8600)
    assert command[:4] == [sys.executable, "-m", "dashboard.launch", "run"]
    assert Path(command[4]).name == "app.py" and Path(command[4]).is_file()
    for setting in ("--server.address=127.0.0.1", "--server.port=8600",
                    "--server.headless=true", "--browser.gatherUsageStats=false",
                    "--server.enableXsrfProtection=true", "--server.fileWatcherType=none"):
        assert setting in command
    # The store URL is a script argument after "--", nothing else.
    assert command[-3:] == ["--", "--store", "sqlite:////x/explorer.db"]


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.org", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert serve.is_loopback(host) is loopback


def test_dashboard_missing_store(tmp_path: Path) -> None:
    result = runner.invoke(cli_app, ["dashboard", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "no results database" in result.output
    assert "explorer run SPEC" in result.output


def test_dashboard_busy_port(fixture_db: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = runner.invoke(cli_app, ["dashboard", "--store", fixture_db, "--port",
                                         str(port)])
    assert result.exit_code == 2
    assert f"port {port}" in result.output and "already in use" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_dashboard_warns_beyond_loopback(fixture_db: str, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    started: list[tuple[str, str, int]] = []

    def fake_serve(url: str, host: str, port: int) -> int:
        started.append((url, host, port))
        return 0

    monkeypatch.setattr(serve, "serve", fake_serve)
    port = serve.free_local_port()
    result = runner.invoke(cli_app, ["dashboard", "--store", fixture_db, "--host", "0.0.0.0",
                                     "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "no login" in result.output
    assert started == [(fixture_db, "0.0.0.0", port)]
    quiet = runner.invoke(cli_app, ["dashboard", "--store", fixture_db, "--port", str(port)])
    assert "warning" not in quiet.output
    assert started[-1] == (fixture_db, "127.0.0.1", port)


# --- a real server: loopback only -----------------------------------------------------------


@pytest.fixture
def dashboard_server(fixture_db: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`explorer dashboard` on a free port; stopped (by its pid) afterwards."""
    port = serve.free_local_port()
    explorer = shutil.which("explorer")
    command = ([explorer] if explorer else [sys.executable, "-m", "explorer.cli"])
    process = subprocess.Popen([*command, "dashboard", "--store", fixture_db, "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        serve.wait_until_serving(process, port)
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets these processes listen on, from /proc."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            # /proc writes each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET if width == 4 else socket.AF_INET6
            found.append((socket.inet_ntop(family, words), int(port, 16)))
    return found


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else str(address)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_dashboard_listens_on_loopback_only(
        dashboard_server: tuple[subprocess.Popen[str], int]) -> None:
    process, port = dashboard_server
    sockets = listening(descendants(process.pid))
    assert (("127.0.0.1", port) in sockets), sockets
    assert all(address == "127.0.0.1" for address, _ in sockets), sockets
    outward = outward_address()
    if outward is not None:
        with socket.socket() as probe, pytest.raises(OSError):
            probe.settimeout(3)
            probe.connect((outward, port))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
        assert reply.status == 200


def test_tradeoff_verdict_and_edf_ks_table(fixture_db: str) -> None:
    from explorer.compare import cardinality_verdicts, compare_spaces

    with Reader.open(fixture_db) as store:
        trials = store.trials_frame(["cifar10-width"])
    at = app(fixture_db)
    at.session_state["view"] = "Tradeoff"
    ran(at)
    sentences = [v.sentence for v in cardinality_verdicts(trials)]
    assert sentences and [f"Verdict on doubling C: {s}" for s in sentences] == [
        t for t in texts(at, "info") if t.startswith("Verdict")]
    at.session_state["view"] = "EDFs"
    ran(at)
    at.radio(key="edf_normalize").set_value("flops")
    ran(at)
    shown = table(at, "KS statistic")
    expected = compare_spaces(trials, normalize="flops").pairs
    assert shown["KS statistic"].tolist() == pytest.approx([p.ks_statistic for p in expected])
    assert {t["meta"]["role"] for t in charts(at)["error_edf"]["data"]} == {"band", "edf"}


# --- at scale: incremental reads, bins, exact points on a filter ---------------------------


def _same(frame: pd.DataFrame) -> pd.DataFrame:
    """A dashboard frame without its read bookkeeping, for comparison."""
    out = frame.reset_index(drop=True).copy()
    out.attrs = {}
    return out


def ran_before(url: str, hours: float) -> None:
    """Move the trials' starts and finishes `hours` back, one minute apart (as if the
    sweep ran then): the incremental read looks back SINCE_MARGIN from the newest."""
    from sqlalchemy import select, update

    from explorer.store.schema import trial_table

    at = datetime.now(UTC) - timedelta(hours=hours)
    t = trial_table.c
    with Writer.open(url) as store, store.engine.begin() as conn:
        for n, trial_id in enumerate(conn.scalars(select(t.id).order_by(t.id))):
            when = at + timedelta(minutes=n)
            conn.execute(update(trial_table).where(t.id == trial_id, t.started_at.is_not(None))
                         .values(started_at=when))
            conn.execute(update(trial_table).where(t.id == trial_id, t.finished_at.is_not(None))
                         .values(finished_at=when))


def test_incremental_read_equals_a_full_read_after_writes(tmp_path: Path) -> None:
    """Every kind of write the sweep makes, then dashboard_trials_since on the old frame:
    the same table as a new full read, having read again only the trials that changed."""
    path = tmp_path / "explorer.db"
    make_fixture_store(path, seeds=2, failed=1, running=2)
    url = f"sqlite:///{path}"
    names = ["cifar10-cardinality", "cifar10-width"]
    ran_before(url, hours=2)
    with Reader.open(url) as reader:
        known = reader.dashboard_trials(names)
    full_columns = Reader.open(url).trials_frame(names)
    assert len(known) == len(full_columns)  # the same rows as trials_frame, fewer columns
    assert set(known.columns) < set(full_columns.columns)

    with Writer.open(url) as store:
        trials = store.trials_frame(names)
        running = trials[trials["status"] == "running"].drop_duplicates("trial_id")
        first, second = running.iloc[0], running.iloc[1]
        exp = int(first["experiment_id"])
        # a running trial reports an epoch, another one finishes, a failed one is retried
        store.record_epoch(exp, str(first["trial_key"]), {"epoch": 4, "test_error": 30.0})
        store.finish_trial(int(second["experiment_id"]), str(second["trial_key"]), "finished",
                           {"test_error": 4.25})
        failed = trials[trials["status"] == "failed"].iloc[0]
        store.mark_running(int(failed["experiment_id"]), str(failed["trial_key"]), "cuda:1")
        # a new trial (a new seed of a known candidate) is added and finishes
        key = str(trials["key"].iloc[0])
        store.add_trials(exp, [(f"{key}-seed-7", key, 7)])
        store.mark_running(exp, f"{key}-seed-7", "cuda:0")
        store.finish_trial(exp, f"{key}-seed-7", "finished", {"test_error": 5.5})

    with Reader.open(url) as reader:
        updated = reader.dashboard_trials_since(known, names)
        fresh = reader.dashboard_trials(names)
    pd.testing.assert_frame_equal(_same(updated), _same(fresh))
    reread = set(updated.attrs["changed_trials"])
    touched = {int(first["trial_id"]), int(second["trial_id"]), int(failed["trial_id"])}
    assert touched <= reread
    assert len(reread) < fresh["trial_id"].nunique()  # not everything again
    assert 4.25 in set(updated["test_error"]) and 5.5 in set(updated["test_error"])

    # Nothing written: nothing read again, and the same table.
    with Reader.open(url) as reader:
        again = reader.dashboard_trials_since(updated, names)
    pd.testing.assert_frame_equal(_same(again), _same(fresh))

    # A measured cost is on the candidates, which trial rows do not show: a full read.
    with Writer.open(url) as store:
        store.set_cost(exp, key, {"latency_ms": 12.5, "cost_device": "cpu"})
    with Reader.open(url) as reader:
        costed = reader.dashboard_trials_since(updated, names)
        assert costed.attrs["changed_trials"] is None
        pd.testing.assert_frame_equal(_same(costed), _same(reader.dashboard_trials(names)))
    assert 12.5 in set(costed["latency_ms"])


def test_new_trials_and_candidates_read_incrementally_as_a_full_read_orders_them(
        store_url: str) -> None:
    """New trials of the experiment the frame ends with are appended as read; one of an
    experiment earlier in the frame's order takes its place among that experiment's rows;
    a new candidate is a full read. Each time the same table as a new full read, on
    SQLite and PostgreSQL (the poll's queries go by indexes each database picks)."""
    url = store_url
    make_fixture_store(url, seeds=1, failed=0)
    names = ["cifar10-cardinality", "cifar10-width"]  # the frame's order: by name
    ran_before(url, hours=2)
    with Reader.open(url) as reader:
        known = reader.dashboard_trials(names)
    ids = {name: int(known.loc[known["experiment"] == name, "experiment_id"].iat[0])
           for name in names}
    assert known["experiment"].iat[-1] == "cifar10-width"

    def one_more_trial(name: str, seed: int) -> None:
        key = str(known.loc[known["experiment"] == name, "key"].iat[0])
        with Writer.open(url) as store:
            store.add_trials(ids[name], [(f"{key}-seed-{seed}", key, seed)])
            store.mark_running(ids[name], f"{key}-seed-{seed}", "cuda:0")
            store.finish_trial(ids[name], f"{key}-seed-{seed}", "finished",
                               {"test_error": 3.0 + seed})

    for name, seed in (("cifar10-width", 11), ("cifar10-cardinality", 12)):
        one_more_trial(name, seed)
        with Reader.open(url) as reader:
            updated = reader.dashboard_trials_since(known, names)
            fresh = reader.dashboard_trials(names)
        pd.testing.assert_frame_equal(_same(updated), _same(fresh))
        assert len(updated.attrs["changed_trials"]) == 1  # only the new trial read
        known = updated
    assert known["experiment"].iat[-1] == "cifar10-width"  # the second one took its place

    # A candidate added (no trial of it yet): what trial rows do not show, a full read.
    spec, _text = fixture_spec("cifar10-width", variant=1)
    have = set(known["key"])
    new = next(c for c in enumerate_spec(spec).candidates if c.key not in have)
    with Writer.open(url) as store:
        store.add_candidates(ids["cifar10-width"], [new])
    with Reader.open(url) as reader:
        after = reader.dashboard_trials_since(known, names)
        assert after.attrs["changed_trials"] is None
        pd.testing.assert_frame_equal(_same(after), _same(reader.dashboard_trials(names)))


def _xy(spec: dict[str, Any], role: str = "candidates") -> list[tuple[float, float]]:
    """The (x, y) of a chart's points of a role, sorted."""
    pairs = []
    for trace in spec["data"]:
        if trace.get("meta", {}).get("role") == role:
            pairs += zip(decode(trace["x"]).tolist(), decode(trace["y"]).tolist(), strict=True)
    return sorted(pairs)


def test_a_live_refresh_draws_what_a_fresh_page_draws(tmp_path: Path) -> None:
    """The app after writes (its trials and means brought up to date incrementally) draws
    the same points as a new page on empty caches."""
    import streamlit as st

    path = tmp_path / "explorer.db"
    make_fixture_store(path, experiments=("cifar10-cardinality",), seeds=2, failed=1,
                       running=2)
    url = f"sqlite:///{path}"
    live = ran(app(url))
    with Writer.open(url) as store:
        trials = store.trials_frame()
        running = trials[trials["status"] == "running"].drop_duplicates("trial_id")
        for _, row in running.iterrows():
            store.finish_trial(int(row["experiment_id"]), str(row["trial_key"]), "finished",
                               {"test_error": 3.0 + int(row["trial_id"]) / 100})
    ran(live)
    st.cache_resource.clear()
    st.cache_data.clear()
    fresh = ran(app(url))
    for chart in ("error_vs_flops", "error_vs_params"):
        assert _xy(charts(live)[chart]) == _xy(charts(fresh)[chart])
        assert _xy(charts(live)[chart], "pareto") == _xy(charts(fresh)[chart], "pareto")
    # The filters' values, brought up to date from the changed trials: the same as a new
    # page's, "running" gone with the last running trial.
    for key in ("f_spaces", "f_cardinality", "f_bottleneck", "f_depths", "f_status", "f_seeds"):
        assert live.sidebar.multiselect(key=key).options == \
            fresh.sidebar.multiselect(key=key).options
    assert "running" not in live.sidebar.multiselect(key="f_status").options
    with Reader.open(url) as reader:
        means = analysis.by_candidate(reader.trials_frame())
    flops = sorted(zip(means["flops"].astype(float), means["test_error_mean"], strict=True))
    assert _xy(charts(live)["error_vs_flops"]) == pytest.approx(flops)


def test_many_candidates_are_binned_and_a_filter_shows_each_one(
        fixture_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the threshold the scatter is density bins (a heatmap per space, each candidate
    counted in one cell);
    a filter that leaves fewer candidates draws every one, exactly."""
    from explorer import figures

    with Reader.open(fixture_db) as reader:
        trials = reader.trials_frame(["cifar10-width"])
    means = analysis.by_candidate(trials)
    chosen = int(means["cardinality"].min())
    few = means[means["cardinality"] == chosen]
    assert 0 < len(few) < len(means)
    monkeypatch.setattr(figures, "BIN_THRESHOLD", len(few))
    at = ran(app(fixture_db))
    spec = charts(at)["error_vs_flops"]
    bins = [t for t in spec["data"] if t.get("meta", {}).get("role") == "bins"]
    assert bins and points(spec) == 0
    assert all(t["type"] == "heatmap" and "hovertext" not in t for t in bins)
    assert sum(int(np.nansum(decode(t["z"]))) for t in bins) == len(means)
    assert "density bins" in spec["layout"]["title"]["text"]
    # The Pareto front stays exact.
    front = analysis.pareto_front(means, "flops")
    assert _xy(spec, "pareto") == pytest.approx(
        sorted(zip(front["flops"].astype(float), front["test_error_mean"], strict=True)))

    at.sidebar.multiselect(key="f_cardinality").set_value([chosen])
    ran(at)
    spec = charts(at)["error_vs_flops"]
    assert not [t for t in spec["data"] if t.get("meta", {}).get("role") == "bins"]
    assert _xy(spec) == pytest.approx(
        sorted(zip(few["flops"].astype(float), few["test_error_mean"], strict=True)))


def test_many_failed_trials_are_counted_and_their_table_built_only_when_opened(
        tmp_path: Path) -> None:
    """Above five failed trials the list starts closed, and is neither built nor sent
    until it is opened (at 100,000 trials it is a table of thousands of rows)."""
    path = tmp_path / "explorer.db"
    make_fixture_store(path, experiments=("cifar10-cardinality",), seeds=2, failed=6)
    at = ran(app(f"sqlite:///{path}"))
    assert any("6 trials failed" in w for w in texts(at, "warning"))
    assert not [t for t in at.dataframe if "error message" in t.value.columns]
    at.session_state["failed_trials"] = True  # the expander opened, as a click does
    ran(at)
    failed = table(at, "error message")
    assert len(failed) == 6 and failed["error message"].str.contains("CUDA").all()


def test_the_first_page_finds_its_trials_read_by_warm(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """dashboard.launch reads the store before the server starts (dashboard.live.warm): the
    first page draws from that read and reads no trials table itself."""
    from dashboard import live

    path = tmp_path / "explorer.db"
    make_fixture_store(path, experiments=("cifar10-cardinality",), seeds=2)
    url = f"sqlite:///{path}"
    with Reader.open(url) as reader:
        trials = reader.trials_frame(["cifar10-cardinality"])
    assert live.warm(url) == f"{trials['trial_id'].nunique():,} trials of 'cifar10-cardinality'"

    def no_second_read(*_args: Any) -> pd.DataFrame:
        raise AssertionError("the page read the trials again")

    monkeypatch.setattr(Reader, "dashboard_trials", no_second_read)
    at = ran(app(url))
    assert points(charts(at)["error_vs_flops"]) == expected_candidates(url, "cifar10-cardinality")


def test_launch_runs_streamlit_with_the_arguments_it_was_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """dashboard.launch hands its command line to streamlit's own, unchanged, after warming
    the store named after "--" and moving what is loaded by then out of the garbage
    collector's walks; its exit code is streamlit's."""
    import gc

    from dashboard import launch

    warmed: list[str] = []
    given: list[list[str]] = []
    frozen: list[int] = []
    monkeypatch.setattr(launch, "warm", lambda url: warmed.append(url) or None)

    def streamlit_main(args: list[str], prog_name: str) -> None:
        given.append(args)
        frozen.append(gc.get_freeze_count())
        raise SystemExit(3)

    monkeypatch.setattr(launch.cli, "main", streamlit_main)
    argv = ["run", "app.py", "--server.port=1", "--", "--store", "sqlite:///x.db"]
    try:
        assert launch.main(argv) == 3
    finally:
        gc.unfreeze()  # this test process's objects back to the collector
    assert warmed == ["sqlite:///x.db"] and given == [argv]
    assert frozen[0] > 10_000  # the modules at least: never walked by streamlit's collections


def test_launch_interrupted_while_it_reads_exits_130_without_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from dashboard import launch

    def interrupted(_url: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "warm", interrupted)
    monkeypatch.setattr(launch.cli, "main", lambda **_: pytest.fail("streamlit started"))
    assert launch.main(["run", "app.py", "--", "--store", "sqlite:///x.db"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "explorer dashboard: interrupted"
