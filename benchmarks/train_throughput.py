"""Training images/s of explorer's trainer against a plain PyTorch loop.

The plain loop is what most CIFAR code does: a torch DataLoader over the
uint8 HWC arrays with per-sample, torchvision-style transforms written by
hand (4-pixel zero-padded random crop, horizontal flip, to-float, per-channel
normalise), fp32, NCHW. The trainer is `explorer.train.train_trial` itself:
data resident on the device, crop+flip as one batched gather, one fused
normalisation, channels_last, and (on CUDA) bf16 autocast.

Both train the same model, at the same batch size, with the same optimizer,
on the same images; both are timed over `--steps` optimizer steps after
`--warmup` untimed ones (with a device synchronisation at both ends).

    python benchmarks/train_throughput.py                    # CPU, synthetic data
    python benchmarks/train_throughput.py --data cifar10     # the real images
    python benchmarks/train_throughput.py --device cuda --steps 100
    # the CPU study's network (spaces/cpu/cifar10_preserved.yaml, 1x16d at 16x16):
    python benchmarks/train_throughput.py --data cifar10 --blocks 1 --stem 16 --cardinality 1 \
        --d 16 --resolution 16

On CUDA it also prints model-FLOP utilisation: 3 × flops × images/s over the
GPU's peak (``--peak-flops``, default the H100 SXM dense bf16 989e12), with
flops counted as multiply-adds ×2 (a multiply-add is two floating-point
operations, the usual MFU convention).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from explorer.arch import Arch, make_arch
from explorer.complexity import count
from explorer.data import Dataset, Normalizer, load_dataset, train_batches
from explorer.metrics import EpochMetrics
from explorer.models import build_model
from explorer.spec import DataSpec, TrainSpec
from explorer.train import build_seeded, revise, train_trial

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def narrow_resnext29(width: int, cardinality: int, d: int, blocks: int = 3,
                     stem: int | None = None) -> Arch:
    """ResNeXt-29's shape (3 stages of `blocks` blocks) at a fraction of its width."""
    return make_arch(
        template="cifar", stem_width=stem or width // 2, depths=(blocks,) * 3,
        widths=(width, 2 * width, 4 * width), cardinality=cardinality, bottleneck_width=d,
    )


class StepClock:
    """Times steps `warmup`..`warmup+steps` with a device sync at both ends."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.end = 0.0

    def tick(self, done: int) -> None:
        if done in (self.warmup, self.warmup + self.steps):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            if done == self.warmup:
                self.start = now
            else:
                self.end = now

    def images_per_sec(self, batch_size: int) -> float:
        return self.steps * batch_size / (self.end - self.start)


# ---------------------------------------------------------------------------
# The plain PyTorch loop


class PerSampleCifar(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """uint8 HWC arrays with torchvision-style per-sample transforms, by hand."""

    def __init__(
        self, images_hwc: np.ndarray, labels: np.ndarray, mean: tuple[float, ...],
        std: tuple[float, ...], pad: int,
    ) -> None:
        self.images, self.labels, self.pad = images_hwc, labels, pad
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        h, w, _ = img.shape
        p = self.pad
        padded = np.pad(img, ((p, p), (p, p), (0, 0)))  # RandomCrop(padding=p)
        top, left = self.rng.integers(0, 2 * p + 1, size=2)
        img = padded[top : top + h, left : left + w]
        if self.rng.random() < 0.5:  # RandomHorizontalFlip
            img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, int(self.labels[i])  # ToTensor + Normalize


Loader = torch.utils.data.DataLoader[tuple[torch.Tensor, int]]


def plain_loader(data: Dataset, batch_size: int, workers: int, pin: bool) -> Loader:
    images = data.train_images.permute(0, 2, 3, 1).contiguous().numpy()
    dataset = PerSampleCifar(images, data.train_labels.numpy(), data.mean, data.std, pad=4)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=pin, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def pipeline_only(data: Dataset, recipe: TrainSpec, workers: list[int]) -> None:
    """Input pipeline alone (no model): where the data side of the gap comes from."""
    norm = Normalizer(data.mean, data.std, channels_last=recipe.channels_last)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    n = sum(y.numel() for _, y in train_batches(
        data.train_images, data.train_labels, recipe.batch_size, gen, norm, augment=True))
    ours = n / (time.perf_counter() - start)
    print(f"input pipeline only, CPU: explorer batched {ours:10.0f} images/s", end="")
    for w in workers:
        loader = plain_loader(data, recipe.batch_size, w, pin=False)
        start = time.perf_counter()
        n = sum(y.numel() for _, y in loader)
        plain = n / (time.perf_counter() - start)
        print(f"; per-sample DataLoader ({w} workers) {plain:8.0f}", end="")
    print()


def plain_loop(
    arch: Arch, data: Dataset, recipe: TrainSpec, *, device: torch.device, workers: int,
    warmup: int, steps: int,
) -> float:
    loader = plain_loader(data, recipe.batch_size, workers, pin=device.type == "cuda")
    model = build_seeded(lambda a, n: build_model(a, n), arch, data.num_classes, 0).to(device)
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.peak_lr, momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss()
    clock = StepClock(warmup, steps, device)
    done = 0
    while done < warmup + steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            clock.tick(done)
            if done == warmup + steps:
                break
    return clock.images_per_sec(recipe.batch_size)


# ---------------------------------------------------------------------------
# explorer's trainer


def our_trainer(
    arch: Arch, data: Dataset, recipe: TrainSpec, *, device: torch.device, warmup: int,
    steps: int, cpu_low_precision: bool,
) -> tuple[float, EpochMetrics | None]:
    clock = StepClock(warmup, steps, device)
    epochs: list[EpochMetrics] = []
    steps_in_epoch = data.train_labels.numel() // recipe.batch_size
    offset = [0]

    def on_step(done_in_epoch: int, total: int) -> None:
        clock.tick(offset[0] + done_in_epoch)

    def on_epoch(m: EpochMetrics) -> None:
        epochs.append(m)
        offset[0] = m.steps

    result = train_trial(
        arch, data, revise(recipe, epochs=max(1, -(-(warmup + steps) // steps_in_epoch))),
        seed=0, device=device, max_steps=warmup + steps, on_step=on_step, on_epoch=on_epoch,
        cpu_low_precision=cpu_low_precision,
    )
    if result.status != "finished":
        raise SystemExit(f"trainer failed: {result.error}")
    return clock.images_per_sec(recipe.batch_size), (epochs[-1] if epochs else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", choices=["synthetic", "cifar10"], default="synthetic")
    parser.add_argument("--root", default=str(SHARED_DATA))
    parser.add_argument("--width", type=int, default=64, help="first stage width (paper: 256)")
    parser.add_argument("--cardinality", type=int, default=4)
    parser.add_argument("--d", type=int, default=4, help="bottleneck width of stage 1")
    parser.add_argument("--blocks", type=int, default=3, help="blocks per stage (29 layers: 3)")
    parser.add_argument("--stem", type=int, default=None, help="stem width (default: width/2)")
    parser.add_argument("--resolution", type=int, default=32, help="image side, pixels")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", default="0,2", help="DataLoader workers to try, comma list")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--cpu-bf16", action="store_true", help="also use --precision on CPU")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many rounds")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="GPU bf16 peak FLOP/s")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    arch = narrow_resnext29(args.width, args.cardinality, args.d, args.blocks, args.stem)
    n_train = (args.warmup + args.steps) * args.batch_size
    data = load_data(args.data, args.root, n_train, args.resolution)
    recipe = TrainSpec(
        batch_size=args.batch_size, lr=0.1, precision=args.precision,
        channels_last=not args.no_channels_last, compile=args.compile, augment=True,
    )
    macs = count(arch, args.resolution, data.num_classes).flops
    print(f"device: {describe_device(device)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"model: ResNeXt-{arch.num_layers} {arch.label()} widths {list(arch.widths)}, "
          f"{macs / 1e6:.1f} M multiply-adds/image at {args.resolution}x{args.resolution}; "
          f"batch {args.batch_size}; "
          f"data {args.data}; {args.steps} timed steps after {args.warmup}")

    # Rounds alternate between the contenders so that a busy neighbour slows
    # them alike; the best round of each is reported.
    worker_counts = [int(w) for w in args.workers.split(",")]
    ours, plain = 0.0, dict.fromkeys(worker_counts, 0.0)
    last: EpochMetrics | None = None
    for _ in range(args.rounds):
        value, last = our_trainer(
            arch, data, recipe, device=device, warmup=args.warmup, steps=args.steps,
            cpu_low_precision=args.cpu_bf16,
        )
        ours = max(ours, value)
        for workers in worker_counts:
            value = plain_loop(
                arch, data, recipe, device=device, workers=workers, warmup=args.warmup,
                steps=args.steps,
            )
            plain[workers] = max(plain[workers], value)
    used = "fp32" if device.type == "cpu" and not args.cpu_bf16 else args.precision
    layout = "NCHW" if args.no_channels_last else "channels_last"
    print(f"explorer trainer ({used}, {layout}{', compiled' if args.compile else ''}): "
          f"{ours:9.1f} images/s")
    if last is not None:
        print(f"  (its own epoch figure, warm-up included: {last.train_images_per_sec:.1f})")
    for workers, value in plain.items():
        print(f"plain DataLoader loop (fp32, NCHW, {workers} workers): {value:9.1f} images/s"
              f"  -> ratio {ours / value:.2f}x")
    pipeline_only(data, recipe, worker_counts)
    print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
          if Path("/proc/loadavg").is_file() else "")
    if device.type == "cuda":
        mfu = 3 * 2 * macs * ours / args.peak_flops
        print(f"model-FLOP utilisation: {100 * mfu:.2f}% of {args.peak_flops:.3g} FLOP/s")


def load_data(name: str, root: str, n_train: int, resolution: int = 32) -> Dataset:
    if name == "synthetic":
        return load_dataset(DataSpec(dataset="synthetic", resolution=resolution,
                                     train_subset=n_train, test_subset=256))
    cfg = DataSpec(
        dataset="cifar10", root=root, download=False, resolution=resolution,
        train_subset=min(n_train, 50_000), test_subset=500,
    )
    return load_dataset(cfg)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {_cpu_name()}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
