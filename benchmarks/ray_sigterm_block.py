"""What starting Ray's processes with SIGTERM blocked costs (explorer/sweep/process.py
`sigterm_blocked`).

A SIGTERM to the driver's whole process group must reach only the driver, so Ray's GCS,
raylet and agents are started with SIGTERM blocked (as Ray blocks SIGINT for them). Ray's
own shutdown sends each of them SIGTERM and waits up to a second before SIGKILL, so the
block makes `ray.shutdown()` slower. This starts a local Ray both ways, runs two tasks and
shuts it down, printing each phase's seconds. Run it with a RAY_TMPDIR of its own.

    RAY_TMPDIR=$(mktemp -d /tmp/rtXXXX) python benchmarks/ray_sigterm_block.py --repeat 2
"""

from __future__ import annotations

import argparse
import logging
import time

import ray

from explorer.sweep.process import sigterm_blocked


@ray.remote
def one() -> int:
    return 1


def cycle(blocked: bool) -> tuple[float, float]:
    started = time.perf_counter()
    if blocked:
        with sigterm_blocked():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    ray.get([one.remote() for _ in range(2)])
    ready = time.perf_counter()
    ray.shutdown()
    return ready - started, time.perf_counter() - ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print("| SIGTERM in Ray's processes | ray.init + 2 tasks, s | ray.shutdown, s |")
    print("| --- | --- | --- |")
    for _ in range(args.repeat):
        for blocked in (False, True):
            start, stop = cycle(blocked)
            print(f"| {'blocked' if blocked else 'as Ray leaves it'} | {start:.2f} | {stop:.2f} |")


if __name__ == "__main__":
    main()
