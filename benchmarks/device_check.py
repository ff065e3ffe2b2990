"""One prepared check of the trainer on whatever device is present (CUDA if any, else CPU).

    python benchmarks/device_check.py --out device_check.json     # fits 10 minutes on one GPU
    python benchmarks/device_check.py --smoke --out /tmp/dc.json  # tiny, on CPU, < 2 minutes

It measures, and prints as one table (and writes as JSON to --out):

1. the trainer's images/s (`train_trial` itself) in fp32 and bf16, NCHW and
   channels_last, with and without torch.compile, against the plain
   DataLoader loop of benchmarks/train_throughput.py, each with its model-FLOP
   utilisation: 3 × 2 × multiply-adds × images/s ÷ the device's peak FLOP/s
   (forward + backward ≈ 3 forwards; a multiply-add is 2 FLOPs);
2. 1, 2 and 4 trials sharing one GPU through Ray fractional GPUs (total images/s),
   when ray imports and a GPU is present (otherwise one line says it was skipped);
3. the paper's three block forms (grouped, concatenated, split);
4. a short slice of spaces/cifar10_preserved_small.yaml (C = 1 and 8, 2 seeds, a
   few epochs) through `train_trial`: the error and the images/s of each trial.

Each measurement is guarded: one that fails is a row with its error, and the rest
go on. A time budget (--budget-s) skips what would not fit, with a line. Needs
torch, numpy, pydantic and PyYAML; ray, optuna, fvcore and streamlit are optional
(imported only where used). If torchvision imports, the tests/test_torchvision*.py
files are run too (their test functions called directly when pytest is absent).

Peak FLOP/s are NVIDIA's datasheet figures (dense, without sparsity): H100 SXM /
H200 SXM bf16 989 TFLOP/s, fp32 67 TFLOP/s (TF32 tensor cores 495); H100 PCIe bf16
756, fp32 51; A100 bf16 312, fp32 19.5; L4 bf16 121, fp32 30.3; A10G bf16 125
(A10 datasheet), fp32 31.2. On CUDA the trainer lets fp32 convolutions and matmuls
use TF32, so fp32 rows can exceed the fp32 (non-tensor) peak's utilisation.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
from train_throughput import narrow_resnext29, our_trainer, plain_loop  # noqa: E402

from explorer.arch import BLOCK_FORMS, Arch  # noqa: E402
from explorer.complexity import count  # noqa: E402
from explorer.data import Dataset, load_dataset  # noqa: E402
from explorer.spec import DataSpec, TrainSpec  # noqa: E402
from explorer.train import revise, train_trial  # noqa: E402

# (name fragment, bf16 dense, fp32) in FLOP/s; first match wins, so longer names first.
PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989e12, 67e12),
    ("H100 PCIe", 756e12, 51e12),
    ("H100", 989e12, 67e12),
    ("A100", 312e12, 19.5e12),
    ("L4", 121e12, 30.3e12),
    ("A10G", 125e12, 31.2e12),
)

SHARED_CIFAR = REPO.parent / "shared" / "datasets"


@dataclass(frozen=True)
class Scale:
    """How big each part is: the GPU run and the CPU smoke differ only here."""

    width: int
    blocks: int
    batch: int
    warmup: int
    steps: int
    loader_workers: int
    slice_epochs: int
    slice_train: int
    slice_test: int
    slice_resolution: int
    ray_steps: int


GPU_SCALE = Scale(width=64, blocks=3, batch=256, warmup=10, steps=50, loader_workers=4,
                  slice_epochs=3, slice_train=20_000, slice_test=2_000, slice_resolution=32,
                  ray_steps=60)
SMOKE_SCALE = Scale(width=16, blocks=1, batch=32, warmup=1, steps=3, loader_workers=0,
                    slice_epochs=1, slice_train=128, slice_test=32, slice_resolution=8,
                    ray_steps=3)


@dataclass
class Report:
    device: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    budget_s: float = 540.0

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.notes.append(text)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def measure(self, part: str, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        """Run one measurement; a failure becomes the row's error and the check goes on."""
        start = time.perf_counter()
        try:
            row = {"part": part, "name": name, **fn()}
        except Exception as exc:  # one broken configuration must not lose the others
            row = {"part": part, "name": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
            traceback.print_exc(limit=3)
        row["seconds"] = round(time.perf_counter() - start, 2)
        self.rows.append(row)
        print(_row_text(row), flush=True)


def _row_text(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['part']:<10} {row['name']:<34} FAILED {row['error']}"
    rate = row.get("images_per_sec")
    mfu = row.get("mfu")
    extra = row.get("extra", "")
    mfu_text = f"{100 * mfu:6.2f}%" if mfu is not None else "     —"
    rate_text = f"{rate:10.1f}" if rate is not None else "         —"
    return f"{row['part']:<10} {row['name']:<34} {rate_text} img/s  MFU {mfu_text}  {extra}"


def describe(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                            "python": platform.python_version(), "host": platform.node()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory
                                       / 2**30, 1)
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    for name in ("torchvision", "timm", "ray"):
        info[name] = _version(name)
    return info


def _version(name: str) -> str | None:
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ImportError:  # a finder that refuses it: as good as absent
        return None
    try:
        return str(getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as exc:  # present but broken (e.g. a torchvision built for another torch)
        return f"does not import ({type(exc).__name__})"


def peak_flops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, bf16, fp32 in PEAKS:
        if fragment in name:
            return bf16 if precision in ("bf16", "fp16") else fp32
    return None


def mfu(macs: int, rate: float, device: torch.device, precision: str) -> float | None:
    peak = peak_flops(device, precision)
    return None if peak is None else 3 * 2 * macs * rate / peak


# ---------------------------------------------------------------------------
# 1. the trainer's configurations against the plain loop


def trainer_part(report: Report, arch: Arch, data: Dataset, dev: torch.device, s: Scale,
                 smoke: bool) -> None:
    macs = count(arch, data.resolution, data.num_classes).flops
    base = TrainSpec(batch_size=s.batch, lr=0.1, augment=True, precision="fp32",
                     channels_last=False)
    configs = [
        ("fp32 NCHW", dict(precision="fp32", channels_last=False)),
        ("fp32 channels_last", dict(precision="fp32", channels_last=True)),
        ("bf16 NCHW", dict(precision="bf16", channels_last=False)),
        ("bf16 channels_last", dict(precision="bf16", channels_last=True)),
        ("bf16 channels_last compile", dict(precision="bf16", channels_last=True, compile=True)),
        ("fp32 channels_last compile", dict(precision="fp32", channels_last=True, compile=True)),
    ]
    for name, changes in configs:
        if changes.get("compile") and smoke:
            report.note(f"trainer    {name}: skipped in --smoke (inductor's CPU build is slow)")
            continue
        if report.left() < 60:
            report.note(f"trainer    {name}: skipped, the time budget is spent")
            continue
        recipe = revise(base, **changes)

        def run(recipe: TrainSpec = recipe) -> dict[str, Any]:
            rate, _ = our_trainer(arch, data, recipe, device=dev, warmup=s.warmup, steps=s.steps,
                                  cpu_low_precision=True)
            return {"images_per_sec": rate, "mfu": mfu(macs, rate, dev, recipe.precision),
                    "precision": recipe.precision, "macs": macs}

        report.measure("trainer", name, run)
    plain_recipe = revise(base, precision="fp32", channels_last=False)

    def plain() -> dict[str, Any]:
        rate = plain_loop(arch, data, plain_recipe, device=dev, workers=s.loader_workers,
                          warmup=s.warmup, steps=s.steps)
        return {"images_per_sec": rate, "mfu": mfu(macs, rate, dev, "fp32"),
                "extra": f"{s.loader_workers} loader workers"}

    report.measure("plain", "plain DataLoader loop fp32 NCHW", plain)


# ---------------------------------------------------------------------------
# 2. trials sharing one GPU through Ray fractional GPUs


def ray_part(report: Report, arch: Arch, data: Dataset, dev: torch.device, s: Scale) -> None:
    if dev.type != "cuda":
        report.note("ray        fractional GPUs: skipped, no GPU on this machine")
        return
    try:
        import ray
    except ImportError:
        report.note("ray        fractional GPUs: skipped, ray does not import here")
        return
    recipe = TrainSpec(batch_size=s.batch, lr=0.1, augment=True, precision="bf16",
                       channels_last=True, epochs=1)
    ray.init(num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        shared = ray.put(data)
        for trials in (1, 2, 4):
            if report.left() < 60:
                report.note(f"ray        {trials} trials: skipped, the time budget is spent")
                continue

            @ray.remote(num_gpus=1 / trials)
            def one(ds: Dataset, seed: int) -> int:
                result = train_trial(arch, ds, recipe, seed=seed, device="cuda",
                                     max_steps=s.ray_steps)
                return result.steps * recipe.batch_size

            def run(trials: int = trials, one: Any = one) -> dict[str, Any]:
                start = time.perf_counter()
                images = sum(ray.get([one.remote(shared, i) for i in range(trials)]))
                rate = images / (time.perf_counter() - start)
                return {"images_per_sec": rate, "extra": f"total of {trials} trials, "
                        "start-up included"}

            report.measure("ray", f"{trials} trial(s), {1 / trials:g} GPU each", run)
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------
# 3. block forms, 4. the preserved slice


def block_part(report: Report, arch: Arch, data: Dataset, dev: torch.device, s: Scale) -> None:
    import dataclasses

    recipe = TrainSpec(batch_size=s.batch, lr=0.1, augment=True, precision="bf16",
                       channels_last=True)
    for form in BLOCK_FORMS:
        if report.left() < 45:
            report.note(f"blocks     {form}: skipped, the time budget is spent")
            continue
        variant = dataclasses.replace(arch, block=form)

        def run(variant: Arch = variant) -> dict[str, Any]:
            rate, _ = our_trainer(variant, data, recipe, device=dev, warmup=s.warmup,
                                  steps=s.steps, cpu_low_precision=True)
            macs = count(variant, data.resolution, data.num_classes).flops
            return {"images_per_sec": rate, "mfu": mfu(macs, rate, dev, "bf16"),
                    "extra": variant.label()}

        report.measure("blocks", form, run)


def slice_part(report: Report, dev: torch.device, s: Scale, cifar_root: Path) -> None:
    from explorer.space import enumerate_spec
    from explorer.spec import load_spec

    spec = load_spec(REPO / "spaces" / "cifar10_preserved_small.yaml")
    chosen = [c for c in enumerate_spec(spec).candidates if c.arch.cardinalities[0] in (1, 8)]
    if (cifar_root / "cifar-10-batches-py" / "data_batch_1").is_file():
        cfg = spec.data.model_copy(update={
            "root": str(cifar_root), "download": False, "train_subset": s.slice_train,
            "test_subset": s.slice_test, "resolution": s.slice_resolution})
    else:
        report.note(f"slice      CIFAR-10 not under {cifar_root}: synthetic data of its shape "
                    "(timings hold, errors mean nothing)")
        cfg = DataSpec(dataset="synthetic", num_classes=10, resolution=s.slice_resolution,
                       train_subset=s.slice_train, test_subset=s.slice_test)
    data = load_dataset(cfg)
    recipe = revise(spec.train, epochs=s.slice_epochs, warmup_epochs=min(1, s.slice_epochs))
    for cand in chosen:
        for seed in (0, 1):
            if report.left() < 30:
                report.note(f"slice      {cand.arch.label()} seed {seed}: skipped, the time "
                            "budget is spent")
                continue

            def run(arch: Arch = cand.arch, seed: int = seed) -> dict[str, Any]:
                result = train_trial(arch, data, recipe, seed=seed, device=dev,
                                     cpu_low_precision=True)
                m = result.metrics
                if result.status != "finished" or m is None:
                    raise RuntimeError(result.error or "no epoch ran")
                return {"images_per_sec": m.train_images_per_sec, "test_error": m.test_error,
                        "epochs": result.epochs_completed, "status": result.status,
                        "extra": f"test error {m.test_error:.2f}% after "
                                 f"{result.epochs_completed} epochs ({cfg.dataset})"}

            report.measure("slice", f"{cand.arch.label()} seed {seed}", run)


# ---------------------------------------------------------------------------
# torchvision tests, when torchvision imports


def torchvision_tests(report: Report) -> None:
    files = sorted((REPO / "tests").glob("test_torchvision*.py"))
    version = _version("torchvision")
    if not files:
        report.note("torchvision tests: none (no tests/test_torchvision*.py)")
        return
    if version is None or version.startswith("does not import"):
        report.note(f"torchvision tests: skipped, torchvision {version or 'is absent'}")
        return
    for path in files:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        try:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except Exception as exc:  # pytest absent, or a missing fixture module
            report.note(f"torchvision tests: {path.name} does not load ({exc}); skipped")
            continue
        for name in sorted(n for n in dir(module) if n.startswith("test_")):
            fn = getattr(module, name)
            arguments = fn.__code__.co_varnames[:fn.__code__.co_argcount]
            if set(arguments) - {"tmp_path"}:  # needs other pytest fixtures
                report.note(f"torchvision tests: {path.name}::{name} needs fixtures; skipped")
                continue

            def run(fn: Callable[..., None] = fn, arguments: tuple[str, ...] = arguments
                    ) -> dict[str, Any]:
                with tempfile.TemporaryDirectory() as scratch:  # pytest's tmp_path, by hand
                    fn(*([Path(scratch)] if arguments else []))
                return {"extra": "passed"}

            report.measure("tv-test", name.removeprefix("test_")[:34], run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU, < 2 minutes")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cpu")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="skip what would not fit in this many seconds")
    parser.add_argument("--cifar-root", type=Path, default=SHARED_CIFAR,
                        help="folder holding cifar-10-batches-py (else synthetic data)")
    args = parser.parse_args()
    if args.device == "auto":
        dev = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    else:
        dev = torch.device(args.device)
    s = SMOKE_SCALE if args.smoke else GPU_SCALE
    if args.smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    report = Report(describe(dev), budget_s=args.budget_s)
    print(json.dumps(report.device), flush=True)
    arch = narrow_resnext29(s.width, 4, 4 if s.width >= 32 else 2, s.blocks)
    n_train = (s.warmup + s.steps + 1) * s.batch
    data = load_dataset(DataSpec(dataset="synthetic", num_classes=10, resolution=32,
                                 train_subset=n_train, test_subset=64))
    print(f"model: {arch.label()} widths {list(arch.widths)} blocks {s.blocks}, batch "
          f"{s.batch}, {s.steps} timed steps after {s.warmup}", flush=True)
    trainer_part(report, arch, data, dev, s, args.smoke)
    ray_part(report, arch, data, dev, s)
    block_part(report, arch, data, dev, s)
    slice_part(report, dev, s, args.cifar_root)
    torchvision_tests(report)
    failed = [r for r in report.rows if "error" in r]
    total = time.perf_counter() - report.started
    print(f"{len(report.rows)} measurements, {len(failed)} failed, {total:.0f} s", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".part")
        tmp.write_text(json.dumps({"device": report.device, "rows": report.rows,
                                   "notes": report.notes, "seconds": total,
                                   "smoke": args.smoke}, indent=2, default=str))
        tmp.replace(args.out)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
