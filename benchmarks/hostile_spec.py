"""How fast, and in how much memory, a hostile spec (a YAML alias bomb) is refused.

    python benchmarks/hostile_spec.py [--levels 9] [--src DIR] [--memory-mb 4000] [--timeout 60]

Writes the "billion laughs" (LEVELS levels of ten aliases, 10**LEVELS values from
under a kB) and runs, each in a fresh child process: `explorer validate` on it (the
real CLI: exit code, problem lines, wall seconds) and `load_spec` on it alone (the
validation without interpreter start-up), then the same two on a ready-made spec for
comparison. Peak memory is each child's own ru_maxrss (os.wait4). `--src` runs an
other checkout's explorer (e.g. `git archive HEAD~1 | tar -x -C /tmp/old`) to measure
before a change; `--memory-mb` caps each child's address space so an unbounded one
fails instead of exhausting the machine. Prints measured figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import site
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_MB = 1.0, 200  # the brief: refused well under a second, in under 200 MB

# The child that times load_spec alone; prints where explorer came from, then its seconds.
TIME_LOAD = """\
import sys, time
import explorer
from explorer.spec import SpecError, load_spec
print(explorer.__file__)
start = time.perf_counter()
try:
    load_spec(sys.argv[1])
except SpecError as err:
    print(len(err.problems), "problem(s):", err.problems[0], file=sys.stderr)
print(time.perf_counter() - start)
"""


def bomb(levels: int, width: int = 10) -> str:
    lines = ["name: laughs", "l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines.append(f"spaces: {{s: {{axes: {{cardinality: *l{levels - 1}}}}}}}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mb: float
    code: int  # the exit status, or minus the signal that ended the child
    stdout: str
    stderr: str


def run_child(args: list[str], src: Path, memory_mb: int, timeout: float) -> Run:
    """Run a Python child in `src`; wall seconds and its own peak RSS (not its siblings')."""

    def limit() -> None:
        cap = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    # -S with site-packages on PYTHONPATH: no .pth file runs, so the editable install's
    # import hook cannot send `import explorer` back to this checkout instead of `src`.
    path = [str(src), *site.getsitepackages(), site.getusersitepackages()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-S", *args], cwd=src, env=env, stdout=out,
                                 stderr=err, text=True, preexec_fn=limit)
        # Reaped with wait4 (Popen.wait would reap it first and lose its rusage).
        killer = threading.Timer(timeout, child.kill)
        killer.start()
        _, status, usage = os.wait4(child.pid, 0)
        killer.cancel()
        seconds = time.perf_counter() - start
        code = child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # ru_maxrss is in kB on Linux, bytes on macOS.
        peak_mb = usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
        return Run(seconds, peak_mb, code, out.read(), err.read())


def report(label: str, cli: Run, load: Run) -> None:
    lines = [x for x in cli.stderr.splitlines() if x.strip()]
    load_s = load.stdout.strip().splitlines()[-1] if load.code == 0 and load.stdout else "-"
    shown = f"{float(load_s):.3f} s" if load_s != "-" else f"failed (exit {load.code})"
    print(f"{label}:")
    print(f"  explorer validate: exit {cli.code}, {len(lines)} stderr line(s), "
          f"{cli.seconds:.2f} s wall, peak {cli.peak_mb:.0f} MB")
    source = load.stdout.splitlines()[0] if load.stdout else "?"
    print(f"  load_spec alone:   {shown}, peak {load.peak_mb:.0f} MB ({source})")
    if lines:
        print(f"  first line:        {lines[0][:160]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, default=9, help="alias levels (10**LEVELS values)")
    parser.add_argument("--src", type=Path, default=REPO, help="the checkout to measure")
    parser.add_argument("--memory-mb", type=int, default=4000, help="address-space cap per child")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per child")
    args = parser.parse_args()
    src = args.src.resolve()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"bomb{args.levels}.yaml"
        path.write_text(bomb(args.levels))
        good = REPO / "spaces" / "quickstart.yaml"
        print(f"checkout: {src}; bomb: {args.levels} levels, {path.stat().st_size} bytes, "
              f"10**{args.levels} values expanded; cap {args.memory_mb} MB, {args.timeout:g} s")
        for label, spec in ((f"bomb ({args.levels} levels)", path), ("quickstart.yaml", good)):
            cli = run_child(["-m", "explorer.cli", "validate", str(spec)], src,
                            args.memory_mb, args.timeout)
            load = run_child(["-c", TIME_LOAD, str(spec)], src, args.memory_mb, args.timeout)
            report(label, cli, load)
            if spec == path:
                met = cli.code == 2 and load.code == 0 and cli.peak_mb < TARGET_MB and \
                    float(load.stdout.split()[-1]) < TARGET_S
                print(f"  target (exit 2, load_spec < {TARGET_S:g} s, < {TARGET_MB} MB): "
                      f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
