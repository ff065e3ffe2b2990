"""Write docs/CLI.md from the CLI's own help texts, so the two never disagree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEADER = """# The explorer command

Generated from `explorer COMMAND --help` by `python docs/make_cli_md.py`.

Exit codes: 0 success · 1 an internal error (a bug; `EXPLORER_DEBUG=1` shows the traceback) ·
2 a bad spec, bad arguments or a set-up problem · 3 some trials failed ·
130 interrupted (the same command again resumes).
"""


def help_text(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    script = Path(sys.executable).with_name("explorer")
    command = [str(script)] if script.exists() else ["explorer"]
    result = subprocess.run([*command, *args, "--help"],
                            capture_output=True, text=True, env=env, check=True)
    return result.stdout.rstrip()


def main() -> None:
    commands = ["validate", "enumerate", "schema", "train", "cost", "run", "status", "export",
                "dashboard", "report"]
    parts = [HEADER, "```text", help_text(), "```"]
    for command in commands:
        try:
            text = help_text(command)
        except subprocess.CalledProcessError:
            continue
        parts += [f"\n## explorer {command}\n", "```text", text, "```"]
    Path(__file__).with_name("CLI.md").write_text("\n".join(parts) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
