"""The public API: every exported name resolves to its defining module's object, lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import explorer

REPO = Path(__file__).resolve().parent.parent


def test_every_exported_name_is_the_defining_modules_object() -> None:
    names = [n for n in explorer.__all__ if n != "__version__"]
    assert sorted(names) == sorted(explorer._EXPORTS), "__all__ and the lazy table differ"
    for name in names:
        module = importlib.import_module(explorer._EXPORTS[name])
        assert getattr(explorer, name) is getattr(module, name), name
    assert set(names) <= set(dir(explorer))


def test_unknown_names_are_attribute_errors() -> None:
    try:
        explorer.no_such_function  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as problem:
        assert "no_such_function" in str(problem)
    else:
        raise AssertionError("an unknown name resolved")


def test_parsing_and_enumerating_through_the_facade_loads_nothing_heavy() -> None:
    code = (
        "import sys, explorer\n"
        f"spec = explorer.load_spec({str(REPO / 'spaces' / 'quickstart.yaml')!r})\n"
        "assert explorer.enumerate_spec(spec).candidates\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'streamlit', 'sqlalchemy', 'optuna')\n"
        "               if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
