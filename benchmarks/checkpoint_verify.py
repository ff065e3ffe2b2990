"""What verifying a checkpoint before a resume costs: zip CRCs against a sha256 of the file.

A trial checkpoint the size of a real one (ResNeXt-50 32x4d of spaces/resnext50_table2.yaml:
its weights and SGD momentum, about 195 MB) is written once with torch.save, then read back
three ways; each figure is the best of `--repeat` runs, the page cache warm (as it is
right after a checkpoint was written, or after the first read). Also: torch.save given the
path against given a Python file (explorer gives it a file, so a full disk says ENOSPC).

    python benchmarks/checkpoint_verify.py
    python benchmarks/checkpoint_verify.py --spec spaces/resnext29_cifar_fig7.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from explorer.models import build_model
from explorer.space import enumerate_spec
from explorer.spec import load_spec
from explorer.train import checkpoint_damage


def best_of(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="spaces/resnext50_table2.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = load_spec(args.spec)
    model = build_model(enumerate_spec(spec).candidates[0].arch, spec.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # the momentum buffers exist, as in a checkpoint after an epoch
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.pt"

        def to_file() -> None:
            with path.open("wb") as stream:
                torch.save(payload, stream)

        saved_path = best_of(args.repeat, lambda: torch.save(payload, path))
        saved_file = best_of(args.repeat, to_file)
        size = path.stat().st_size
        assert checkpoint_damage(path) is None
        rows = [
            ("torch.save(payload, path)", saved_path),
            ("torch.save(payload, python file)", saved_file),
            ("zip CRCs (checkpoint_damage)", best_of(args.repeat, lambda: checkpoint_damage(path))),
            ("sha256 of the file", best_of(args.repeat, lambda: sha256_of(path))),
            ("torch.load", best_of(args.repeat, lambda: torch.load(path, weights_only=True))),
        ]
    print(f"{args.spec}: checkpoint of {size / 2**20:.1f} MiB, best of {args.repeat}")
    print("| what | seconds |\n| --- | --- |")
    for what, seconds in rows:
        print(f"| {what} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
