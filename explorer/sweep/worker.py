"""The Tune trainable, run in a Ray worker: one planned trial trained, its progress
reported to the driver; and the sweep's data in the form the object store shares
without copies. Ray imports this module by name in every worker to unpickle `run_trial`."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from explorer.metrics import EpochMetrics, Provenance
from explorer.plan import TrialPlan
from explorer.spec import DataSpec
from explorer.sweep.protocol import EPOCH, FINAL, HALT, NOTICE, PROVENANCE, START

if TYPE_CHECKING:
    from torch import nn

    from explorer.arch import Arch
    from explorer.data import Dataset, ImageFiles

__all__ = ["run_trial", "shared_data"]


def run_trial(config: dict[str, Any], shared: Any = None) -> None:
    """The Tune trainable: train one planned trial, reporting each epoch and the end.

    `shared` is the sweep's data as the driver put it in the object store (see
    `shared_data`): its arrays are mapped from the node's shared memory, not copied.
    """
    from explorer.train import CheckpointNotWritten, train_trial

    plan = TrialPlan.from_config(config["plan"])
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    node = ray.get_runtime_context().get_node_id()
    tune.report({"kind": START, "node": node, "device": device, "epoch": 0})

    def on_start(ran: Provenance) -> None:
        tune.report({"kind": PROVENANCE, "epoch": 0, "node": node, **ran.to_dict()})

    def on_epoch(metrics: EpochMetrics) -> None:
        tune.report({"kind": EPOCH, **metrics.to_dict()})

    def on_notice(message: str) -> None:
        tune.report({"kind": NOTICE, "epoch": 0, "message": message})

    poison = config.get("fail_trial")
    try:
        result = train_trial(
            plan.arch, _unshared(shared) if shared is not None else _dataset(plan.data),
            plan.train, seed=plan.seed, device=device, num_classes=plan.num_classes,
            workers=int(config.get("workers", 1)),
            checkpoint_dir=Path(config["checkpoint_root"]) / plan.trial_key,
            max_steps=config.get("max_steps"), on_epoch=on_epoch, on_start=on_start,
            on_notice=on_notice,
            build=_diverging_builder if poison and plan.trial_key.startswith(poison) else None,
        )
    except CheckpointNotWritten as problem:
        # Not this trial's failure: it ends without a final report, unfinished, and the
        # next run resumes it from the checkpoint it last wrote.
        tune.report({"kind": HALT, "epoch": 0, "message": str(problem)})
        return
    if device == "cuda":  # the worker is reused: keep no cached blocks from the GPU's others
        import torch

        from explorer.train import release_memory

        release_memory(torch.device(device))
    final = result.metrics.to_dict() if result.metrics is not None else {}
    tune.report({
        # The trial's training time is every epoch's (the last epoch's alone was reported).
        **final, "seconds": sum(m.seconds for m in result.history),
        "kind": FINAL, "status": result.status.value, "error": result.error or "",
        "epochs_completed": result.epochs_completed,
        "history": json.dumps([m.to_dict() for m in result.history]),
    })


@functools.lru_cache(maxsize=1)
def _dataset(data: DataSpec) -> Dataset | ImageFiles:
    """The trial's dataset, loaded once per worker: Tune reuses a worker for the next
    trial, and every trial of a sweep trains on the same data."""
    from explorer.data import load_data

    return load_data(data)


def shared_data(data: DataSpec, loaded: Dataset | None = None) -> Any:
    """The sweep's data loaded once, in the driver (or `loaded` already, by the run's check
    that it is there), in the form the object store shares without copies: a resident
    dataset as numpy arrays, a streamed folder's file list."""
    from explorer.data import Dataset, dataset_arrays, load_data

    found = loaded if loaded is not None else load_data(data)
    return dataset_arrays(found) if isinstance(found, Dataset) else found


def _unshared(shared: Any) -> Dataset | ImageFiles:
    from explorer.data import dataset_from_arrays

    return shared if not isinstance(shared, dict) else dataset_from_arrays(shared)


def _diverging_builder(arch: Arch, num_classes: int) -> nn.Module:
    """Fault injection (`explorer run --fail-trial KEY`): the model's outputs turn NaN,
    so the trainer's own divergence check fails the trial, as a real blow-up would."""
    from explorer.models import build_model

    model = build_model(arch, num_classes)
    model.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    return model
