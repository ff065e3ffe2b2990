"""One trial: a candidate trained with one recipe and one seed, checkpointed each epoch.

Small datasets are resident on the trial's device as uint8; each step
gathers a batch, crops and flips it in one indexing op and normalises it in
one fused op (see `explorer.data`). There is no per-sample Python and no
DataLoader, which is what makes small-image training fast. A streamed image
folder comes batch by batch from DataLoader workers instead; the loop reads
either through the same `Feed`.

Reproducibility: all randomness comes from the trial's seed. The model is
initialised from torch's global RNG inside `torch.random.fork_rng` (seeded
with a value derived from the seed), so the caller's global RNG state is left
as it was. Data order and augmentation come from one explicit CPU
`torch.Generator`, checkpointed with the model, so a resumed trial continues
the exact random stream (a streamed folder's crops too: each item's generator
is seeded from that stream and the item's position in the epoch). On CPU the trial runs with
`torch.use_deterministic_algorithms(True)`; every global flag set here is
restored on exit.

The recipe is the spec's `TrainSpec` and the data the spec's `DataSpec`,
validated when they were built; a recipe changed in code goes through
`revise`, so it is validated again. This module does not import Ray (the sweep
wraps `train_trial` in a worker) nor draw on a terminal (`explorer.console`
does, through `on_epoch` and `on_step`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import math
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from explorer.arch import Arch
from explorer.data import (
    Dataset,
    Feed,
    ImageFiles,
    Normalizer,
    load_data,
    make_feed,
    steps_per_epoch,
)
from explorer.errors import ExplorerError
from explorer.files import atomic_write
from explorer.metrics import EpochMetrics, Provenance, TrialResult, outcome
from explorer.spec import DataSpec, TrainSpec

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointNotWritten",
    "ModelBuilder",
    "NonFiniteLoss",
    "TrialError",
    "TrialSetup",
    "TrialState",
    "autocast",
    "build_seeded",
    "checkpoint_damage",
    "evaluate",
    "lr_at",
    "make_setup",
    "make_state",
    "provenance",
    "read_initial_weights",
    "release_memory",
    "resolve_device",
    "resolve_precision",
    "revise",
    "starting_from",
    "synchronize",
    "train_step",
    "train_trial",
    "trial_settings",
]

_Precision = Literal["fp32", "bf16", "fp16"]

CHECKPOINT_NAME = "last.pt"
_CHECKPOINT_FORMAT = 1
_EVAL_BATCH = 512
_VERIFY_CHUNK = 1 << 20  # bytes read at a time when checking a checkpoint's CRCs
_NONFINITE_CHECK_EVERY = 50
_MAX_DEFAULT_WORKERS = 16  # loader processes when the caller names none (a big host's threads)

ModelBuilder = Callable[[Arch, int], nn.Module]
_EpochCallback = Callable[["EpochMetrics"], None]
_StepCallback = Callable[[int, int], None]
_StartCallback = Callable[[Provenance], None]
_NoticeCallback = Callable[[str], None]


class TrialError(ExplorerError):
    """A trial that cannot start as asked; the message is one line for a person."""


def revise(recipe: TrainSpec, **changes: object) -> TrainSpec:
    """`recipe` with some fields changed, validated again like the spec's own block (a spec
    model's model_copy validates its update): a bad change is refused here, not found by the
    trainer."""
    return recipe.model_copy(update=changes)


class CheckpointNotWritten(TrialError):
    """A checkpoint could not be written (its disk full or read-only): a set-up problem every
    trial would meet, not this trial's failure. The previous checkpoint is intact."""


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite: the trial has diverged."""


# ---------------------------------------------------------------------------
# Schedule, precision, device


def lr_at(step: int, steps_in_epoch: int, recipe: TrainSpec) -> float:
    """Learning rate for optimizer step `step` (0-based), set per step.

    Linear warm-up over `warmup_epochs`, then cosine to zero, or steps: ×`lr_gamma`
    at each of the recipe's milestones (epochs; see `TrainSpec.milestones`).
    """
    peak = recipe.peak_lr
    total = recipe.epochs * steps_in_epoch
    warm = round(recipe.warmup_epochs * steps_in_epoch)
    if step < warm:
        return peak * (step + 1) / warm
    if recipe.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    epoch = step // steps_in_epoch
    return peak * recipe.lr_gamma ** sum(epoch >= m for m in recipe.milestones)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrialError("device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return dev


def resolve_precision(
    precision: _Precision, device: torch.device, *, cpu_low_precision: bool = False
) -> _Precision:
    """fp32 on CPU unless `cpu_low_precision`: CPU autocast is often slower, and
    the spec's default (bf16) is chosen for GPUs. fp16 on CPU is always fp32."""
    if device.type == "cpu" and (not cpu_low_precision or precision == "fp16"):
        return "fp32"
    return precision


_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
}


def autocast(device: torch.device, precision: _Precision) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def _derive_seed(seed: int, purpose: str) -> int:
    """Independent streams from one trial seed (init vs data), stable across runs."""
    tag = int.from_bytes(purpose.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([seed, tag]).generate_state(1)[0])


@contextlib.contextmanager
def trial_settings(device: torch.device) -> Iterator[None]:
    """Global torch flags a trial wants, restored afterwards.

    CPU: deterministic algorithms (bitwise-reproducible resumes). CUDA: cuDNN
    autotuning and TF32 matmuls (speed; GPU runs are seeded, not bitwise).
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    try:
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        torch.backends.cuda.matmul.allow_tf32 = saved[3]
        torch.backends.cudnn.allow_tf32 = saved[4]


def _default_builder(arch: Arch, num_classes: int) -> nn.Module:
    from explorer.models import build_model

    return build_model(arch, num_classes)


def build_seeded(build: ModelBuilder, arch: Arch, num_classes: int, seed: int) -> nn.Module:
    """Build a model from a seeded global RNG without changing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_derive_seed(seed, "init"))
        return build(arch, num_classes)


def read_initial_weights(path: Path, arch: Arch, num_classes: int,
                         build: ModelBuilder | None = None) -> dict[str, torch.Tensor]:
    """The weights a trial starts from (`explorer train --init PATH`), in `arch`'s form.

    The file is a torch.save'd state_dict (torchvision's layout, or any block form of
    explorer's) or an explorer trial checkpoint (its model is taken). It is checked
    against `arch` on the meta device, before anything trains: a TrialError names the
    first key whose name or shape differs.
    """
    from explorer.models import WeightsMismatch, fit_state

    damage = checkpoint_damage(path) if zipfile.is_zipfile(path) else None
    if damage is not None:  # a pre-zip torch file (old torchvision weights) has no CRCs
        raise TrialError(f"{path} is damaged ({damage})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrialError(f"{path} is not a readable torch file ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from exc
    if isinstance(payload, dict) and payload.get("format") == _CHECKPOINT_FORMAT:
        payload = payload.get("model")
    if not isinstance(payload, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise TrialError(f"{path} holds neither a state_dict nor an explorer checkpoint")
    with torch.device("meta"):
        like = (build or _default_builder)(arch, num_classes).state_dict()
    try:
        return fit_state(payload, like)
    except WeightsMismatch as problem:
        raise TrialError(f"{path} does not fit {arch.label()}: {problem}") from None


def starting_from(weights: dict[str, torch.Tensor], build: ModelBuilder | None = None
                  ) -> ModelBuilder:
    """A builder whose models start from `weights` (read_initial_weights's) instead of
    their seeded initialisation."""
    def build_from(arch: Arch, num_classes: int) -> nn.Module:
        model = (build or _default_builder)(arch, num_classes)
        model.load_state_dict(weights)
        return model

    return build_from


# ---------------------------------------------------------------------------
# The trial's state, and checkpoints


@dataclass
class TrialState:
    """Everything that changes during a trial and goes into a checkpoint."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator
    step: int = 0
    epoch: int = 0
    resumed_from: int = 0
    history: list[EpochMetrics] = dataclasses.field(default_factory=list)


def _fingerprint(
    arch: Arch, num_classes: int, data: Dataset | ImageFiles, recipe: TrainSpec, seed: int,
    augment: bool,
    precision: _Precision,
) -> dict[str, Any]:
    return {
        "arch": arch.key,
        "num_classes": num_classes,
        "data": data.describe(),
        # Everything that identifies the training but the seed list: the trial has one seed.
        "recipe": recipe.model_dump(mode="json", exclude={"seeds"}),
        "seed": seed,
        "augment": augment,
        "precision": precision,
    }


def _save_checkpoint(path: Path, state: TrialState, fingerprint: dict[str, Any]) -> None:
    """Write atomically and to disk: a crash leaves the previous checkpoint intact.

    torch.save is given a Python file, not the path: its own writer reports a full disk
    as "unexpected pos N vs M", Python's file as ENOSPC. Any error writing raises
    CheckpointNotWritten naming the file, the epoch and the reason.
    """
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "step": state.step,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": None if state.scaler is None else state.scaler.state_dict(),
        "generator": state.generator.get_state(),
        "history": [asdict(m) for m in state.history],
    }

    def write(tmp: Path) -> None:
        with _crcs_written(), open(tmp, "wb") as stream:
            torch.save(payload, stream)

    try:
        atomic_write(path, write, fsync=True)
    except OSError as problem:
        reason = os.strerror(problem.errno) if problem.errno else _first_line(problem)
        raise CheckpointNotWritten(
            f"cannot write the checkpoint {path} after epoch {state.epoch}: {reason}; make "
            "room there and run the same command again (it resumes from the last checkpoint "
            "written)") from problem


def _crcs_written() -> contextlib.AbstractContextManager[Any]:
    """torch.save writes each zip member's CRC-32 unless told not to (torch 2.6's
    serialization config); a checkpoint without them could never be verified."""
    try:
        from torch.utils.serialization import config
    except ImportError:  # before torch 2.6: always written
        return contextlib.nullcontext()
    return config.patch({"save.compute_crc32": True})  # type: ignore[attr-defined]


def checkpoint_damage(path: Path) -> str | None:
    """What is wrong with the torch file at `path`, or None when every byte checks out.

    torch.save writes a zip archive whose every member carries a CRC-32 of its bytes, and
    torch.load checks none of them: a checkpoint damaged in place (its size intact) loads,
    and the trial would go on from wrong weights. Reading each member through zipfile
    checks its CRC. That was measured cheaper than a checksum of our own (a 195 MB
    ResNeXt-50 checkpoint: 0.08 s against 0.17 s for its sha256; see
    benchmarks/checkpoint_verify.py and docs/ARCHITECTURE.md), needs
    no second file kept in step with the checkpoint, and covers checkpoints written before
    this check, which carry the same CRCs. A file that is no zip archive at all (the
    header damaged, or cut short) is damaged too.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    while member.read(_VERIFY_CHUNK):
                        pass
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        return _first_line(exc)
    return None


def _set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint out of the way (kept for inspection, never read again);
    returns its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, target)
    return target


def _load_checkpoint(
    path: Path, state: TrialState, fingerprint: dict[str, Any], device: torch.device
) -> None:
    """Restore `state` from `path`, refusing a checkpoint of a different trial; `path` was
    verified (checkpoint_damage)."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise TrialError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}); delete it to start over"
        ) from exc
    if payload.get("format") != _CHECKPOINT_FORMAT:
        raise TrialError(f"{path} has checkpoint format {payload.get('format')}; delete it")
    theirs = payload["fingerprint"]
    if theirs != fingerprint:
        diff = sorted(k for k in fingerprint if theirs.get(k) != fingerprint[k])
        raise TrialError(
            f"{path} belongs to a different trial ({', '.join(diff)} differ); use another "
            f"checkpoint directory or delete it"
        )
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    if state.scaler is not None and payload["scaler"] is not None:
        state.scaler.load_state_dict(payload["scaler"])
    state.generator.set_state(payload["generator"].cpu())
    state.epoch = int(payload["epoch"])
    state.step = int(payload["step"])
    state.history = [EpochMetrics(**m) for m in payload["history"]]


# ---------------------------------------------------------------------------
# The loop


@dataclass(frozen=True)
class TrialSetup:
    """What stays fixed during a trial."""

    recipe: TrainSpec
    device: torch.device
    precision: _Precision
    augment: bool
    normalize: Normalizer
    loss_fn: nn.Module
    feed: Feed
    steps_in_epoch: int


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_epoch(
    setup: TrialSetup, state: TrialState, max_steps: int | None, on_step: _StepCallback | None
) -> tuple[float, float, int, float, float]:
    """One pass over the training set: (loss, error %, images, lr, seconds).

    Loss and correct counts accumulate on the device and are read once per
    epoch (and every few dozen steps for the divergence check), so the GPU
    never waits for the host within an epoch.
    """
    dev = setup.device
    loss_sum = torch.zeros((), device=dev, dtype=torch.float32)
    correct = torch.zeros((), device=dev, dtype=torch.int64)
    images = 0
    lr = 0.0
    start = time.perf_counter()
    batches = setup.feed.train_epoch(
        setup.recipe.batch_size, state.generator, setup.normalize, augment=setup.augment)
    for i, (x, y) in enumerate(batches):
        if max_steps is not None and state.step >= max_steps:
            break
        lr = lr_at(state.step, setup.steps_in_epoch, setup.recipe)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        loss, hits = train_step(setup, state, x, y)
        loss_sum += loss.float() * y.numel()
        correct += hits
        images += y.numel()
        state.step += 1
        if state.step % _NONFINITE_CHECK_EVERY == 0:
            _check_finite(loss_sum, state)
        if on_step is not None:
            on_step(i + 1, setup.steps_in_epoch)
    synchronize(dev)
    seconds = time.perf_counter() - start
    _check_finite(loss_sum, state)
    images = max(images, 1)
    return float(loss_sum) / images, 100.0 * (1 - int(correct) / images), images, lr, seconds


def train_step(
    setup: TrialSetup, state: TrialState, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast(setup.device, setup.precision):
        logits = state.forward(x)
        loss = setup.loss_fn(logits.float(), y)
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        loss.backward()
        state.optimizer.step()
    return loss.detach(), (logits.detach().argmax(dim=1) == y).sum()


def _check_finite(loss_sum: torch.Tensor, state: TrialState) -> None:
    if not torch.isfinite(loss_sum):
        lr = state.optimizer.param_groups[0]["lr"]
        raise NonFiniteLoss(
            f"non-finite training loss ({float(loss_sum)}) by step {state.step} of epoch "
            f"{state.epoch + 1} at lr {lr:g}; lower the learning rate or use fp32"
        )


@torch.no_grad()
def evaluate(setup: TrialSetup, state: TrialState) -> tuple[float, float]:
    """Top-1 and top-5 error (%) on the test split, batch norm in eval mode."""
    state.model.eval()
    wrong1 = torch.zeros((), device=setup.device, dtype=torch.int64)
    wrong5 = torch.zeros((), device=setup.device, dtype=torch.int64)
    for x, y in setup.feed.eval_epoch(_EVAL_BATCH, setup.normalize):
        with autocast(setup.device, setup.precision):
            logits = state.forward(x)
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        wrong1 += (~hit[:, 0]).sum()
        wrong5 += (~hit.any(dim=1)).sum()
    state.model.train()
    n = max(1, setup.feed.num_test)
    return 100.0 * int(wrong1) / n, 100.0 * int(wrong5) / n


def _run_epoch(
    setup: TrialSetup, state: TrialState, max_steps: int | None, on_step: _StepCallback | None
) -> EpochMetrics:
    dev = setup.device
    start = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    loss, error, images, lr, train_seconds = _train_epoch(setup, state, max_steps, on_step)
    test_error, test_top5 = evaluate(setup, state)
    peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None
    return EpochMetrics(
        epoch=state.epoch + 1,
        train_loss=loss,
        train_error=error,
        test_error=test_error,
        test_top5_error=test_top5,
        lr=lr,
        seconds=time.perf_counter() - start,
        train_images_per_sec=images / max(train_seconds, 1e-9),
        peak_memory_bytes=peak,
        steps=state.step,
    )


# ---------------------------------------------------------------------------
# Public entry points


def train_trial(
    arch: Arch,
    data: Dataset | ImageFiles | DataSpec,
    recipe: TrainSpec,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    num_classes: int | None = None,
    checkpoint_dir: str | Path | None = None,
    max_steps: int | None = None,
    on_epoch: _EpochCallback | None = None,
    on_step: _StepCallback | None = None,
    on_start: _StartCallback | None = None,
    on_notice: _NoticeCallback | None = None,
    cpu_low_precision: bool = False,
    build: ModelBuilder | None = None,
) -> TrialResult:
    """Train `arch` on `data` with `recipe` and `seed`; resume from `checkpoint_dir`.

    `on_start` hears what actually runs (device, precision, ...; see Provenance)
    once the model is built and any checkpoint loaded, before the first step.
    A streamed image folder (`ImageFiles`, or a ``data`` block that streams) is
    decoded by `workers` loader processes; None means one per thread torch may use,
    at most 16 (the sweep passes the trial's CPUs).

    A checkpoint is written after every complete epoch, before `on_epoch`
    runs, so a callback that raises (to stop a trial) loses nothing. A rerun
    with the same directory resumes after the last complete epoch and ends
    with the same metrics as an uninterrupted run (bitwise on CPU).
    `max_steps` caps the optimizer steps of the whole trial (tests,
    benchmarks); an epoch it cuts short is evaluated and reported but not
    checkpointed, so a later run without the cap redoes it.

    A checkpoint is verified before it is resumed (checkpoint_damage): a damaged one is
    set aside (renamed ``last.pt.damaged-<UTC time>``), the trial starts over from epoch 0
    (``resumed_from_epoch`` 0) and `on_notice` hears one line saying so (without it, the
    line is logged as a warning).

    A diverged loss or an out-of-memory error (CUDA, or a refused host
    allocation) ends the trial as "failed" with the reason, and cached GPU
    memory is released; other exceptions (bugs, a bad checkpoint, a callback's)
    propagate.
    """
    dev = resolve_device(device)
    ds = data if isinstance(data, (Dataset, ImageFiles)) else load_data(data)
    loaders = workers if workers is not None else min(_MAX_DEFAULT_WORKERS,
                                                      torch.get_num_threads())
    classes = num_classes if num_classes is not None else ds.num_classes
    if classes < ds.num_classes:
        raise TrialError(f"num_classes {classes} is less than the dataset's {ds.num_classes}")
    precision = resolve_precision(recipe.precision, dev, cpu_low_precision=cpu_low_precision)
    augment = ds.augment if recipe.augment is None else recipe.augment
    fingerprint = _fingerprint(arch, classes, ds, recipe, seed, augment, precision)
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    states: list[TrialState] = []
    failure: str | None = None
    with trial_settings(dev):
        try:
            # `_attempt` holds the device tensors in its own frame, so they are
            # freed as soon as a failure has been caught.
            setup = functools.partial(make_setup, ds, recipe, dev, precision, augment,
                                      workers=loaders)
            notice = on_notice or logging.getLogger(__name__).warning
            _attempt(arch, classes, setup, seed, build, ckpt, fingerprint, max_steps,
                     on_epoch, on_step, on_start, notice, states)
        except NonFiniteLoss as exc:
            failure = str(exc)
        except torch.OutOfMemoryError as exc:
            failure = f"out of memory at batch size {recipe.batch_size}: {_first_line(exc)}"
        except RuntimeError as exc:
            if not _is_cpu_out_of_memory(exc):
                raise
            failure = f"out of memory at batch size {recipe.batch_size}: {_first_line(exc)}"
    state = states[0] if states else None
    ran = provenance(dev, precision, recipe, state.resumed_from if state else 0)
    result = _result(state, failure, ran, seed)
    if failure is not None:
        states.clear()
        release_memory(dev)
    return result


def _attempt(
    arch: Arch, classes: int, make: Callable[[], TrialSetup], seed: int,
    build: ModelBuilder | None,
    ckpt: Path | None, fingerprint: dict[str, Any], max_steps: int | None,
    on_epoch: _EpochCallback | None, on_step: _StepCallback | None,
    on_start: _StartCallback | None, on_notice: _NoticeCallback, states: list[TrialState],
) -> None:
    setup = make()
    rec, dev, precision = setup.recipe, setup.device, setup.precision
    state = make_state(arch, classes, rec, seed, dev, precision, build)
    states.append(state)
    if ckpt is not None and ckpt.is_file():
        damage = checkpoint_damage(ckpt)
        if damage is None:
            _load_checkpoint(ckpt, state, fingerprint, dev)
            state.resumed_from = state.epoch
        else:
            kept = _set_aside(ckpt)
            on_notice(f"checkpoint {ckpt} is damaged ({damage}); set aside as {kept.name}, "
                      "the trial starts over from epoch 0")
    if on_start is not None:
        on_start(provenance(dev, precision, rec, state.resumed_from))
    _loop(setup, state, ckpt, fingerprint, max_steps, on_epoch, on_step)


def make_setup(
    ds: Dataset | ImageFiles, rec: TrainSpec, dev: torch.device, precision: _Precision,
    augment: bool, *, workers: int = 0,
) -> TrialSetup:
    # The input is produced directly in the autocast dtype: half the bytes, and
    # the first convolution would cast it anyway.
    normalize = Normalizer(
        ds.mean, ds.std, dtype=_DTYPES[precision], device=dev, channels_last=rec.channels_last
    )
    return TrialSetup(
        recipe=rec,
        device=dev,
        precision=precision,
        augment=augment,
        normalize=normalize,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=rec.label_smoothing),
        feed=(feed := make_feed(ds, dev, workers=workers)),
        steps_in_epoch=steps_per_epoch(feed.num_train, rec.batch_size),
    )


def make_state(
    arch: Arch, classes: int, rec: TrainSpec, seed: int, dev: torch.device, precision: _Precision,
    build: ModelBuilder | None,
) -> TrialState:
    model = build_seeded(build or _default_builder, arch, classes, seed).to(dev)
    if rec.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.train()
    forward: Callable[[torch.Tensor], torch.Tensor] = (
        torch.compile(model) if rec.compile else model
    )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=rec.peak_lr, momentum=rec.momentum, nesterov=rec.nesterov,
        weight_decay=rec.weight_decay,
    )
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    generator = torch.Generator().manual_seed(_derive_seed(seed, "data"))
    return TrialState(model, forward, optimizer, scaler, generator)


def _loop(
    setup: TrialSetup,
    state: TrialState,
    ckpt: Path | None,
    fingerprint: dict[str, Any],
    max_steps: int | None,
    on_epoch: _EpochCallback | None,
    on_step: _StepCallback | None,
) -> None:
    while state.epoch < setup.recipe.epochs:
        if max_steps is not None and state.step >= max_steps:
            return
        before = state.step
        metrics = _run_epoch(setup, state, max_steps, on_step)
        state.history.append(metrics)
        if state.step - before < setup.steps_in_epoch:
            if on_epoch is not None:
                on_epoch(metrics)
            return
        state.epoch += 1
        if ckpt is not None:
            _save_checkpoint(ckpt, state, fingerprint)
        if on_epoch is not None:
            on_epoch(metrics)


def provenance(dev: torch.device, precision: _Precision, rec: TrainSpec,
               resumed_from: int) -> Provenance:
    """What runs: the resolved device and precision, not what the recipe asked for."""
    return Provenance(
        device=str(dev),
        gpu_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        precision=precision,
        channels_last=rec.channels_last,
        compiled=rec.compile,
        torch_version=torch.__version__,
        resumed_from_epoch=resumed_from,
    )


def _result(
    state: TrialState | None, failure: str | None, ran: Provenance, seed: int,
) -> TrialResult:
    history = tuple(state.history) if state else ()
    return TrialResult(
        status=outcome(failed=bool(failure)),
        error=failure,
        metrics=history[-1] if history else None,
        history=history,
        epochs_completed=state.epoch if state else 0,
        steps=state.step if state else 0,
        seed=seed,
        provenance=ran,
    )


def _is_cpu_out_of_memory(exc: BaseException) -> bool:
    """torch reports a failed host allocation as a plain RuntimeError."""
    return "DefaultCPUAllocator: can't allocate memory" in str(exc)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def release_memory(dev: torch.device) -> None:
    """Give cached blocks back after a failure, so the next trial on the GPU can use them."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
