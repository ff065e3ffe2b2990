"""Install time of the core package and of `.[all]`, each into a fresh venv, and what the
core install can and cannot do.

Downloads from the package index (nothing is cached between the two venvs beyond pip's own
cache), so the figures are mostly network time. The `.[all]` install takes the CPU torch wheel
first, as the README's first command does.

    python benchmarks/install_extras.py            # both
    python benchmarks/install_extras.py --core     # the core install only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH_CPU = "torch==2.13.0"


def timed(command: list[str], cwd: Path) -> float:
    started = time.monotonic()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def fresh_venv(root: Path, name: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(root / name)], check=True)
    return root / name / "bin"


def source_copy(root: Path) -> Path:
    """The committed tree (pip builds in the source folder: keep the checkout clean)."""
    target = root / "src"
    target.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def check_core(bin_dir: Path, cwd: Path) -> None:
    table = subprocess.run([str(bin_dir / "explorer"), "enumerate",
                            str(REPO / "spaces" / "resnext50_table2.yaml")],
                           capture_output=True, text=True, cwd=cwd)
    print(f"core: explorer enumerate resnext50_table2.yaml -> exit {table.returncode}, "
          f"{table.stdout.strip().splitlines()[-1] if table.stdout else table.stderr.strip()}")
    for module in ("torch", "ray", "streamlit", "fvcore"):
        found = subprocess.run([str(bin_dir / "python"), "-c", f"import {module}"],
                               capture_output=True).returncode == 0
        print(f"core: import {module}: {'works' if found else 'fails'}")
    run = subprocess.run([str(bin_dir / "explorer"), "run",
                          str(REPO / "spaces" / "quickstart.yaml")],
                         capture_output=True, text=True, cwd=cwd)
    print(f"core: explorer run -> exit {run.returncode}: {run.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", action="store_true", help="Only the core install.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        src = source_copy(root)
        core = fresh_venv(root, "core")
        seconds = timed([str(core / "pip"), "install", "-q", str(src)], root)
        print(f"core install (pip install .): {seconds:.0f} s")
        check_core(core, root)
        if not args.core:
            full = fresh_venv(root, "all")
            seconds = timed([str(full / "pip"), "install", "-q", TORCH_CPU], root)
            seconds += timed([str(full / "pip"), "install", "-q", f"{src}[all]"], root)
            print(f"all install ({TORCH_CPU}, then pip install '.[all]'): {seconds:.0f} s")


if __name__ == "__main__":
    main()
