"""The verdict of the CPU preserved study from docs/REPRODUCTION.md's table.

That run's store is gone; its table has each candidate's mean and std over
the same 3 seeds, all finished. With every candidate on the same seeds, the
seed-paired slope and every bootstrap draw depend only on the candidate
means, so three runs per candidate rebuilt as mean - std, mean, mean + std
give the verdict the store would (up to rounding and Monte-Carlo noise).

Run: PYTHONPATH=. python docs/cpu_preserved_verdict.py
"""

from __future__ import annotations

import pandas as pd

from explorer.compare import cardinality_verdicts

# C, d, mean test error (%), std over seeds: the table of docs/REPRODUCTION.md.
TABLE = [(1, 16, 48.58, 0.76), (2, 10, 48.02, 0.73), (4, 6, 48.55, 0.53),
         (8, 4, 46.27, 0.16), (16, 2, 47.43, 0.60), (32, 1, 47.32, 1.25)]


def runs() -> pd.DataFrame:
    rows = []
    for c, d, mean, std in TABLE:
        for seed, step in enumerate((-1, 0, 1)):
            rows.append({"experiment": "cifar10-preserved-cpu", "space": "preserved",
                         "key": f"{c}x{d}d", "trial_id": len(rows) + 1, "cardinality": c,
                         "bottleneck_width": d, "depths": (1, 1, 1), "widths": (64, 128, 256),
                         "params": 125_000, "flops": 5_000_000, "acts": 1, "seed": seed,
                         "status": "finished", "test_error": mean + std * step,
                         "test_top5_error": None, "train_images_per_sec": None,
                         "latency_ms": None})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    for generator_seed in (0, 1, 2):
        verdict = cardinality_verdicts(runs(), seed=generator_seed)[0]
        print(f"bootstrap generator seed {generator_seed}: {verdict.sentence}")
