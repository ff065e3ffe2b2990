"""`explorer report`: one standalone HTML file with plotly.js inline and every chart."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pandas as pd
import pytest
from fixtures_store import make_fixture_store
from typer.testing import CliRunner

from explorer.cli import app as cli_app
from explorer.report import SECTIONS, ReportError, write_report
from explorer.store import Reader, Writer

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("report") / "explorer.db"
    make_fixture_store(path, seeds=2, failed=1, running=1)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def report(db: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    output = tmp_path_factory.mktemp("out") / "report.html"
    result = runner.invoke(cli_app, ["report", "cifar10-cardinality", "--store", db,
                                     "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert f"wrote {output}" in result.output
    return output.read_text(encoding="utf-8")


def test_plotly_js_inline_once_and_nothing_external(report: str) -> None:
    assert report.startswith("<!DOCTYPE html>")
    # The plotly.js bundle itself, inline (it is several MB), exactly once.
    assert report.count("plotly.js v") >= 1
    assert len(report) > 1_000_000
    bundles = [s for s in re.findall(r"<script\b[^>]*>(.*?)</script>", report, flags=re.S)
               if len(s) > 1_000_000]
    assert len(bundles) == 1
    # No script, stylesheet or image is fetched from anywhere.
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", report, flags=re.I)
    assert not re.search(r"<link\b[^>]*\bhref\s*=", report, flags=re.I)
    assert not re.search(r"<img\b[^>]*\bsrc\s*=\s*[\"']?https?:", report, flags=re.I)
    # Outside the bundle (whose config merely names a map-tiles URL no chart here uses),
    # no address at all.
    outside = report.replace(bundles[0], "")
    assert not re.search(r"https?://", outside), re.findall(r"https?://\S+", outside)[:3]


def test_every_figure_div_and_summary(report: str) -> None:
    for key, title in SECTIONS:
        assert f'id="figure-{key}"' in report, key
        assert title.split(" (")[0].replace("'", "&#x27;") in report
    # Every section's chart, the compare section's normalised EDFs, and the proxy-fidelity
    # chart (epoch 1 of 5 against the end).
    # Counted in the report's own scripts, not in the plotly.js bundle (whose text may carry
    # the same words, as plotly < 7's does once in an error message).
    own = [s for s in re.findall(r"<script\b[^>]*>(.*?)</script>", report, flags=re.S)
           if len(s) < 1_000_000]
    assert sum(s.count("Plotly.newPlot(") for s in own) == len(SECTIONS) + 2
    assert 'id="figure-proxy_fidelity"' in report and "epoch 1 of 5" in report
    assert "Summary per space" in report
    assert "preserved" in report and "deeper" in report
    # The failed trial and its error text, escaped.
    assert "Failed trials (1)" in report
    assert "CUDA out of memory" in report
    assert "Candidates (mean over seeds, best first)" in report


def test_store_text_is_escaped(tmp_path: Path) -> None:
    from explorer.report import render_report

    path = tmp_path / "explorer.db"
    make_fixture_store(path, experiments=("xss",), failed=1)
    with Writer.open(path) as store:
        trials = store.trials_frame(["xss"])
        trials.loc[trials["status"] == "failed", "error"] = "<script>alert(1)</script>"
        experiments = store.experiments()
    record = experiments.iloc[0].to_dict()
    record["spec_text"] = "name: </pre><script>alert(2)</script>"
    no_epochs = pd.DataFrame(columns=["trial_id", "epoch", "train_error", "test_error"])
    html = render_report(trials, no_epochs, record, where="<b>db</b>", curve_trials=[])
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;db&lt;/b&gt;" in html


def test_missing_experiment_exit_2(db: str, tmp_path: Path) -> None:
    output = tmp_path / "r.html"
    result = runner.invoke(cli_app, ["report", "nope", "--store", db, "--output", str(output)])
    assert result.exit_code == 2
    assert "no experiment 'nope'" in result.output
    assert not output.exists()
    with Reader.open(db) as store, pytest.raises(ReportError):
        write_report(store, "nope", output)


def test_missing_store_and_bad_suffix(tmp_path: Path) -> None:
    result = runner.invoke(cli_app, ["report", "x", "--runs-dir", str(tmp_path / "none"),
                                     "--output", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "no results database" in result.output
    result = runner.invoke(cli_app, ["report", "x", "--runs-dir", str(tmp_path),
                                     "--output", str(tmp_path / "r.pdf")])
    assert result.exit_code == 2 and "unknown format" in result.output


def test_written_atomically_and_readable(db: str, tmp_path: Path) -> None:
    output = tmp_path / "sub" / "report.html"
    output.parent.mkdir()
    output.write_text("old", encoding="utf-8")
    with Reader.open(db) as store:
        summary = write_report(store, "cifar10-width", output)
    assert output.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert summary.bytes == output.stat().st_size
    assert summary.finished == 8 and summary.trials == 10
    assert [p.name for p in output.parent.iterdir()] == ["report.html"]  # no temporary left
    assert output.stat().st_mode & stat.S_IRGRP  # shareable, not the temp file's 0600


def _tau_by_hand(proxy: pd.DataFrame, full: pd.DataFrame) -> float:
    """Kendall's tau of candidate mean errors, computed with scipy, not explorer.analysis."""
    from scipy.stats import kendalltau

    def means(trials: pd.DataFrame) -> pd.Series:
        done = trials[(trials["status"] == "finished") & trials["test_error"].notna()]
        return done.drop_duplicates("trial_id").groupby("key")["test_error"].mean()

    both = pd.concat([means(proxy).rename("p"), means(full).rename("f")], axis=1).dropna()
    return float(kendalltau(both["p"], both["f"]).statistic)


def test_proxy_fidelity_from_another_experiment(db: str, tmp_path: Path) -> None:
    output = tmp_path / "proxy.html"
    result = runner.invoke(cli_app, ["report", "cifar10-width", "--store", db, "--proxy",
                                     "cifar10-cardinality", "--output", str(output)])
    assert result.exit_code == 0, result.output
    with Reader.open(db) as store:
        expected = _tau_by_hand(store.trials_frame(["cifar10-cardinality"]),
                                store.trials_frame(["cifar10-width"]))
    assert f"Kendall τ = {expected:.2f}" in result.output
    page = output.read_text(encoding="utf-8")
    assert 'id="figure-proxy_fidelity"' in page
    assert "experiment cifar10-cardinality" in page and f"<b>{expected:.2f}</b>" in page


def test_proxy_fidelity_from_an_early_epoch(db: str, tmp_path: Path) -> None:
    with Reader.open(db) as store:
        summary = write_report(store, "cifar10-cardinality", tmp_path / "r.html")
        trials = store.trials_frame(["cifar10-cardinality"])
        epochs = store.epochs_frame(experiment_names=["cifar10-cardinality"])
    assert summary.proxy is not None
    total = int(trials.loc[trials["status"] == "finished", "epochs_completed"].max())
    early = max(1, total // 4)
    assert summary.proxy.proxy == f"epoch {early} of {total}"
    at_early = epochs[epochs["epoch"] == early].set_index("trial_id")["test_error"]
    proxy = trials.assign(test_error=trials["trial_id"].map(at_early))
    expected = _tau_by_hand(proxy, trials)
    assert summary.proxy.tau == pytest.approx(expected)


def test_unknown_proxy_experiment_exit_2(db: str, tmp_path: Path) -> None:
    result = runner.invoke(cli_app, ["report", "cifar10-width", "--store", db, "--proxy",
                                     "nope", "--output", str(tmp_path / "x.html")])
    assert result.exit_code == 2
    assert "no experiment 'nope'" in result.output
    assert not (tmp_path / "x.html").exists()


def test_compare_section_has_the_ks_table_and_the_verdict(report: str, db: str) -> None:
    from explorer.compare import cardinality_verdicts

    section = report[report.index('id="section-compare"'):]
    section = section[:section.index("</section>")]
    assert 'id="figure-compare_edf"' in section
    assert "Two-sample Kolmogorov–Smirnov tests" in section
    assert "<td>deeper</td>" in section and "<td>preserved</td>" in section
    with Reader.open(db) as store:
        verdicts = cardinality_verdicts(store.trials_frame(["cifar10-cardinality"]))
    assert [v.space for v in verdicts] == ["preserved"]
    assert verdicts[0].sentence.replace("×", "&#215;") in section.replace("×", "&#215;")
    assert "each space needs about 369 models" in section


def _undated(text: str) -> str:
    return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated (when)", text)


def test_report_reads_narrowly_and_writes_what_the_full_frame_gives(db: str,
                                                                   tmp_path: Path) -> None:
    """write_report reads the trials frame's TRIAL_COLUMNS_READ only and makes the means
    over seeds from it: the document is the one the whole trials frame renders, figure
    for figure (the database's means, Reader.candidate_means, agree with by_candidate's to
    rounding: tests/test_store_scale.py)."""
    from explorer import analysis
    from explorer.report import (
        CURVE_TRIALS,
        early_epoch,
        proxy_from_early_epoch,
        render_report,
    )

    output = tmp_path / "narrow.html"
    with Reader.open(db) as store:
        write_report(store, "cifar10-cardinality", output)
        trials = store.trials_frame(["cifar10-cardinality"])
        means = analysis.by_candidate(trials)
        record = store.experiments().query("experiment == 'cifar10-cardinality' and latest")
        curve_ids = analysis.best_trials(trials, CURVE_TRIALS)
        epochs = store.epochs_frame(trial_ids=curve_ids)
        early = early_epoch(trials)
        assert early is not None
        proxy = proxy_from_early_epoch(trials, store.epoch_errors(early[0],
                                                                  ["cifar10-cardinality"]))
        where = store.where
    full = render_report(trials, epochs, record.iloc[0].to_dict(), where=where,
                         curve_trials=curve_ids, proxy=proxy, candidates=means)
    assert _undated(output.read_text(encoding="utf-8")) == _undated(full)
