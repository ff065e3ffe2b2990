"""One trial: it learns, resumes exactly, fails cleanly, and leaves global state alone."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from explorer.arch import Arch, make_arch
from explorer.console import train_with_progress
from explorer.data import Dataset, load_dataset
from explorer.spec import DataSpec, SpecError, TrainSpec, parse_spec
from explorer.train import (
    CHECKPOINT_NAME,
    EpochMetrics,
    TrialError,
    lr_at,
    revise,
    train_trial,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
HAVE_CIFAR10 = (SHARED_DATA / "cifar-10-batches-py" / "data_batch_1").is_file()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and on a busy shared machine
    OpenMP threads waiting for a descheduled partner make a test 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> Arch:
    return make_arch(
        template="cifar", stem_width=8, depths=(1, 1), widths=(16, 32), cardinality=2,
        bottleneck_width=4,
    )


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataSpec(dataset="digits", resolution=16))


@pytest.fixture(scope="module")
def small_digits() -> Dataset:
    return load_dataset(
        DataSpec(dataset="digits", resolution=8, train_subset=256, test_subset=100)
    )


def _recipe(**changes: object) -> TrainSpec:
    base = TrainSpec(epochs=2, batch_size=64, lr=0.2, precision="fp32", channels_last=False)
    return revise(base, **changes)


def test_tiny_candidate_learns_digits(tiny: Arch, digits: Dataset) -> None:
    seen: list[EpochMetrics] = []
    result = train_trial(tiny, digits, _recipe(epochs=6), seed=0, on_epoch=seen.append)
    assert result.status == "finished" and result.error is None
    assert result.epochs_completed == 6 and len(result.history) == 6
    assert tuple(seen) == result.history
    assert result.history[-1].train_loss < 0.6 * result.history[0].train_loss
    # Chance is 90%; measured 8-15% over seeds 0-2.
    assert result.metrics is not None and result.metrics.test_error < 50.0
    assert result.metrics.test_top5_error <= result.metrics.test_error
    assert result.metrics.peak_memory_bytes is None  # CPU
    assert result.device == "cpu" and result.precision == "fp32"


@pytest.mark.skipif(not HAVE_CIFAR10, reason=f"CIFAR-10 not found under {SHARED_DATA}")
def test_tiny_candidate_learns_cifar10_subset(tiny: Arch) -> None:
    data = load_dataset(
        DataSpec(
            dataset="cifar10", root=str(SHARED_DATA), download=False, resolution=16,
            train_subset=2000, test_subset=500,
        )
    )
    result = train_trial(tiny, data, _recipe(epochs=6), seed=0)
    assert result.status == "finished"
    assert result.history[-1].train_loss < result.history[0].train_loss - 0.3
    # Chance is 90%; measured 66-69% over seeds 0-2 (6 epochs, 16x16, crop+flip).
    assert result.metrics is not None and result.metrics.test_error < 77.0


def test_resume_after_interruption_matches_uninterrupted_run(
    tiny: Arch, small_digits: Dataset, tmp_path: Path
) -> None:
    recipe = _recipe(epochs=3, channels_last=True, augment=True)
    uninterrupted = train_trial(tiny, small_digits, recipe, seed=3)

    class Interrupted(Exception):
        pass

    def stop_after_first(m: EpochMetrics) -> None:
        if m.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_trial(tiny, small_digits, recipe, seed=3, checkpoint_dir=tmp_path,
                    on_epoch=stop_after_first)
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp files
    resumed = train_trial(tiny, small_digits, recipe, seed=3, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_completed == 3
    assert resumed.steps == uninterrupted.steps
    assert len(resumed.history) == len(uninterrupted.history) == 3
    for a, b in zip(resumed.history, uninterrupted.history, strict=True):
        assert a.same_result(b), (a, b)

    # A finished trial rerun with its directory does no more work.
    calls: list[EpochMetrics] = []
    again = train_trial(tiny, small_digits, recipe, seed=3, checkpoint_dir=tmp_path,
                        on_epoch=calls.append)
    assert calls == [] and again.resumed_from_epoch == 3
    assert again.metrics is not None and uninterrupted.metrics is not None
    assert again.metrics.same_result(uninterrupted.metrics)


def test_checkpoint_of_another_trial_is_refused(
    tiny: Arch, small_digits: Dataset, tmp_path: Path
) -> None:
    train_trial(tiny, small_digits, _recipe(epochs=1), seed=0, checkpoint_dir=tmp_path)
    with pytest.raises(TrialError, match=r"different trial .*seed"):
        train_trial(tiny, small_digits, _recipe(epochs=1), seed=1, checkpoint_dir=tmp_path)
    with pytest.raises(TrialError, match=r"different trial .*recipe"):
        train_trial(tiny, small_digits, _recipe(epochs=1, lr=0.1), seed=0,
                    checkpoint_dir=tmp_path)
    # The seed list picks trials, it is not part of one: an equal recipe resumes.
    again = train_trial(tiny, small_digits, _recipe(epochs=1, seeds=(0, 1)), seed=0,
                        checkpoint_dir=tmp_path)
    assert again.resumed_from_epoch == 1


def test_same_seed_same_result_other_seed_differs(tiny: Arch, small_digits: Dataset) -> None:
    a = train_trial(tiny, small_digits, _recipe(epochs=1), seed=5)
    b = train_trial(tiny, small_digits, _recipe(epochs=1), seed=5)
    c = train_trial(tiny, small_digits, _recipe(epochs=1), seed=6)
    assert a.metrics and b.metrics and c.metrics
    assert a.metrics.same_result(b.metrics)
    assert a.metrics.train_loss != c.metrics.train_loss


def test_divergence_ends_the_trial_as_failed(tiny: Arch, small_digits: Dataset) -> None:
    # A real divergence: an absurd learning rate with weight decay blows the weights up.
    result = train_trial(tiny, small_digits, _recipe(epochs=3, lr=1e6), seed=0)
    assert result.status == "failed"
    assert result.error is not None and "non-finite training loss" in result.error
    assert "\n" not in result.error
    assert result.epochs_completed == 0 and result.metrics is None


def _overcommits() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1"
    except OSError:
        return False


@pytest.mark.skipif(_overcommits(), reason="vm.overcommit_memory=1 would grant a 4 TiB tensor")
def test_out_of_memory_ends_the_trial_as_failed(small_digits: Dataset) -> None:
    # A real allocation failure: one stage 2**38 channels wide needs a 4 TiB weight.
    huge = make_arch(
        template="cifar", stem_width=8, depths=(1,), widths=(2**38,), cardinality=1,
        bottleneck_width=4,
    )
    result = train_trial(huge, small_digits, _recipe(epochs=1), seed=0)
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("out of memory")
    assert "\n" not in result.error and result.history == ()


def test_max_steps_cuts_short_without_checkpointing_the_partial_epoch(
    tiny: Arch, small_digits: Dataset, tmp_path: Path
) -> None:
    # 256 images at batch 64: 4 steps an epoch; 6 steps end half-way through epoch 2.
    result = train_trial(tiny, small_digits, _recipe(epochs=3), seed=0, max_steps=6,
                         checkpoint_dir=tmp_path)
    assert result.status == "finished" and result.steps == 6
    assert result.epochs_completed == 1 and len(result.history) == 2
    payload = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert payload["epoch"] == 1 and payload["step"] == 4


def test_global_state_is_left_as_found(tiny: Arch, small_digits: Dataset) -> None:
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    train_trial(tiny, small_digits, _recipe(epochs=1), seed=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_spec_blocks_are_accepted(tiny: Arch) -> None:
    data = DataSpec(dataset="digits", resolution=8, train_subset=128, test_subset=50)
    train = TrainSpec(epochs=1, batch_size=64, precision="bf16", seeds=(7,))
    assert train.seeds == (7,) and train.epochs == 1
    result = train_trial(tiny, data, train, seed=7)
    assert result.status == "finished" and result.precision == "fp32"  # fp32 on CPU


def test_lr_schedules() -> None:
    cosine = TrainSpec(epochs=4, batch_size=256, lr=0.1, schedule="cosine")
    assert lr_at(0, 10, cosine) == pytest.approx(0.2)  # scaled for batch 256
    assert lr_at(20, 10, cosine) == pytest.approx(0.1)
    assert lr_at(39, 10, cosine) < 0.001
    step = TrainSpec(epochs=300, batch_size=128, lr=0.1, schedule="step")
    assert lr_at(149 * 10 + 9, 10, step) == pytest.approx(0.1)
    assert lr_at(150 * 10, 10, step) == pytest.approx(0.01)  # the paper's epoch 150
    assert lr_at(225 * 10, 10, step) == pytest.approx(0.001)  # and 225
    warm = TrainSpec(epochs=4, batch_size=128, lr=0.1, warmup_epochs=1)
    assert lr_at(0, 10, warm) == pytest.approx(0.01)
    assert lr_at(9, 10, warm) == pytest.approx(0.1)
    assert lr_at(10, 10, warm) == pytest.approx(0.1)
    assert math.isclose(lr_at(25, 10, warm), 0.05)


def test_streamed_folder_trains_and_resumes_exactly(tiny: Arch, tmp_path: Path) -> None:
    """An image folder streamed by loader workers: the same seed gives the same run, with
    or without an interruption, with 0 or 2 workers; the global RNG is left alone."""
    from PIL import Image

    from explorer.data import list_image_folder

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for c in ("a", "b", "c"):
            for i in range(n):
                path = tmp_path / "images" / split / c / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    files = list_image_folder(DataSpec(dataset="imagefolder", root=str(tmp_path / "images"),
                                       resolution=16, pipeline="stream"))
    recipe = _recipe(epochs=2, batch_size=8, augment=True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    straight = train_trial(tiny, files, recipe, seed=1, workers=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert straight.status == "finished" and straight.steps == 2 * (36 // 8)

    class Interrupted(Exception):
        pass

    def stop(m: EpochMetrics) -> None:
        raise Interrupted

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupted):
        train_trial(tiny, files, recipe, seed=1, workers=2, checkpoint_dir=ckpt, on_epoch=stop)
    resumed = train_trial(tiny, files, recipe, seed=1, workers=2, checkpoint_dir=ckpt)
    assert resumed.resumed_from_epoch == 1
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a.same_result(b), (a, b)


@pytest.mark.parametrize(("milestones", "gamma"), [((30, 60, 90), 0.1), ((2, 3), 0.5), (None, 0.1)])
def test_step_schedule_matches_multisteplr(milestones: tuple[int, ...] | None,
                                          gamma: float) -> None:
    """Every optimizer step's rate is MultiStepLR's, stepped once per epoch."""
    epochs, steps = (100, 3) if milestones == (30, 60, 90) else (6, 4)
    recipe = TrainSpec(epochs=epochs, batch_size=256, lr=0.1, schedule="step",
                       lr_milestones=milestones, lr_gamma=gamma)
    peak = 0.1 * 256 / 128
    expected_milestones = list(milestones or (epochs // 2, 3 * epochs // 4))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, expected_milestones, gamma)
    for epoch in range(epochs):
        for i in range(steps):
            ours = lr_at(epoch * steps + i, steps, recipe)
            assert ours == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12), (epoch, i)
        optimizer.step()
        reference.step()


def test_warmup_composes_with_steps() -> None:
    recipe = TrainSpec(epochs=10, schedule="step", lr_milestones=(5,), warmup_epochs=2)
    assert lr_at(0, 10, recipe) == pytest.approx(0.1 / 20)
    assert lr_at(19, 10, recipe) == pytest.approx(0.1)
    assert lr_at(49, 10, recipe) == pytest.approx(0.1)
    assert lr_at(50, 10, recipe) == pytest.approx(0.01)


@pytest.mark.parametrize(("changes", "message"), [
    ({"lr_milestones": (3,)}, "schedule: step only"),
    ({"schedule": "step", "lr_milestones": (4, 2)}, "strictly increasing"),
    ({"schedule": "step", "lr_milestones": (10,)}, "before the last"),
    ({"schedule": "step", "lr_gamma": 1.5}, "lr_gamma"),
])
def test_bad_milestones_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainSpec(epochs=10, **changes)


def test_bad_recipe_is_one_clear_line() -> None:
    # Built in code, a bad recipe is refused at construction, naming every problem...
    with pytest.raises(ValidationError, match="schedule") as info:
        TrainSpec(schedule="linear", epochs=0)
    assert {e["loc"] for e in info.value.errors()} == {("schedule",), ("epochs",)}
    # ... and in a spec, each is one line.
    text = "name: t\nspaces: {s: {}}\ntrain: {schedule: linear, epochs: 0}\n"
    with pytest.raises(SpecError) as spec_info:
        parse_spec(text, "t.yaml")
    lines = str(spec_info.value).splitlines()
    assert len(lines) == 2 and all(line.startswith("t.yaml:3: train.") for line in lines)
    assert "train.schedule: should be 'cosine' or 'step'" in lines[1]
    assert "train.epochs: should be greater than 0" in lines[0]


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -0.1},
        {"schedule": "linear"},
        {"precision": "fp8"},
        {"label_smoothing": 1.0},
        {"label_smoothing": -0.1},
        {"warmup_epochs": -1},
        {"epochs": 2, "warmup_epochs": 3},
    ],
)
def test_every_recipe_rule_is_checked_by_the_spec(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrainSpec(**bad)  # type: ignore[arg-type]


def test_a_revised_recipe_is_validated_again() -> None:
    recipe = TrainSpec(epochs=4, warmup_epochs=2)
    assert revise(recipe, epochs=3).epochs == 3 and recipe.epochs == 4
    with pytest.raises(ValidationError, match="must be at most epochs"):
        revise(recipe, epochs=1)


def test_train_with_progress_reports_each_epoch(tiny: Arch, small_digits: Dataset) -> None:
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=False)
    result = train_with_progress(
        tiny, small_digits, _recipe(epochs=3, seeds=(2,)), epochs=2, device="cpu",
        console=console,
    )
    assert result.status == "finished" and result.seed == 2 and result.epochs_completed == 2
    text = buffer.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "img/s" in text
