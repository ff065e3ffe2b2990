"""What actually ran: reported by the trainer when a trial starts, stored per trial."""

from __future__ import annotations

import torch

from explorer.arch import make_arch
from explorer.data import load_digits
from explorer.metrics import PROVENANCE, Provenance
from explorer.spec import TrainSpec
from explorer.store import Reader, Writer
from explorer.train import train_trial

TINY = make_arch(template="cifar", stem_width=8, depths=(1, 1), widths=(16, 32),
                 cardinality=2, bottleneck_width=4)


def test_the_trainer_reports_what_runs_not_what_was_asked(tmp_path: object) -> None:
    started: list[Provenance] = []
    asked = TrainSpec(epochs=1, batch_size=64, precision="bf16", channels_last=True)

    result = train_trial(TINY, load_digits(8), asked, seed=0, device="cpu", max_steps=2,
                         on_start=started.append)

    assert len(started) == 1
    ran = started[0]
    assert ran.precision == "fp32"  # bf16 asked for, on a CPU: fp32 runs (and is recorded)
    assert (ran.device, ran.gpu_name) == ("cpu", None)
    assert (ran.channels_last, ran.compiled) == (True, False)
    assert ran.torch_version == torch.__version__ and ran.resumed_from_epoch == 0
    assert result.provenance == ran and result.precision == "fp32"


def test_provenance_round_trips_and_travels_with_a_reused_trial(store_url: str) -> None:
    values = {"gpu_name": "NVIDIA H200", "precision": "bf16", "channels_last": True,
              "compiled": False, "torch_version": "2.13.0", "resumed_from_epoch": 3,
              "node": "0123456789abcdef"}
    assert set(values) == set(PROVENANCE)
    with Writer.open(store_url) as store:
        first = store.create_or_get_experiment("first", "t", "h1", {"n": 1}, environment={})
        store.add_trials(first.id, [("trial", "candidate", 0)])
        store.mark_running(first.id, "trial", "cuda@01234567")
        store.record_provenance(first.id, "trial", {**values, "unknown": "ignored"})
        store.record_epoch(first.id, "trial", {"epoch": 1, "test_error": 10.0})
        store.finish_trial(first.id, "trial", "finished", {"test_error": 10.0})
        source = store.find_finished("trial")
        assert source is not None
        second = store.create_or_get_experiment("second", "t", "h2", {"n": 2}, environment={})
        store.copy_finished(second.id, "trial", source)
    with Reader.open(store_url) as reader:
        rows = reader.trials_frame().set_index("experiment")
    for name in ("first", "second"):
        row = rows.loc[name]
        assert {k: row[k] for k in values} == values, name
        assert row["device"] == "cuda@01234567" and row["attempts"] == (1 if name == "first"
                                                                         else 0)
