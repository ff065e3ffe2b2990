"""`explorer import`: populations trained elsewhere (NDS, pycls, Optuna, CSV) brought into
the store, their complexity recounted, and compared with `explorer compare`.

Every fixture is written here in its layout. The params and flops the files carry are
computed by a longhand layer-by-layer tally written in this file (checked against
torchvision's published parameter counts of ResNet-50 and ResNeXt-50 32x4d), never by
explorer.complexity; the errors are synthetic, seeded.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec
from typer.testing import CliRunner

from explorer.cli import app as cli_app
from explorer.store import Reader

runner = CliRunner()

# torchvision's published parameter counts (torchvision.models docs, "Params" column).
TORCHVISION_PARAMS = {"resnet50": 25_557_032, "resnext50_32x4d": 25_028_904}


def longhand(stem: str, stem_w: int, ds: list[int], ws: list[int], inner: list[int],
             groups: list[int], resolution: int, classes: int) -> tuple[int, int]:
    """params and multiply-adds of a ResNeXt, layer by layer (BN affine counted, FC with
    its bias; flops of convolutions and the FC's weights only)."""
    params = flops = 0

    def conv(c_in: int, c_out: int, k: int, out_size: int, g: int = 1) -> None:
        nonlocal params, flops
        weights = k * k * (c_in // g) * c_out
        params += weights + 2 * c_out  # the batch norm after it
        flops += weights * out_size * out_size

    if stem == "res_stem_in":
        size = resolution // 2
        conv(3, stem_w, 7, size)
        size //= 2  # max-pool
    else:
        size = resolution
        conv(3, stem_w, 3, size)
    c_in = stem_w
    for i, (d, w, b, g) in enumerate(zip(ds, ws, inner, groups, strict=True)):
        for block in range(d):
            stride = 2 if (i > 0 and block == 0) else 1
            out = size // stride
            conv(c_in, b, 1, size)
            conv(b, b, 3, out, g)
            conv(b, w, 1, out)
            if stride != 1 or c_in != w:
                conv(c_in, w, 1, out)
            c_in, size = w, out
    params += c_in * classes + classes
    flops += c_in * classes
    return params, flops


def test_the_longhand_tally_gives_torchvisions_published_params() -> None:
    resnet50 = longhand("res_stem_in", 64, [3, 4, 6, 3], [256, 512, 1024, 2048],
                        [64, 128, 256, 512], [1] * 4, 224, 1000)
    resnext50 = longhand("res_stem_in", 64, [3, 4, 6, 3], [256, 512, 1024, 2048],
                         [128, 256, 512, 1024], [32] * 4, 224, 1000)
    assert resnet50[0] == TORCHVISION_PARAMS["resnet50"]
    assert resnext50[0] == TORCHVISION_PARAMS["resnext50_32x4d"]


def nds_job(job_id: int, ds: list[int], ws: list[int], bot_muls: list[float],
            num_gs: list[int], rng: random.Random, *, stem: str = "res_stem_cifar",
            stem_w: int = 16, pycls_flops: bool = False) -> dict[str, Any]:
    """One job in NDS's published layout; its params/flops from the longhand tally (with
    pycls's FC-bias flops when asked)."""
    resolution, classes = (32, 10) if stem == "res_stem_cifar" else (224, 1000)
    inner = [round(w * b) for w, b in zip(ws, bot_muls, strict=True)]
    params, flops = longhand(stem, stem_w, ds, ws, inner, num_gs, resolution, classes)
    epochs = 5
    start = rng.uniform(40, 60)
    test = [round(start - 4 * e + rng.uniform(-1, 1), 3) for e in range(epochs)]
    return {
        "job_id": job_id, "rng_seed": job_id % 3, "params": params,
        "flops": flops + (classes if pycls_flops else 0),
        "net": {"block_type": "res_bottleneck_block", "stem_type": stem, "stem_w": stem_w,
                "ds": ds, "ws": ws, "ss": [1] + [2] * (len(ds) - 1), "bot_muls": bot_muls,
                "num_gs": num_gs},
        "optim": {"base_lr": 0.1, "wd": 5e-4, "max_ep": epochs},
        "train_ep_top1": [e + 5 for e in test], "test_ep_top1": test,
        "train_ep_loss": [e / 30 for e in test], "min_test_top1": min(test),
        "iter_time": 0.01, "prec_time": 0.001,
    }


def resnet_jobs(rng: random.Random) -> list[dict[str, Any]]:
    return [nds_job(i, [d1, d2, 1], [64, 128, 256], [0.25] * 3, [1] * 3, rng,
                    pycls_flops=i % 2 == 0)
            for i, (d1, d2) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (1, 3)])]


def resnext_jobs(rng: random.Random) -> list[dict[str, Any]]:
    return [nds_job(100 + i, [d1, d2, 1], [64, 128, 256], [0.5] * 3, [4] * 3, rng)
            for i, (d1, d2) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (1, 3)])]


def invoke(*args: str) -> Any:
    return runner.invoke(cli_app, [*args])


def compare_json(runs: Path, experiment: str) -> dict[str, Any]:
    result = invoke("compare", experiment, "--runs-dir", str(runs), "--json",
                    "--normalize", "none")
    assert result.exit_code == 0, result.output
    value = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def final_errors(jobs: list[dict[str, Any]]) -> list[float]:
    return [job["test_ep_top1"][-1] for job in jobs]


def write_nds(tmp_path: Path) -> tuple[Path, Path, list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(0)
    resnets, resnexts = resnet_jobs(rng), resnext_jobs(rng)
    nas_cell = {"job_id": 900, "net": {"genotype": "darts"}, "params": 1, "flops": 1}
    basic = {**resnets[0], "job_id": 901,
             "net": {**resnets[0]["net"], "block_type": "res_basic_block"}}
    a = tmp_path / "ResNet.json"
    a.write_text(json.dumps([*resnets, nas_cell, basic]))
    b = tmp_path / "ResNeXt.json"  # the {"top": [...], "mid": [...]} layout
    b.write_text(json.dumps({"top": resnexts[:3], "mid": resnexts[3:]}))
    return a, b, resnets, resnexts


def test_nds_files_import_as_two_spaces_and_compare(tmp_path: Path) -> None:
    a, b, resnets, resnexts = write_nds(tmp_path)
    runs = tmp_path / "runs"

    result = invoke("import", str(a), str(b), "--format", "nds", "--name", "nds",
                    "--runs-dir", str(runs))

    assert result.exit_code == 0, result.output
    assert "nds v1: imported 12 models (ResNet (6), ResNeXt (6)); skipped 2" in result.stdout
    assert "skipped 1 model: not a ResNet/ResNeXt job" in result.stderr
    assert "skipped 1 model: block 'res_basic_block'" in result.stderr
    # half the ResNet jobs carry pycls's FC-bias flops: that convention agrees
    assert "params: all 12 agree" in result.stderr and "flops: all 12 agree" in result.stderr
    with Reader.open(runs) as store:
        trials = store.trials_frame(["nds"])
        epochs = store.epochs_frame(experiment_names=["nds"])
    assert len(trials) == 12 and set(trials["status"]) == {"finished"}
    assert sorted(trials["params"]) == sorted(j["params"] for j in resnets + resnexts)
    assert sorted(epochs["test_error"]) == sorted(e for j in resnets + resnexts
                                                  for e in j["test_ep_top1"])
    resnext = trials[trials["space"] == "ResNeXt"].iloc[0]
    assert resnext["cardinalities"] == (4, 4, 4) and resnext["bottleneck_widths"] == (8, 16, 32)

    compared = compare_json(runs, "nds")

    for space, jobs in (("ResNet", resnets), ("ResNeXt", resnexts)):
        figures = compared["spaces"][space]
        errors = final_errors(jobs)  # one seed per network: the candidate's error
        assert figures["n"] == 6
        assert figures["min"] == pytest.approx(min(errors))
        assert figures["mean"] == pytest.approx(sum(errors) / len(errors))
    [pair] = compared["pairs"]
    assert {pair["a"], pair["b"]} == {"ResNet", "ResNeXt"}

    again = invoke("import", str(a), str(b), "--format", "nds", "--name", "nds",
                   "--runs-dir", str(runs))
    assert again.exit_code == 0, again.output
    assert "nds v1: imported 12 models" in again.stdout
    with Reader.open(runs) as store:
        assert len(store.trials_frame(["nds"])) == 12
        assert len(store.epochs_frame(experiment_names=["nds"])) == len(epochs)
    assert compare_json(runs, "nds") == compared


def test_a_changed_file_is_refused_unless_new_version_and_run_refuses_the_name(
        tmp_path: Path) -> None:
    a, _, resnets, _ = write_nds(tmp_path)
    runs = tmp_path / "runs"
    assert invoke("import", str(a), "--format", "nds", "--name", "nds",
                  "--runs-dir", str(runs)).exit_code == 0
    a.write_text(json.dumps(resnets[:4]))

    changed = invoke("import", str(a), "--format", "nds", "--name", "nds",
                     "--runs-dir", str(runs))
    assert changed.exit_code == 2
    assert "--new-version" in changed.stderr and "Traceback" not in changed.output

    kept = invoke("import", str(a), "--format", "nds", "--name", "nds", "--new-version",
                  "--runs-dir", str(runs))
    assert kept.exit_code == 0, kept.output
    assert "nds v2: imported 4 models" in kept.stdout

    ran = invoke("run", str(tiny_spec(tmp_path, name="nds")), "--runs-dir", str(runs),
                 "--dry-run")
    assert ran.exit_code == 2
    assert "'nds' was imported (explorer import) and is read-only" in ran.stderr
    with Reader.open(runs) as store:
        assert list(store.experiments()["version"]) == [1, 2]


def test_a_wrong_params_figure_is_reported_and_refused_unless_accepted(tmp_path: Path) -> None:
    rng = random.Random(1)
    jobs = resnet_jobs(rng)
    right = jobs[2]["params"]
    jobs[2]["params"] = right + right // 10  # 10% off
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(jobs))
    runs = tmp_path / "runs"

    refused = invoke("import", str(path), "--format", "nds", "--name", "w",
                     "--runs-dir", str(runs))

    assert refused.exit_code == 2
    assert "params: 1 of 6 differ from explorer's count, by up to 10%" in refused.stderr
    assert "job 2" not in refused.stderr or "2:" in refused.stderr
    assert "nothing imported" in refused.stderr
    assert not (runs / "explorer.db").exists()

    accepted = invoke("import", str(path), "--format", "nds", "--name", "w",
                      "--accept-mismatch", "--runs-dir", str(runs))
    assert accepted.exit_code == 0, accepted.output
    with Reader.open(runs) as store:
        stored = sorted(store.trials_frame(["w"])["params"])
    assert right in stored and right + right // 10 not in stored  # explorer's figure kept


def test_an_inexpressible_bottleneck_is_refused_per_row(tmp_path: Path) -> None:
    rng = random.Random(2)
    jobs = resnext_jobs(rng)
    for job in jobs[:2]:  # inner width round(64 · 0.3) = 19: not divisible by 4 groups
        job["net"]["bot_muls"] = [0.3, 0.5, 0.5]
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(jobs))
    runs = tmp_path / "runs"

    result = invoke("import", str(path), "--format", "nds", "--name", "odd",
                    "--runs-dir", str(runs))

    assert result.exit_code == 0, result.output
    assert ("skipped 2 models: not expressible in explorer: stage 1's inner width 19 is not "
            "divisible by its 4 groups (first: odd/100)") in result.stderr
    assert "imported 4 models" in result.stdout


def make_study(optuna: Any, storage: str, name: str, cardinalities: list[int],
               rng: random.Random) -> list[float]:
    """A study of 8 distinct CIFAR networks told with their curves; returns the final
    errors. Per-stage depths as depths_0.., one C and one d for every stage, the widths
    and the longhand params/flops as user attributes."""
    study = optuna.create_study(study_name=name, storage=storage)
    dist = {**{f"depths_{i}": optuna.distributions.IntDistribution(1, 4) for i in range(3)},
            "cardinality": optuna.distributions.CategoricalDistribution(cardinalities),
            "bottleneck_width": optuna.distributions.CategoricalDistribution([16, 32])}
    finals = []
    for n in range(8):
        params = {"depths_0": 1 + n % 4, "depths_1": 1 + n // 4, "depths_2": 1,
                  "cardinality": cardinalities[n % len(cardinalities)],
                  "bottleneck_width": [16, 32][n % 2]}
        curve = [rng.uniform(30, 50) - 3 * e for e in range(4)]
        c, d = params["cardinality"], params["bottleneck_width"]
        inner = [c * d * w // 64 for w in (64, 128, 256)]
        p, f = longhand("res_stem_cifar", 16, [params[f"depths_{i}"] for i in range(3)],
                        [64, 128, 256], inner, [c] * 3, 32, 10)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dist, value=curve[-1],
            intermediate_values=dict(enumerate(curve)),
            user_attrs={"widths": [64, 128, 256], "stem_width": 16, "params": p,
                        "flops": f, "seed": n}))
        finals.append(curve[-1])
    study.add_trial(optuna.trial.create_trial(params={}, distributions={},
                                              state=optuna.trial.TrialState.FAIL))
    return finals


def test_two_optuna_studies_import_as_two_spaces_and_compare(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    rng = random.Random(3)
    expected = {"resnet-search": make_study(optuna, storage, "resnet-search", [1], rng),
                "resnext-search": make_study(optuna, storage, "resnext-search", [2, 4], rng)}
    runs = tmp_path / "runs"

    result = invoke("import", storage, "--format", "optuna", "--study", "resnet-search",
                    "--study", "resnext-search", "--name", "opt", "--runs-dir", str(runs))

    assert result.exit_code == 0, result.output
    assert ("opt v1: imported 16 models (resnet-search (8), resnext-search (8)); skipped 2"
            in result.stdout)
    assert "skipped 2 models: state FAIL" in result.stderr
    assert "params: all 16 agree" in result.stderr and "flops: all 16 agree" in result.stderr
    compared = compare_json(runs, "opt")
    for space, finals in expected.items():
        figures = compared["spaces"][space]
        assert figures["n"] == 8
        assert figures["min"] == pytest.approx(min(finals))
        assert figures["mean"] == pytest.approx(sum(finals) / len(finals))
    assert len(compared["pairs"]) == 1
    with Reader.open(runs) as store:
        assert len(store.epochs_frame(experiment_names=["opt"])) == 16 * 4

    missing = invoke("import", storage, "--format", "optuna", "--study", "nope",
                     "--name", "opt2", "--runs-dir", str(runs))
    assert missing.exit_code == 2 and "no study 'nope'" in missing.stderr


def test_a_csv_in_the_documented_layout_imports(tmp_path: Path) -> None:
    path = tmp_path / "models.csv"
    rows = []
    for i, (ds, c, d) in enumerate([([1, 1, 1], 1, 64), ([2, 1, 1], 2, 32), ([1, 2, 1], 4, 16)]):
        inner = [c * d * w // 256 for w in (256, 512, 1024)]
        p, f = longhand("res_stem_cifar", 64, ds, [256, 512, 1024], inner, [c] * 3, 32, 10)
        rows.append({"id": f"m{i}", "space": "csv-space", "depths": "|".join(map(str, ds)),
                     "widths": json.dumps([256, 512, 1024]), "cardinality": c,
                     "bottleneck_width": d, "params": p, "flops": f, "error": 20.0 + i,
                     "seed": i, "test_errors": json.dumps([30.0 + i, 20.0 + i])})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    runs = tmp_path / "runs"

    result = invoke("import", str(path), "--format", "csv", "--name", "c",
                    "--runs-dir", str(runs))

    assert result.exit_code == 0, result.output
    assert "params: all 3 agree" in result.stderr
    with Reader.open(runs) as store:
        trials = store.trials_frame(["c"]).sort_values("seed")
    assert list(trials["space"]) == ["csv-space"] * 3
    assert list(trials["test_error"]) == [20.0, 21.0, 22.0]
    assert list(trials["depths"]) == [(1, 1, 1), (2, 1, 1), (1, 2, 1)]


def test_a_pycls_sweep_imports_with_pycls_flops(tmp_path: Path) -> None:
    jobs = []
    for i, (ds, gw) in enumerate([([1, 1, 1], 16), ([2, 1, 1], 8)]):
        ws, bm = [64, 128, 256], 0.5
        inner = [round(w * bm) for w in ws]
        p, f = longhand("res_stem_cifar", 16, ds, ws, inner, [b // gw for b in inner], 32, 10)
        jobs.append({
            "cfg": {"MODEL": {"TYPE": "anynet", "NUM_CLASSES": 10}, "RNG_SEED": i,
                    "TRAIN": {"IM_SIZE": 32},
                    "ANYNET": {"STEM_TYPE": "res_stem_cifar", "STEM_W": 16,
                               "BLOCK_TYPE": "res_bottleneck_block", "DEPTHS": ds,
                               "WIDTHS": ws, "STRIDES": [1, 2, 2], "BOT_MULS": [bm] * 3,
                               "GROUP_WS": [gw] * 3, "HEAD_W": 0, "SE_ON": False}},
            "complexity": {"params": p, "flops": f + 10, "acts": 0},
            "test_epoch": {"top1_err": [40.0, 30.0 + i]},
            "train_epoch": {"top1_err": [45.0, 35.0], "loss": [1.5, 1.0]},
            "log_file": f"logs/{i}/stdout.log",
        })
    jobs.append({"cfg": {"MODEL": {"TYPE": "regnet"}}, "log_file": "logs/r/stdout.log"})
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(jobs))
    runs = tmp_path / "runs"

    result = invoke("import", str(path), "--format", "pycls", "--name", "p",
                    "--runs-dir", str(runs))

    assert result.exit_code == 0, result.output
    assert "flops: all 2 agree" in result.stderr
    assert "skipped 1 model: model type 'regnet'" in result.stderr
    with Reader.open(runs) as store:
        trials = store.trials_frame(["p"]).sort_values("seed")
    assert list(trials["cardinalities"]) == [(2, 4, 8), (4, 8, 16)]
    assert list(trials["test_error"]) == [30.0, 31.0]


def test_an_import_writes_the_same_rows_again_on_each_backend(store_url: str,
                                                              tmp_path: Path) -> None:
    a, b, resnets, resnexts = write_nds(tmp_path)
    args = ("import", str(a), str(b), "--format", "nds", "--name", "nds", "--store", store_url)

    first = invoke(*args)
    again = invoke(*args)

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    with Reader.open(store_url) as store:
        trials = store.trials_frame(["nds"])
        epochs = store.epochs_frame(experiment_names=["nds"])
        assert list(store.experiments()["version"]) == [1]
    assert len(trials) == 12 and set(trials["status"]) == {"finished"}
    assert len(epochs) == sum(len(j["test_ep_top1"]) for j in resnets + resnexts)
    assert sorted(trials["test_error"]) == sorted(final_errors(resnets + resnexts))


def test_the_report_and_export_read_an_import(tmp_path: Path) -> None:
    a, b, resnets, resnexts = write_nds(tmp_path)
    runs = tmp_path / "runs"
    assert invoke("import", str(a), str(b), "--format", "nds", "--name", "nds",
                  "--runs-dir", str(runs)).exit_code == 0
    html, table = tmp_path / "nds.html", tmp_path / "epochs.csv"

    report = invoke("report", "nds", "-o", str(html), "--runs-dir", str(runs))
    export = invoke("export", "nds", "-o", str(table), "--epochs", "--runs-dir", str(runs))

    assert report.exit_code == 0, report.output
    assert "12 of 12 trials finished" in report.stdout
    text = html.read_text(encoding="utf-8")
    assert "ResNeXt" in text and "ResNet" in text
    assert export.exit_code == 0, export.output
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(j["test_ep_top1"]) for j in resnets + resnexts)
