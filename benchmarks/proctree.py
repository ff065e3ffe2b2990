"""Memory of a whole process tree, sampled from /proc (Linux): what a command and every
process it starts (DataLoader workers, Ray's raylet and workers) hold at their peak.

RSS summed over a tree counts shared pages (the torch libraries, forked copy-on-write
memory, Ray's shared object store) once per process; PSS divides each shared page among
the processes that map it, so summed PSS is the tree's real footprint. USS is a
process's private pages alone.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ProcMemory:
    pid: int
    cmdline: str
    rss: int
    pss: int
    uss: int
    hwm: int  # the kernel's own RSS high-water mark of the process (VmHWM): no sample missed


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(root: int) -> list[int]:
    kids, out, todo = children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def memory(pid: int) -> ProcMemory | None:
    try:
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0]) * 1024
        hwm = next((int(line.split()[1]) * 1024 for line in
                    Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmHWM:")), 0)
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (OSError, ValueError):
        return None
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return ProcMemory(pid, cmd, fields.get("Rss", 0), fields.get("Pss", 0), uss, hwm)


@dataclass
class Peaks:
    """The highest tree-wide sums seen, and each matching process's own highest figures."""

    rss_sum: int = 0
    pss_sum: int = 0
    per_process: dict[int, ProcMemory] = field(default_factory=dict)
    hwm: dict[int, int] = field(default_factory=dict)
    samples: int = 0

    @property
    def hwm_sum(self) -> int:
        """Each process's own RSS peak, summed: an upper bound on the tree's peak RSS."""
        return sum(self.hwm.values())

    def add(self, procs: Sequence[ProcMemory]) -> None:
        self.samples += 1
        self.rss_sum = max(self.rss_sum, sum(p.rss for p in procs))
        self.pss_sum = max(self.pss_sum, sum(p.pss for p in procs))
        for p in procs:
            self.hwm[p.pid] = max(self.hwm.get(p.pid, 0), p.hwm)
            old = self.per_process.get(p.pid)
            if old is None or p.pss > old.pss:
                self.per_process[p.pid] = p


class Sampler(threading.Thread):
    """Samples the tree under `pid` every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peaks = pid, interval, Peaks()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            procs = [m for m in (memory(p) for p in tree(self.pid)) if m is not None]
            if procs:
                self.peaks.add(procs)
            self.done.wait(self.interval)

    def stop(self) -> Peaks:
        self.done.set()
        self.join()
        return self.peaks


@dataclass(frozen=True)
class Measured:
    returncode: int
    seconds: float
    peaks: Peaks
    stdout: str
    stderr: str


def measure(command: Sequence[str], *, env: dict[str, str] | None = None,
            interval: float = 0.25) -> Measured:
    """Run `command`, sampling its process tree's memory until it exits."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    sampler = Sampler(proc.pid, interval)
    sampler.start()
    out, err = proc.communicate()
    peaks = sampler.stop()
    return Measured(proc.returncode, time.perf_counter() - start, peaks, out, err)


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"
