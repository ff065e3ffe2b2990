"""Measured cost: latency, throughput and memory of a candidate on this machine."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import torch

from explorer.arch import Arch, make_arch
from explorer.console import CostBar
from explorer.cost import Cost, CostRow, Timing, measure_cost, measure_costs
from explorer.spec import TrainSpec


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
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


def test_measure_cost_on_cpu(tiny: Arch) -> None:
    rng = torch.get_rng_state()
    cost = measure_cost(
        tiny, TrainSpec(batch_size=16, precision="bf16"),
        Timing(num_classes=10, resolution=16, device="cpu", warmup=1, repeats=3, train_steps=2),
    )
    assert isinstance(cost, Cost)
    assert cost.device == "cpu" and cost.batch_size == 16 and cost.resolution == 16
    assert cost.precision == "fp32"  # fp32 on CPU unless asked
    assert cost.latency_ms > 0 and cost.train_images_per_sec > 0
    assert cost.peak_memory_bytes is None  # not measured on CPU (see explorer.cost)
    assert torch.equal(torch.get_rng_state(), rng)


def test_measure_costs_keeps_order_and_keys(tiny: Arch) -> None:
    from rich.console import Console

    wider = make_arch(
        template="cifar", stem_width=8, depths=(1, 1), widths=(32, 64), cardinality=4,
        bottleneck_width=4,
    )
    console = Console(file=io.StringIO(), width=100)
    seen: list[CostRow] = []
    with CostBar(console, 2) as bar:

        def measured(row: CostRow) -> None:
            seen.append(row)
            bar.measured(row)

        rows = measure_costs(
            [("a", tiny), ("b", wider)], TrainSpec(batch_size=8),
            Timing(resolution=8, device="cpu", warmup=1, repeats=2, train_steps=1),
            on_candidate=bar.starting, on_row=measured,
        )
    assert [r.key for r in rows] == ["a", "b"]
    assert seen == rows  # each row reported as it was measured, for the bar
    task = bar.progress.tasks[0]
    assert task.completed == 2 and task.description == f"b {wider.label()}"
    assert all(r.cost is not None and r.error is None for r in rows)
    record = rows[0].to_dict()
    assert record["key"] == "a" and record["label"] == tiny.label()
    assert record["train_images_per_sec"] > 0


def test_timer_follows_the_device() -> None:
    import time

    from explorer.cost import WallTimer, timer

    clock = timer(torch.device("cpu"))
    assert isinstance(clock, WallTimer)
    clock.start()
    time.sleep(0.05)
    assert 0.045 < clock.seconds() < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events need a CUDA GPU")
def test_timer_uses_cuda_events_on_a_gpu() -> None:
    from explorer.cost import CudaTimer, timer

    gpu = timer(torch.device("cuda"))
    assert isinstance(gpu, CudaTimer)
    gpu.start()
    torch.cuda._sleep(1_000_000)
    assert gpu.seconds() > 0
