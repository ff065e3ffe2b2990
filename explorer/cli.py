"""The `explorer` command: the only reader of argv and the environment.

Exit codes: 0 success; 2 a bad spec, bad arguments or a set-up problem
(missing dataset, busy port, unreachable cluster); 3 some trials failed;
130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from explorer.spec import Spec, SpecError, json_schema, load_spec

EXIT_OK, EXIT_SETUP, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130

app = typer.Typer(
    name="explorer",
    help="Design-space explorer for ResNeXt-style networks: enumerate, train, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output is not cut to 80 columns: tables of exact counts are meant to be read whole.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def fail(message: str, code: int = EXIT_SETUP) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def read_spec(path: Path) -> Spec:
    try:
        return load_spec(path)
    except SpecError as problem:
        for line in problem.problems:
            err.print(str(line), highlight=False, markup=False, soft_wrap=True)
        n = len(problem.problems)
        err.print(f"{path}: {n} problem{'s' if n != 1 else ''}; nothing was run", highlight=False)
        raise typer.Exit(EXIT_SETUP) from None


SpecArg = Annotated[Path, typer.Argument(help="The experiment spec (YAML).", show_default=False)]


@app.command()
def validate(spec: SpecArg) -> None:
    """Check a spec and report every problem, one line each (exit 2 if any)."""
    parsed = read_spec(spec)
    spaces = ", ".join(parsed.spaces)
    out.print(f"{spec}: ok — experiment {parsed.name!r}, spaces: {spaces}", highlight=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec, for editor completion."""
    print(json.dumps(json_schema(), indent=2))


@app.command("enumerate")
def enumerate_command(
    spec: SpecArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the table as .csv, .parquet or .json.")
    ] = None,
    verify_fvcore: Annotated[
        bool, typer.Option("--verify-fvcore", help="Build every candidate and check the counts with fvcore.")
    ] = False,
    space: Annotated[
        list[str] | None, typer.Option("--space", help="Only this space (repeatable).")
    ] = None,
) -> None:
    """List every candidate with its exact params, flops and activations."""
    from explorer.space import enumerate_spec
    from explorer.tables import candidates_frame, write_table

    parsed = read_spec(spec)
    if output is not None:
        check_output_suffix(output, (".csv", ".parquet", ".json"))
    unknown = [s for s in space or [] if s not in parsed.spaces]
    if unknown:
        fail(f"--space {unknown[0]!r} is not in {spec}; its spaces are: {', '.join(parsed.spaces)}")
    result = enumerate_spec(parsed, space or None)
    frame = candidates_frame(result.candidates)
    out.print(candidates_table(frame, parsed, result.base.complexity))
    for dropped in result.dropped:
        values = ", ".join(f"{k}={_short(v)}" for k, v in dropped.values.items()) or "base"
        out.print(f"[yellow]dropped[/] {dropped.space} ({values}): {dropped.reason}", highlight=False)
    out.print(f"{len(result.candidates)} candidates, {len(result.dropped)} dropped", highlight=False)
    if verify_fvcore:
        verify_with_fvcore(result.candidates, parsed)
    if output is not None:
        write_table(frame, output)
        out.print(f"wrote {output}", highlight=False)


def candidates_table(frame: Any, spec: Spec, base: Any) -> Table:
    table = Table(title=f"{spec.name}: base model {base.params:,} params, {base.flops:,} flops")
    columns = ["space", "key", "depths", "widths", "cardinality", "bottleneck_width",
               "group_widths", "params", "flops", "acts", "params_deviation_pct",
               "flops_deviation_pct"]
    headers = ["space", "key", "depths", "widths", "C", "d", "C·d per stage", "params",
               "flops", "acts", "Δparams %", "Δflops %"]
    numeric = {"C", "d", "params", "flops", "acts", "Δparams %", "Δflops %"}
    for header in headers:
        exact = header in numeric or header == "key"
        table.add_column(header, justify="right" if header in numeric else "left", no_wrap=exact)
    for row in frame[columns].itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    return table


def verify_with_fvcore(candidates: Sequence[Any], spec: Spec) -> None:
    """Build each candidate and compare fvcore's counts with the formulas."""
    from rich.progress import track

    from explorer.models import build_model
    from explorer.models.measure import measure

    mismatches = []
    for c in track(candidates, description="fvcore", console=err, transient=True):
        measured = measure(build_model(c.arch, spec.num_classes), spec.data.resolution)
        if (measured.params, measured.flops, measured.acts) != (
            c.complexity.params, c.complexity.flops, c.complexity.acts
        ):
            mismatches.append((c.key, measured, c.complexity))
    for key, measured, formula in mismatches:
        err.print(f"[red]mismatch[/] {key}: fvcore {measured} formula {formula}", highlight=False)
    if mismatches:
        fail(f"{len(mismatches)} of {len(candidates)} candidates differ from fvcore", EXIT_FAILED)
    out.print(f"fvcore agrees on all {len(candidates)} candidates (params, flops, acts)")


def check_output_suffix(path: Path, allowed: tuple[str, ...]) -> None:
    if path.suffix.lower() not in allowed:
        fail(f"--output {path}: unknown format {path.suffix or '(none)'!r}; use {', '.join(allowed)}")


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:+.2f}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _short(value: Any) -> str:
    return _cell(value) if isinstance(value, list | tuple) else str(value)


# --- commands of later stages are added below this line ---


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: runs the app, turning Ctrl-C into exit code 130 without a traceback."""
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=True)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
