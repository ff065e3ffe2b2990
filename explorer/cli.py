"""The `explorer` command: the only reader of argv and the environment.

Its exit codes are explorer.errors.ExitCode; an ExplorerError ends a command in one line
(ExplorerGroup.invoke prints it), a Ctrl-C or a SIGTERM in one line saying what it left,
anything else is a bug (exit 1, `main`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from explorer.errors import (
    EXIT_MEANINGS,
    CheckFailed,
    ExitCode,
    ExplorerError,
    SetupError,
    UsageError,
    require_extra,
)

if TYPE_CHECKING:  # the commands import what they need when they run
    from typer._click import Context as ClickContext  # the click that typer ships inside

    from explorer.arch import Arch
    from explorer.data import Dataset
    from explorer.metrics import EpochMetrics
    from explorer.space import Batch, Candidate, CandidateStream
    from explorer.spec import DataSpec, Spec
    from explorer.store import Reader
    from explorer.train import ModelBuilder

__all__ = [
    "app",
    "main",
]

# What a Ctrl-C or a SIGTERM leaves behind, per command (output files are written
# atomically, so a stopped command leaves none); `run` and `enumerate` say more where they
# catch it.
INTERRUPTED = {
    "run": "the same command again resumes the experiment",
    "train": "with --checkpoint-dir the same command again resumes from the last "
             "finished epoch's checkpoint (without it, training starts over)",
    "export": "no file was written (with --mlflow, the runs logged so far stay "
              "and the same command again updates them)",
    "import": "the models written so far stay in the store (the experiment is "
              "incomplete): the same command again completes it",
}
_NOTHING_WRITTEN = "nothing was written"


def stopped(stop: KeyboardInterrupt) -> tuple[str, int]:
    """How a command stopped by Ctrl-C or by SIGTERM says so, and its exit code (143 is
    128 + SIGTERM, what a shell reports for a process SIGTERM ended)."""
    from explorer.errors import Terminated

    if isinstance(stop, Terminated):
        return "terminated (SIGTERM)", ExitCode.TERMINATED
    return "interrupted", ExitCode.INTERRUPTED


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated (a KeyboardInterrupt) while the block runs, so it is
    cleaned up after and reported like a Ctrl-C; the caller's handler is back after."""
    import signal
    import threading

    from explorer.errors import raise_terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class ExplorerGroup(typer.core.TyperGroup):
    """Where a command's errors become what the user sees: an ExplorerError its one line
    (as written: text, not markup) and its exit code. Typer turns a Ctrl-C inside a command
    into a silent exit 130, and a SIGTERM would end it mid-write; every command says in one
    line what the interruption left behind instead."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            with _sigterm_as_interrupt():
                return super().invoke(ctx)
        except ExplorerError as error:
            err.print(error.report(), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt as stop:
            word, code = stopped(stop)
            left = INTERRUPTED.get(ctx.invoked_subcommand or "", _NOTHING_WRITTEN)
            err.print(f"{word}; {left}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=ExplorerGroup,
    name="explorer",
    help="Design-space explorer for ResNeXt-style networks: enumerate, train, compare.",
    epilog="Exit codes: " + " · ".join(f"{int(code)} {meaning}"
                                       for code, meaning in EXIT_MEANINGS.items()) + ".",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    pretty_exceptions_enable=False,
)
# Piped output is not cut to 80 columns: tables of exact counts are meant to be read whole.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """A bad argument or option: one line, exit 2 (ExplorerGroup.invoke prints it)."""
    raise UsageError(message)


# Exit 2 in one line naming `pip install 'explorer[EXTRA]'` when the extra is missing.
need = require_extra


def _need_store_driver(url: str | None) -> None:
    """A PostgreSQL URL needs the postgres extra's driver (psycopg) before the store opens."""
    if url is None or not url.startswith("postgresql"):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        driver = make_url(url).get_driver_name()
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return  # the store reports a malformed URL itself
    if driver == "psycopg":
        need("postgres", f"the store {url.split('://')[0]}://")
    else:
        need("postgres", f"the store {url.split('://')[0]}:// (use postgresql+psycopg://)",
             (driver,))


def json_schema() -> dict[str, Any]:
    """The spec's JSON Schema (explorer.spec's, imported only when asked for)."""
    from explorer.spec import json_schema as spec_schema

    return spec_schema()


def read_spec(path: Path, overrides: Sequence[str] | None = None) -> Spec:
    return read_spec_source(path, overrides)[0]


def read_spec_source(path: Path, overrides: Sequence[str] | None = None) -> tuple[Spec, str]:
    """The spec with its --set overrides, and the text to record (see spec.spec_source)."""
    # pydantic's models of the spec cost a second to import: only the commands that
    # read a spec pay for them (status, export, compare and report do not).
    from explorer.spec import load_spec_source

    return load_spec_source(path, overrides or ())


_SpecArg = Annotated[Path, typer.Argument(help="The experiment spec (YAML).", show_default=False)]
_SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY.PATH=VALUE", show_default=False,
                 help="Override a spec key, the value read as YAML (train.epochs=2, "
                      "train.seeds=[0,1]); repeatable, validated like the file."),
]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("explorer")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "(not installed: no version)"
        print(f"explorer {found}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="Print the version and exit."),
    ] = None,
) -> None:
    pass


@app.command()
def validate(spec: _SpecArg, overrides: _SetOpt = None) -> None:
    """Check a spec and report every problem, one line each (exit 2 if any)."""
    parsed = read_spec(spec, overrides)


    spaces = ", ".join(parsed.spaces)
    out.print(f"{spec}: ok — experiment {parsed.name!r}, spaces: {spaces}", highlight=False,
              markup=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec, for editor completion."""
    print(json.dumps(json_schema(), indent=2))


_SHOWN_ROWS = 50  # rows the terminal shows by default when no --output is given
_DROP_LINES = 20  # up to this many drops get a line each; more are counted by reason


@app.command("enumerate")
def enumerate_command(
    spec: _SpecArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the table as .csv, .parquet or .json."),
    ] = None,
    verify_fvcore: Annotated[
        bool,
        typer.Option(
            "--verify-fvcore", help="Build every candidate and check the counts with fvcore."
        ),
    ] = False,
    space: Annotated[
        list[str] | None, typer.Option("--space", help="Only this space (repeatable).")
    ] = None,
    overrides: _SetOpt = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=0, help=f"Show the first N candidates, as enumerated "
                     f"(default {_SHOWN_ROWS}; none with --output)."),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Show every candidate in the terminal.")
    ] = False,
) -> None:
    """List the candidates with their exact params, flops and activations.

    The grid's size is printed first. The terminal shows the first --limit
    candidates in the order they are enumerated (--all: every one) and a
    summary; --output writes every candidate to the file, streamed in chunks,
    and the file appears only when complete. Ctrl-C leaves no file and exits 130.
    """
    if verify_fvcore:
        need("fvcore", "explorer enumerate --verify-fvcore")
    from explorer.console import print_enumeration, size_line
    from explorer.space import CandidateStream

    parsed = read_spec(spec, overrides)
    if output is not None:
        _check_output_suffix(output)
    unknown = [s for s in space or [] if s not in parsed.spaces]
    if unknown:
        fail(f"--space {unknown[0]!r} is not in {spec}; its spaces are: {', '.join(parsed.spaces)}")
    try:
        stream = CandidateStream(parsed, space or None, keep_dropped=_DROP_LINES)
    except SetupError as problem:  # a base model past what a count holds
        raise problem.about(str(spec)) from None
    out.print(f"{parsed.name}: {size_line(parsed, stream.sizes)}", highlight=False)
    shown = None if show_all else (limit if limit is not None else
                                   (0 if output is not None else _SHOWN_ROWS))
    try:
        rows, checked, ranges = _run_stream(stream, output, shown, verify_fvcore)
    except KeyboardInterrupt as stop:
        word, code = stopped(stop)
        err.print(f"{word}: nothing written" if output else word)
        raise typer.Exit(code) from None
    except SetupError as problem:  # a sampled space short of n, a count past int64
        raise problem.about(str(spec)) from None
    print_enumeration(out, parsed, stream, rows, ranges, drop_lines=_DROP_LINES,
                      to_file=output is not None)
    if verify_fvcore:
        _verify_with_fvcore(checked, parsed)
    if output is not None:
        out.print(f"wrote {output}", highlight=False, markup=False)


def _run_stream(
    stream: CandidateStream, output: Path | None, shown: int | None, keep: bool
) -> tuple[list[dict[str, Any]], list[Candidate], dict[str, tuple[int, Any, Any]]]:
    """Iterate the stream once: write every batch, keep the rows to show (and all
    candidates when `keep`), and each space's count and params/flops range."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from explorer.tables import TableStream

    rows: list[dict[str, Any]] = []
    kept: list[Candidate] = []
    ranges: dict[str, tuple[int, Any, Any]] = {}
    progress = Progress("enumerating", BarColumn(), MofNCompleteColumn(), "points",
                        TimeRemainingColumn(), console=err, transient=True,
                        disable=stream.total_points <= stream.chunk_points)
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(TableStream(output)) if output is not None else None
        task = stack.enter_context(progress).add_task("enumerate", total=stream.total_points)
        for batch in stream:
            if writer is not None:
                writer.write(batch)
            room = None if shown is None else shown - len(rows)
            if room is None or room > 0:
                rows.extend(batch.rows(room))
            if keep:
                kept.extend(batch.candidates(stream.base.complexity))
            if len(batch):
                _widen(ranges, batch)
            progress.update(task, completed=stream.points_done)
    return rows, kept, ranges


def _widen(ranges: dict[str, tuple[int, Any, Any]], batch: Batch) -> None:
    """Add a batch to its space's running count and (params, flops) minimum and maximum."""
    low = (int(batch.params.min()), int(batch.flops.min()))
    high = (int(batch.params.max()), int(batch.flops.max()))
    if batch.space in ranges:
        n, was_low, was_high = ranges[batch.space]
        low = (min(low[0], was_low[0]), min(low[1], was_low[1]))
        high = (max(high[0], was_high[0]), max(high[1], was_high[1]))
    else:
        n = 0
    ranges[batch.space] = (n + len(batch), low, high)


def _verify_with_fvcore(candidates: Sequence[Candidate], spec: Spec) -> None:
    """Build each candidate and compare fvcore's counts with the formulas."""
    from rich.progress import track

    from explorer.models import build_model
    from explorer.models.measure import measure

    mismatches = []
    for c in track(candidates, description="fvcore", console=err, transient=True):
        measured = measure(build_model(c.arch, spec.num_classes), spec.data.resolution)
        if (measured.params, measured.flops, measured.acts) != (
            c.complexity.params,
            c.complexity.flops,
            c.complexity.acts,
        ):
            mismatches.append((c.key, measured, c.complexity))
    for key, measured, formula in mismatches:
        err.print(f"[red]mismatch[/] {key}: fvcore {measured} formula {formula}", highlight=False)
    if mismatches:
        raise CheckFailed(f"{len(mismatches)} of {len(candidates)} candidates differ from fvcore")
    out.print(f"fvcore agrees on all {len(candidates)} candidates (params, flops, acts)")


def _check_output_suffix(path: Path, allowed: tuple[str, ...] | None = None) -> None:
    """`allowed`: the table formats write_table writes (tables.TABLE_SUFFIXES) unless given."""
    if allowed is None:
        from explorer.tables import TABLE_SUFFIXES

        allowed = TABLE_SUFFIXES
    if path.suffix.lower() not in allowed:
        fail(
            f"--output {path}: unknown format {path.suffix or '(none)'!r}; use {', '.join(allowed)}"
        )


# --- commands of later stages are added below this line ---

_RunsDir = Annotated[
    Path, typer.Option("--runs-dir", help="Where results, checkpoints and logs live.")
]
_StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="A SQLAlchemy URL; default SQLite at RUNS_DIR/explorer.db."),
]

# What --device takes (train.resolve_device reads "auto" as cuda where there is one).
_DEVICES = ("cpu", "cuda", "auto")
_DeviceOpt = Annotated[
    str, typer.Option("--device", help=f"{', '.join(_DEVICES[:-1])} or {_DEVICES[-1]}.")]


def _check_device(device: str) -> None:
    if device not in _DEVICES:
        fail(f"--device {device!r}: use {', '.join(_DEVICES[:-1])} or {_DEVICES[-1]}")


_TensorBoardOpt = Annotated[
    bool,
    typer.Option("--tensorboard", help="Write each trial's epochs as TensorBoard event files "
                 "to RUNS_DIR/NAME/tensorboard/TRIAL_KEY/ (needs the tracking extra)."),
]


def _check_tensorboard() -> None:
    from explorer.tracking import summary_writer_class

    summary_writer_class()


@app.command()
def run(
    spec: _SpecArg,
    runs_dir: _RunsDir = Path("runs"),
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Join the Ray cluster this machine is a node of: 'auto' or the head's "
            "HOST:PORT (default: RAY_ADDRESS). A token the cluster requires is taken from "
            "where Ray looks (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).",
        ),
    ] = None,
    store: _StoreOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and record, train nothing.")
    ] = False,
    new_version: Annotated[
        bool,
        typer.Option("--new-version", help="Keep a changed spec beside the old as a new version."),
    ] = False,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", help="CPUs Ray may use on this machine.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", hidden=True)] = None,
    fail_trial: Annotated[str | None, typer.Option("--fail-trial", hidden=True)] = None,
    overrides: _SetOpt = None,
    tensorboard: _TensorBoardOpt = False,
    store_retry: Annotated[
        float | None,
        typer.Option("--store-retry", min=0.0, metavar="SECONDS",
                     help="How long a store outage (a database server restarting, a lock "
                     "held) is waited out, the sweep's results held meanwhile, before the "
                     "run stops with exit 2 (the same command resumes). Default: 60."),
    ] = None,
) -> None:
    """Train every trial of SPEC on Ray; the same command again resumes.

    Exit 0 when every trial finished, 3 when some failed, 2 for a bad spec or set-up.
    """
    need("sweep", "explorer run")
    _need_store_driver(store)
    from explorer.console import SweepDisplay
    from explorer.experiment import RunRequest, run_experiment

    parsed, spec_text = read_spec_source(spec, overrides)
    if tensorboard:
        _check_tensorboard()
    address = address or _ray_address_from_env(announce=not dry_run)
    request = RunRequest(
        spec=parsed,
        spec_text=spec_text,
        runs_dir=runs_dir,
        store_url=store,
        address=address,
        new_version=new_version,
        dry_run=dry_run,
        max_steps=max_steps,
        num_cpus=num_cpus,
        fail_trial=fail_trial,
        tensorboard=tensorboard,
        **({} if store_retry is None else {"store_retry_seconds": store_retry}),
    )
    try:
        summary = run_experiment(request, SweepDisplay(out))
    except KeyboardInterrupt as stop:  # the sweep stopped its trials, gave the lease back
        word, code = stopped(stop)
        err.print(f"{word}: experiment {parsed.name!r} stopped; the same command again "
                  "resumes it (running trials from their last checkpoint)", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(code) from None
    for key, reason in summary.failed:
        # The stored error verbatim: "[enforce fail at inline_container.cc:672]" is not markup.
        err.print(f"[red]failed[/] trial {key}: {escape(reason)}", highlight=False,
                  soft_wrap=True)
    out.print(
        f"{summary.experiment} v{summary.version}: {summary.finished} finished, "
        f"{len(summary.failed)} failed this run, {summary.seconds:.1f} s",
        highlight=False,
    )
    if summary.failed:
        raise typer.Exit(ExitCode.FAILED)


def _ray_address_from_env(announce: bool) -> str | None:
    """RAY_ADDRESS, Ray's own variable: ray.init would join it anyway, but as a machine of its
    own (with --num-cpus), which fails; it is passed on as the address instead."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address and announce:
        out.print(f"joining the Ray cluster at {address} (RAY_ADDRESS)", highlight=False,
                  markup=False)
    return address or None


def _preflight_data(spec: Spec) -> Dataset | DataSpec:
    """A missing dataset is found before anything trains, in one line; returns the data as
    the check loaded it (its block where the check loads nothing: an image folder), so it
    is loaded once."""
    from explorer.data import check_available

    loaded = check_available(spec.data)
    return loaded if loaded is not None else spec.data


@app.command()
def status(
    experiment: Annotated[
        str | None, typer.Argument(help="One experiment; all when left out.")
    ] = None,
    runs_dir: _RunsDir = Path("runs"),
    store: _StoreOpt = None,
) -> None:
    """How far each experiment is: trials by status, the best error, the driver running it.

    Trials left running by a driver that is gone (stopped, or on this host a pid that no
    longer runs) show as interrupted: the next run resumes them.
    """
    import socket

    from explorer.console import status_table

    reader = open_reader(runs_dir, store)
    # Counted by the database: a large store's trials never reach Python.
    frame = reader.experiment_status([experiment] if experiment else None)
    frame = frame[frame["trials"] > 0]  # as before: an experiment is listed by its trials
    if frame.empty:
        fail(f"no experiment {experiment!r} in the store" if experiment else "the store is empty")
    out.print(status_table(frame, reader.leases(), socket.gethostname()))


@app.command()
def export(
    experiment: Annotated[str, typer.Argument(help="The experiment's name.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="FILE.csv, .parquet or .json")
    ] = None,
    runs_dir: _RunsDir = Path("runs"),
    store: _StoreOpt = None,
    epochs: Annotated[bool, typer.Option("--epochs", help="One row per trial and epoch.")] = False,
    mlflow: Annotated[
        str | None,
        typer.Option("--mlflow", help="Log each trial as an MLflow run at this tracking URI "
                     "(e.g. file:///tmp/mlruns, offline); again updates the same runs. "
                     "Needs the tracking extra."),
    ] = None,
) -> None:
    """Write an experiment's trials (or their epochs) to a table file, or to MLflow."""
    from explorer.store import STAGE_LIST_COLUMNS
    from explorer.tables import write_frames

    if output is None and mlflow is None:
        fail("export needs --output FILE or --mlflow URI")
    if output is not None:
        _check_output_suffix(output)
    reader = open_reader(runs_dir, store)
    if not reader.experiment_status([experiment])["trials"].gt(0).any():
        fail(f"no experiment {experiment!r} in the store; `explorer status` lists them")
    if output is not None:
        # Read and written a chunk at a time: memory stays flat however many rows.
        chunks = (reader.iter_epochs_frames([experiment]) if epochs
                  else reader.iter_trials_frames([experiment]))
        rows = write_frames(chunks, output, lists=STAGE_LIST_COLUMNS)
        out.print(f"wrote {rows} rows to {output}", highlight=False, markup=False)
    if mlflow is not None:
        _export_mlflow(reader, experiment, mlflow)


def _export_mlflow(reader: Reader, experiment: str, uri: str) -> None:
    from explorer.tracking import export_to_mlflow

    if uri.startswith("file:") or "://" not in uri:
        # The user named a file store; MLflow 3 serves one only with this opt-in.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    done = export_to_mlflow(reader, experiment, uri)
    out.print(f"MLflow experiment {done.experiment!r} at {done.uri}: {done.created} runs "
              f"added, {done.updated} updated, {done.epochs_logged} epochs logged",
              highlight=False, markup=False)


def open_reader(runs_dir: Path, url: str | None) -> Reader:
    from explorer.store import Reader, store_url

    _need_store_driver(url)
    return Reader.open(store_url(runs_dir, url))


@app.command()
def train(
    spec: _SpecArg,
    key: Annotated[
        str, typer.Option("--key", help="The candidate's key (see `explorer enumerate`).")
    ],
    seed: Annotated[
        int | None, typer.Option("--seed", help="Default: the spec's first seed.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Override the spec's epochs.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after N steps.")
    ] = None,
    device: _DeviceOpt = "auto",
    checkpoint_dir: Annotated[
        Path | None, typer.Option("--checkpoint-dir", help="Checkpoint here and resume from here.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Final metrics as JSON on the last line.")
    ] = False,
    overrides: _SetOpt = None,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from these weights: a torch.save'd state_dict "
                     "(torchvision's layout, or any block form's) or an explorer checkpoint."),
    ] = None,
    tensorboard: _TensorBoardOpt = False,
    runs_dir: _RunsDir = Path("runs"),
) -> None:
    """Train one candidate without a scheduler, with a progress bar."""
    need("train", "explorer train")
    from explorer.console import train_with_progress

    parsed = read_spec(spec, overrides)
    _check_device(device)
    matches = [c for c in _all_candidates(parsed, spec) if c.key.startswith(key)]
    if len({c.key for c in matches}) != 1:
        what = "no candidate" if not matches else "several candidates"
        fail(
            f"{what} of {spec} has a key starting with {key!r}; `explorer enumerate {spec}` "
            "lists the keys"
        )
    data = _preflight_data(parsed)
    build = _initial_builder(init, matches[0].arch, parsed.num_classes) if init else None
    from explorer.metrics import Status
    from explorer.train import TrialError

    try:
        with contextlib.ExitStack() as stack:
            on_epoch = None
            if tensorboard:
                on_epoch = _tensorboard_callback(stack, parsed, matches[0], seed, epochs, runs_dir)
            result = train_with_progress(
                matches[0].arch,
                data,
                parsed.train,
                seed=seed,
                epochs=epochs,
                device=device,
                checkpoint_dir=checkpoint_dir,
                max_steps=max_steps,
                console=err,
                title=f"{matches[0].arch.label()} {matches[0].key}",
                build=build,
                on_epoch=on_epoch,
            )
    except TrialError as problem:
        # It cannot start as asked (no GPU, a checkpoint of another trial): a set-up problem,
        # exit 2. One that fails while training (a diverged loss, out of memory) returns
        # status "failed" instead, and exits 3 below.
        raise problem.about(f"trial {matches[0].key}") from None
    final = dataclasses.asdict(result.metrics) if result.metrics is not None else {}
    summary = {
        **final,
        "status": result.status.value,
        "error": result.error,
        "epochs_completed": result.epochs_completed,
        "device": result.device,
        "key": matches[0].key,
        "seed": result.seed,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        out.print(summary)
    if result.status != Status.FINISHED:
        raise typer.Exit(ExitCode.FAILED)


def _initial_builder(path: Path, arch: Arch, num_classes: int) -> ModelBuilder:
    """`--init PATH` checked against the trial's architecture before anything trains."""
    from explorer.train import TrialError, read_initial_weights, starting_from

    try:
        return starting_from(read_initial_weights(path, arch, num_classes))
    except TrialError as problem:
        raise problem.about("--init") from None
    except OSError as problem:
        fail(f"--init {path}: {problem.strerror or problem}")


def _tensorboard_callback(stack: contextlib.ExitStack, spec: Spec, candidate: Candidate,
                         seed: int | None, epochs: int | None, runs_dir: Path
                         ) -> Callable[[EpochMetrics], None]:
    """An on_epoch that logs to RUNS_DIR/NAME/tensorboard/TRIAL_KEY/ (the trial key of the
    recipe that trains, --epochs included)."""
    from explorer.plan import plan_trial
    from explorer.tracking import TensorBoardLog, tensorboard_dir

    recipe = spec.train if epochs is None else spec.train.with_epochs(epochs)
    trial = plan_trial(spec.model_copy(update={"train": recipe}), candidate,
                       recipe.seeds[0] if seed is None else seed)
    log = stack.enter_context(TensorBoardLog(tensorboard_dir(runs_dir, spec.name)))
    err.print(f"TensorBoard: {log.root / trial.trial_key}", highlight=False, markup=False,
              soft_wrap=True)
    return lambda metrics: log.epoch(trial.trial_key, metrics.to_dict())
def _all_candidates(parsed: Spec, path: Path) -> tuple[Candidate, ...]:
    """Every candidate of the spec's spaces; exit 2 naming the file when a sampled space
    cannot yield its n."""
    from explorer.space import enumerate_spec

    try:
        return enumerate_spec(parsed).candidates
    except ExplorerError as problem:
        raise problem.about(str(path)) from None


@app.command()
def cost(
    spec: _SpecArg,
    device: _DeviceOpt = "auto",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write a table file.")
    ] = None,
) -> None:
    """Measure every candidate: latency at batch 1, training images/s, peak memory."""
    need("train", "explorer cost")
    import pandas as pd

    from explorer.console import CostBar
    from explorer.cost import Timing, measure_costs
    from explorer.tables import write_table

    parsed = read_spec(spec)
    if output is not None:
        _check_output_suffix(output)
    candidates = _all_candidates(parsed, spec)
    _check_device(device)
    with CostBar(err, len(candidates)) as bar:
        rows = measure_costs(
            [(c.key, c.arch) for c in candidates],
            parsed.train,
            Timing(num_classes=parsed.num_classes, resolution=parsed.data.resolution,
                   device=device),
            on_candidate=bar.starting,
            on_row=bar.measured,
        )
    frame = pd.DataFrame([r.to_dict() for r in rows])
    out.print(frame.to_string(index=False), markup=False, highlight=False)
    if output is not None:
        write_table(frame, output)


@app.command()
def dashboard(
    runs_dir: _RunsDir = Path("runs"),
    store: _StoreOpt = None,
    port: Annotated[int, typer.Option("--port", help="The port to listen on.")] = 8501,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="The address to listen on; loopback by default (there is no login)."
        ),
    ] = "127.0.0.1",
) -> None:
    """Browse the results in a live Streamlit dashboard (read-only; updates during a sweep)."""
    need("dashboard", "explorer dashboard")
    from explorer.serve import is_loopback, port_problem, serve
    from explorer.store import store_url

    open_reader(runs_dir, store).close()  # a missing or unreadable store: one line, exit 2
    problem = port_problem(host, port)
    if problem is not None:
        fail(problem)
    if not is_loopback(host):
        err.print(
            f"[yellow]warning:[/] listening on {escape(host)}: the dashboard has no login, so "
            f"anyone who can reach port {port} there can read every result",
            highlight=False,
            soft_wrap=True,
        )
    shown = f"[{host}]" if ":" in host else host
    out.print(f"dashboard: http://{shown}:{port} (Ctrl-C stops it)", highlight=False,
              markup=False)
    raise typer.Exit(serve(store_url(runs_dir, store), host, port))


@app.command()
def report(
    experiment: Annotated[str, typer.Argument(help="The experiment's name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
    runs_dir: _RunsDir = Path("runs"),
    store: _StoreOpt = None,
    proxy: Annotated[
        str | None,
        typer.Option("--proxy", metavar="EXPERIMENT",
                     help="A cheaper run of the same candidates (e.g. fewer epochs): the report "
                          "shows how well its ranking predicts this one's (Kendall τ). "
                          "Default: this experiment's own errors a quarter of the way through."),
    ] = None,
) -> None:
    """Write an experiment's charts and tables as one standalone HTML file (opens offline)."""
    need("dashboard", "explorer report", ("plotly", "scipy"))  # no streamlit
    from explorer.report import write_report

    _check_output_suffix(output, (".html", ".htm"))
    summary = write_report(open_reader(runs_dir, store), experiment, output,
                           proxy_experiment=proxy)
    out.print(
        f"wrote {output}: {summary.experiment} v{summary.version}, {summary.finished} of "
        f"{summary.trials} trials finished, {summary.figures} charts",
        highlight=False, markup=False,
    )
    fidelity = summary.proxy
    if fidelity is not None and not fidelity.table.empty:
        tau = "n/a" if math.isnan(fidelity.tau) else f"{fidelity.tau:.2f}"
        out.print(f"proxy fidelity: Kendall τ = {tau} between {fidelity.proxy} and the full "
                  f"run over {len(fidelity.table)} candidates", highlight=False, markup=False)


@app.command()
def compare(
    experiment: Annotated[str, typer.Argument(help="The experiment's name.")],
    space: Annotated[
        list[str] | None,
        typer.Option("--space", help="Compare this space (repeatable); default: every space."),
    ] = None,
    normalize: Annotated[
        str | None,
        typer.Option("--normalize", metavar="none|params|flops",
                     help="Weight models so that every space has the same complexity "
                          "distribution, uniform over the log-spaced bins they share "
                          "(Radosavovic et al. 2019); none: plain EDFs and scipy's ks_2samp. "
                          "Default: flops, or none (with a notice) where the spaces share no "
                          "flops bin.", show_default=False),
    ] = None,
    bins: Annotated[
        int, typer.Option("--bins", help="Complexity bins for --normalize.")
    ] = 10,
    binning: Annotated[
        str, typer.Option("--binning", metavar="log|linear",
                          help="log: log-spaced bins over the models' span, only those every "
                               "space occupies; linear: NDS's own weights (compute_norm_ws): "
                               "--bins linear bins of --range, each space on its own, an "
                               "empty bin refused.")
    ] = "log",
    span: Annotated[
        tuple[float, float] | None,
        typer.Option("--range", metavar="LO HI", show_default=False,
                     help="The complexity range of --binning linear (models outside it are "
                          "left out, as NDS does), e.g. --range 1.5e6 4.5e6."),
    ] = None,
    equivalence: Annotated[
        float | None,
        typer.Option("--equivalence", metavar="D", show_default=False,
                     help="Also say per pair whether the spaces are better, worse, "
                          "equivalent within KS distance D (a one-sided 95% bootstrap bound "
                          "below D), or whether there are not enough models to say."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the contract's) instead.")
    ] = False,
    plan: Annotated[
        bool, typer.Option("--plan", help="Also say how many models per space the KS test "
                                          "needs to detect a difference of --ks.")
    ] = False,
    ks: Annotated[
        float, typer.Option("--ks", help="The KS difference --plan sizes the samples for.")
    ] = 0.1,
    runs_dir: _RunsDir = Path("runs"),
    store: _StoreOpt = None,
) -> None:
    """Compare an experiment's design spaces as error distributions: per space n, min, mean
    and the EDF, per pair the two-sample KS test, and the verdict on doubling C."""
    need("dashboard", "explorer compare", ("scipy",))  # its KS tests and Kendall τ
    from explorer.analysis import by_candidate
    from explorer.compare import (
        BINNING_CHOICES,
        DEFAULT_NORMALIZE,
        MEANS_COLUMNS,
        NORMALIZE_CHOICES,
        compare_or_plain,
        plan_samples,
        space_names,
    )
    from explorer.console import print_comparison

    if normalize is not None and normalize not in NORMALIZE_CHOICES:
        fail(f"--normalize {normalize!r}: use {', '.join(NORMALIZE_CHOICES)}")
    if not 0 < ks <= 1:
        fail(f"--ks {ks:g}: a KS difference is between 0 and 1 (e.g. 0.1)")
    if bins < 1:
        fail(f"--bins {bins}: use 1 or more bins")
    if binning not in BINNING_CHOICES:
        fail(f"--binning {binning!r}: use {' or '.join(BINNING_CHOICES)}")
    if binning == "linear" and (span is None or not 0 <= span[0] < span[1]):
        fail("--binning linear needs --range LO HI with 0 <= LO < HI (the complexity range "
             "NDS bins linearly, e.g. --range 1.5e6 4.5e6)")
    if binning == "log" and span is not None:
        fail("--range sets the bins of --binning linear; add --binning linear")
    if binning == "linear" and normalize == "none":
        fail("--binning linear bins a complexity: use --normalize params or flops")
    if equivalence is not None and not 0 < equivalence < 1:
        fail(f"--equivalence {equivalence:g}: a KS distance margin is between 0 and 1 "
             "(e.g. 0.1)")
    reader = open_reader(runs_dir, store)
    # Only the columns a comparison reads; the means over seeds made from them.
    trials = reader.trials_frame([experiment], columns=MEANS_COLUMNS)
    if trials.empty:
        fail(f"no experiment {experiment!r} in the store; `explorer status` lists them")
    means = by_candidate(trials)
    known = space_names(trials)
    unknown = [s for s in space or [] if s not in known]
    if unknown:
        fail(f"--space {unknown[0]!r} is not a space of {experiment!r}; its spaces are: "
             f"{', '.join(known)}")
    chosen = list(dict.fromkeys(space or [])) or None
    linear = span if binning == "linear" else None
    result, note = compare_or_plain(trials, spaces=chosen,
                                    normalize=normalize or DEFAULT_NORMALIZE, bins=bins,
                                    span=linear, margin=equivalence,
                                    candidates=means)
    if note is not None:
        if normalize is not None or linear is not None:  # asked for: say why it cannot be
            fail(note)
        err.print(f"note: {note}; compared without normalisation", highlight=False,
                  soft_wrap=True, markup=False)
    if plan:
        result = dataclasses.replace(result, plan=plan_samples(result, trials, ks=ks,
                                                               candidates=means))
    if as_json:
        print(json.dumps(result.to_json()))
        return
    print_comparison(out, experiment, result)


@app.command()
def refine(
    experiment: Annotated[str, typer.Argument(help="The experiment's name.")],
    space: Annotated[str, typer.Option("--space", help="The sampled space to refine.",
                                       show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the tables.")
    ] = False,
    write: Annotated[
        Path | None,
        typer.Option("--write", metavar="CHILD.yaml", show_default=False,
                     help="Write the child spec: the experiment's spec with a new space, the "
                          "parent's sample section plus the chosen constraints and a seed of "
                          "its own (written atomically)."),
    ] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option("--constraint", metavar="NAME", show_default=False,
                     help="The constraint(s) --write adds (repeatable; the names the "
                          "proposals table lists). Default: the best-ranked one that is "
                          "better than or equivalent to the parent."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", show_default=False,
                     help="The child experiment's name (default: NAME-refined)."),
    ] = None,
    equivalence: Annotated[
        float, typer.Option("--equivalence", metavar="D",
                            help="The KS distance within which a child counts as equivalent.")
    ] = 0.1,
    normalize: Annotated[
        str, typer.Option("--normalize", metavar="none|params|flops",
                          help="Complexity normalisation of the EDFs, as `explorer compare`'s "
                               "(equal weights where the child and parent share no bin).")
    ] = "flops",
    draws: Annotated[
        int, typer.Option("--draws", help="Bootstrap draws (at least 2,000).")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap draws.")] = 0,
    runs_dir: _RunsDir = Path("runs"),
    store: _StoreOpt = None,
) -> None:
    """Refine a sampled design space as the RegNet paper does: each parameter's good region
    (the best models' values, by bootstrap), constraints read on the models already drawn and
    ranked, and with --write the child spec to run next."""
    need("dashboard", "explorer refine", ("scipy",))  # its KS tests
    from explorer.compare import NORMALIZE_CHOICES
    from explorer.console import print_refinement
    from explorer.files import atomic_write_text
    from explorer.refine import child_spec, choose
    from explorer.refine import refine as refine_space

    if normalize not in NORMALIZE_CHOICES:
        fail(f"--normalize {normalize!r}: use {', '.join(NORMALIZE_CHOICES)}")
    if not 0 < equivalence < 1:
        fail(f"--equivalence {equivalence:g}: a KS distance margin is between 0 and 1 "
             "(e.g. 0.1)")
    if draws < 2000:
        fail(f"--draws {draws}: the bootstrap needs at least 2000 draws")
    if write is not None:
        _check_output_suffix(write, (".yaml", ".yml"))
        if not write.parent.is_dir():
            fail(f"--write {write}: the folder {write.parent} does not exist")
    reader = open_reader(runs_dir, store)
    records = reader.experiments()
    record = records[(records["experiment"] == experiment) & records["latest"]]
    if record.empty:
        fail(f"no experiment {experiment!r} in the store; `explorer status` lists them")
    spec_text = str(record.iloc[0]["spec_text"])
    from explorer.spec import SpecError, parse_spec

    try:
        spec = parse_spec(spec_text, f"{experiment} (recorded spec)")
    except SpecError as problem:
        fail(f"the recorded spec of {experiment!r} no longer validates: {problem.problems[0]}")
    result = refine_space(reader.trials_frame([experiment]), spec, experiment, space,
                          draws=draws, seed=seed, normalize=normalize, margin=equivalence)
    written = None
    if write is not None:
        chosen = choose(result.proposals, constraint or [])
        text, child, child_space = child_spec(
            spec_text, spec, space, chosen, name=name,
            source=f" {experiment} --space {space}")
        atomic_write_text(write, text)
        written = (write, child.name, child_space, [p.name for p in chosen])
    if as_json:
        out_json = result.to_json()
        if written is not None:
            out_json["written"] = {"path": str(written[0]), "experiment": written[1],
                                   "space": written[2], "constraints": written[3]}
        print(json.dumps(out_json))
        return
    print_refinement(out, result)
    if written is not None:
        out.print(f"wrote {written[0]}: experiment {written[1]}, space {written[2]} "
                  f"({', '.join(written[3])}) beside {space}; next: explorer run {written[0]}, "
                  f"then explorer compare {written[1]} --space {space} --space {written[2]} "
                  f"--equivalence {equivalence:g}", highlight=False, soft_wrap=True)


@app.command("import")
def import_command(
    files: Annotated[list[str], typer.Argument(
        help="The files to import, one space each (for --format optuna: the study's "
             "storage URL).", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", metavar="nds|pycls|optuna|csv",
                                     help="The files' layout (docs/IMPORT.md).")],
    name: Annotated[str, typer.Option("--name", help="The experiment to import into.")],
    space: Annotated[
        list[str] | None,
        typer.Option("--space", help="Each file's space, in order (default: the file's "
                                     "name without its suffix; the study's name)."),
    ] = None,
    study: Annotated[
        list[str] | None,
        typer.Option("--study", help="--format optuna: a study to import (repeatable: one "
                                     "space each, all from one storage URL or one URL each)."),
    ] = None,
    template: Annotated[
        str, typer.Option("--template", metavar="cifar|imagenet",
                          help="csv/optuna: the stem of rows that do not name one.")
    ] = "cifar",
    stem_width: Annotated[
        int, typer.Option("--stem-width", help="csv/optuna: the stem width of rows that do "
                                               "not give one.")
    ] = 64,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Largest difference (percent of explorer's "
                                                "count) allowed between a file's params or "
                                                "flops and explorer's.")
    ] = 1.0,
    accept_mismatch: Annotated[
        bool, typer.Option("--accept-mismatch", help="Import even where the file's params "
                                                     "or flops differ beyond --tolerance.")
    ] = False,
    new_version: Annotated[
        bool, typer.Option("--new-version", help="Keep an import of changed files beside the "
                                                 "old one as a new version.")
    ] = False,
    runs_dir: _RunsDir = Path("runs"),
    store: _StoreOpt = None,
) -> None:
    """Bring a population trained elsewhere (NDS, pycls, Optuna, CSV) into the store as a
    read-only experiment, its complexity recounted by explorer; the same import again
    changes nothing. Exit 2 when the file's params or flops differ from explorer's beyond
    --tolerance (unless --accept-mismatch)."""
    _need_store_driver(store)
    from explorer.importers import (
        count_all,
        mismatches,
        read_population,
        write_population,
    )
    from explorer.store import Writer, store_url

    if tolerance < 0:
        fail(f"--tolerance {tolerance:g}: a percentage, 0 or more")
    population = read_population(fmt, files, space or [], studies=study or [],
                                 template=template, stem_width=stem_width)
    counted = count_all(population.networks, population.skipped)
    for line in population.skipped.lines():
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    checks = mismatches(counted, tolerance)
    for check in mismatches(counted):
        err.print(check.line(), highlight=False, markup=False, soft_wrap=True)
    beyond = [c for c in checks if c.differing]
    if beyond and not accept_mismatch:
        worst = max(beyond, key=lambda c: c.largest_pct)
        fail(f"{worst.what} of {worst.differing} models differ from explorer's count by "
             f"more than {tolerance:g}% (up to {worst.largest_pct:.3g}%, at "
             f"{worst.example}): nothing imported; pass --accept-mismatch to import "
             "them with explorer's figures")
    with Writer.open(store_url(runs_dir, store)) as writer:
        summary = write_population(writer, name, population, counted,
                                   new_version=new_version)
    spaces = ", ".join(f"{s} ({n})" for s, n in summary.spaces.items())
    out.print(f"{summary.experiment} v{summary.version}: imported {summary.trials} models "
              f"({spaces}); skipped {summary.skipped.total}", highlight=False, markup=False,
              soft_wrap=True)


def _store_fault(problem: Exception) -> str | None:
    """A database's operational failure (connection lost, timeout, disk full) that escaped a
    command, as one line; None for anything else (a bug)."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(problem, OperationalError):
        return None
    from explorer.store.retry import reason

    return (f"the results database failed: {reason(problem)}; check the store (--store or "
            "--runs-dir) and run the same command again")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: runs the app, turning Ctrl-C into exit code 130 without a traceback."""
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=True)
    except KeyboardInterrupt as stop:
        word, code = stopped(stop)
        err.print(f"{word}; the same command again resumes")
        sys.exit(code)
    except Exception as problem:  # a bug: one line for people, the traceback on request
        if os.environ.get("EXPLORER_DEBUG"):
            raise
        store_fault = _store_fault(problem)
        if store_fault is not None:  # the database failing under a read: not a bug
            err.print(f"[bold red]error:[/] {escape(store_fault)}", highlight=False,
                      soft_wrap=True)
            sys.exit(ExitCode.SETUP)
        err.print(
            f"[bold red]internal error:[/] {type(problem).__name__}: {escape(str(problem))} "
            "(set EXPLORER_DEBUG=1 for the traceback, and please report it)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(ExitCode.BUG)


if __name__ == "__main__":
    main()
