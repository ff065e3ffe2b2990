"""How a spec file becomes a `Spec`: its text read within bounds, YAML parsed with the
line of every key (a hostile file refused in milliseconds), ``--set`` overrides applied,
and every problem reported at its line by raising `SpecError`.

Overrides (the CLI's ``--set train.epochs=2``) are applied to the parsed YAML before
validation and checked exactly like the file; a problem they cause is located at
``--set KEY.PATH`` instead of a line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from explorer.spec.problems import Loc, Problem, SpecError, _dotted, _show, problems_in
from explorer.spec.schema import Spec

__all__ = [
    "MAX_DEPTH",
    "MAX_SPEC_BYTES",
    "MAX_VALUES",
    "Parsed",
    "load_spec",
    "load_spec_source",
    "parse_spec",
    "parse_yaml",
    "read_spec_text",
    "spec_source",
]


@dataclass(frozen=True)
class Parsed:
    """YAML data with the line of every key and item (1-based)."""

    data: Any
    lines: dict[Loc, int]
    duplicates: list[tuple[Loc, int]]
    origins: dict[Loc, str] = dataclasses.field(default_factory=dict)  # keys --set made
    values: int = 0  # the values it expands to (aliases counted in full), at most the budget


# Bounds on what a spec may be, so a hostile file is refused in milliseconds, not after
# gigabytes: a spec is a few kB holding a few hundred values, nested about six levels deep
# (spaces.NAME.axes.depths.I.J). Pure-Python YAML composes ~20,000 nodes a second, so the
# value bound also keeps a written-out file under half a second.
MAX_SPEC_BYTES = 256 * 1024
MAX_VALUES = 10_000
MAX_DEPTH = 32


class _Refused(Exception):
    """A spec refused while it is read (too large, too deep, an alias cycle): one problem."""

    def __init__(self, line: int, message: str, path: str = "(yaml)",
                 value: str | None = None) -> None:
        super().__init__(message)
        self.line, self.message, self.path, self.value = line, message, path, value


def _too_deep(line: int) -> _Refused:
    return _Refused(line, f"the spec nests more than {MAX_DEPTH} levels deep")


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts the values its document expands to while composing it.

    An alias is a reference to its anchor's node, so composing stays linear in the text,
    but a walk visits the anchored node once per alias: nine levels of ten aliases are
    10**9 values (the "billion laughs"). Counting each node once and each alias as the
    whole size of its anchor gives the expanded size exactly, before anything expands.
    """

    def __init__(self, stream: str, budget: int = MAX_VALUES) -> None:
        super().__init__(stream)
        self.budget = budget  # what is left of MAX_VALUES (a --set value: after the file's)
        self.values = 0
        self.aliased = False
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size, once composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node))
            if size is None:  # its anchor is still being composed: the alias is inside it
                raise _Refused(line, f"the alias *{event.anchor} is inside its own anchor, so "
                                     "it never ends; write the value out")
            self.aliased = True
            self._count(size, line)
            return node
        self.depth += 1
        if self.depth > MAX_DEPTH:  # compose recurses; refuse before Python's stack runs out
            raise _too_deep(line)
        start = self._count(1, line)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if event.anchor is not None:
            self.sizes[id(node)] = self.values - start
        return node

    def _count(self, values: int, line: int) -> int:
        """Add `values` to the expanded size; the size before them."""
        before = self.values
        self.values += values
        if self.values > self.budget:
            if self.aliased:
                raise _Refused(line, f"the spec expands to more than {MAX_VALUES:,} values "
                                     "(YAML aliases); write it out or use fewer aliases")
            raise _Refused(line, f"the spec holds more than {MAX_VALUES:,} values; "
                                 "a spec is a few kB")
        return before


def parse_yaml(text: str, budget: int = MAX_VALUES) -> Parsed:
    """Parse YAML keeping lines, and noting duplicate keys (yaml.safe_load keeps the last).

    Raises _Refused for a document too large or deep to be a spec (see _BoundedLoader), so
    the walk below visits at most `budget` nodes.
    """
    loader = _BoundedLoader(text, budget)  # what yaml.compose does, with the budget given
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {(): 1}
    duplicates: list[tuple[Loc, int]] = []
    if root is None:
        return Parsed(None, lines, duplicates)
    constructor = yaml.SafeLoader("")

    def scalar(node: yaml.Node, loc: Loc) -> Any:
        try:
            return constructor.construct_object(node, deep=True)
        except ValueError as err:  # a date like 2001-02-30, an int past Python's 4300 digits
            reason = str(err).split(";")[0]
            raise _Refused(node.start_mark.line + 1, f"YAML cannot read this value: {reason}",
                           _dotted(loc), _show(node.value)) from None

    def build(node: yaml.Node, loc: Loc) -> Any:
        line = node.start_mark.line + 1
        if len(loc) > MAX_DEPTH:  # deeper than composed: aliases nested in aliases
            raise _too_deep(line)
        lines.setdefault(loc, line)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):  # unhashable, and maybe huge
                    raise _Refused(key_node.start_mark.line + 1,
                                   "a key is a name or a number, not a list or mapping",
                                   _dotted(loc))
                key = scalar(key_node, loc)
                child = (*loc, key if isinstance(key, str | int) else str(key))
                if key in out:
                    duplicates.append((child, key_node.start_mark.line + 1))
                    continue
                lines[child] = key_node.start_mark.line + 1
                out[key] = build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return scalar(node, loc)

    return Parsed(build(root, ()), lines, duplicates, values=loader.values)


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Read and validate a spec file, with `overrides` (``KEY.PATH=VALUE``) applied; raises
    SpecError listing every problem."""
    return load_spec_source(path, overrides)[0]


def load_spec_source(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Spec, str]:
    """The validated spec and the text an experiment records: the file's own, or with
    overrides the YAML they produce (see `spec_source`)."""
    text = read_spec_text(path)
    return parse_spec(text, str(path), overrides), spec_source(text, str(path), overrides)


def read_spec_text(path: str | Path) -> str:
    """A spec file's text, bounded in size; raises SpecError when it cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SPEC_BYTES + 1)  # no further: the file may be huge, or endless
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError([Problem(str(path), 0, "(file)", f"the spec is larger than "
                                     f"{MAX_SPEC_BYTES // 1024} kB; a spec is a few kB")])
        text = raw.decode("utf-8")  # YAML reads \r\n and \r as line breaks, as read_text did
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise SpecError(
            [Problem(str(path), 0, "(file)", f"cannot read the spec: {reason}")]
        ) from None
    return text


def parse_spec(text: str, filename: str = "<spec>", overrides: Sequence[str] = ()) -> Spec:
    """Validate spec text with `overrides` applied; `filename` names it in the problems."""
    parsed, problems = _parse_overridden(text, filename, overrides)
    problems.extend(_check(parsed, filename))
    if problems:
        raise SpecError(problems)
    return Spec.model_validate(parsed.data)


def spec_source(text: str, filename: str, overrides: Sequence[str]) -> str:
    """The spec text an experiment records (its hash follows the validated spec either way).

    Without overrides, the file's text as it is. With them, the YAML they produce, under a
    header naming the file and each ``--set``: a spec that reproduces the run on its own
    (the file's comments are not carried over)."""
    if not overrides:
        return text
    parsed, problems = _parse_overridden(text, filename, overrides)
    if problems:
        raise SpecError(problems)
    data = parsed.data
    header = f"# {filename} with\n" + "".join(f"#   --set {item}\n" for item in overrides)
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                   default_flow_style=None)


def _parse_overridden(text: str, filename: str,
                      overrides: Sequence[str]) -> tuple[Parsed, list[Problem]]:
    """The parsed file with every override applied that can be, and the problems of those
    that cannot (validation then reports the rest)."""
    parsed = _parse_text(text, filename)
    if not overrides:
        return parsed, []
    if parsed.data is None:
        parsed = Parsed({}, parsed.lines, parsed.duplicates, values=parsed.values)
    if not isinstance(parsed.data, dict):
        return parsed, []  # reported by _check as not a mapping
    problems: list[Problem] = []
    values = parsed.values
    for item in overrides:
        # The file and every --set value share the file's bounds (MAX_VALUES), so an
        # override cannot smuggle in what a file would be refused for.
        outcome = _apply_override(parsed, item, filename, MAX_VALUES - values)
        if isinstance(outcome, Problem):
            problems.append(outcome)
        else:
            values += outcome
    return dataclasses.replace(parsed, values=values), problems


def _apply_override(parsed: Parsed, item: str, filename: str, budget: int) -> Problem | int:
    """Set one ``KEY.PATH=VALUE`` (the value read as YAML: ``2``, ``[0, 1]``, ``null``, within
    `budget` values) in the parsed data, creating missing mappings on the way; the values it
    added, or a problem if it cannot be set."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    origin = f"--set {key.strip()}"
    if not sep or not all(parts):
        return Problem(filename, 0, key.strip() or "(none)",
                       "expected KEY.PATH=VALUE, e.g. --set train.epochs=2", repr(item), origin)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        return Problem(filename, 0, key, f"the value is larger than {MAX_SPEC_BYTES // 1024} kB; "
                       "a spec is a few kB", None, origin)
    try:
        read = parse_yaml(text, budget)
    except _Refused as err:
        return Problem(filename, 0, key, err.message, err.value, origin)
    except yaml.YAMLError as err:
        reason = getattr(err, "problem", None) or "invalid YAML"
        return Problem(filename, 0, key, f"the value is not YAML: {reason}", _show(text), origin)
    if read.duplicates:
        inside, _ = read.duplicates[0]
        return Problem(filename, 0, _dotted((*parts, *inside)), "duplicate key; each key may "
                       "appear once", None, origin)
    value = read.data
    node: Any = parsed.data
    loc: list[str | int] = []
    for depth, part in enumerate(parts):
        index: str | int = part
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return Problem(filename, 0, _dotted(loc), f"is a list of {len(node)}; "
                               f"index it with 0 to {len(node) - 1}", part, origin)
            index = int(part)
        elif not isinstance(node, dict):
            return Problem(filename, 0, _dotted(loc), "is not a mapping, so it has no key "
                           f"{part!r}", _show(node), origin)
        loc.append(index)
        if depth == len(parts) - 1:
            node[index] = value
        elif isinstance(node, dict) and node.get(index) is None:
            node[index] = {}  # a section the file leaves out (or null)
            parsed.origins[tuple(loc)] = origin
        node = node[index]
    parsed.origins[tuple(loc)] = origin
    return read.values


def _parse_text(text: str, filename: str) -> Parsed:
    try:
        parsed = parse_yaml(text)
    except _Refused as err:
        raise SpecError([Problem(filename, err.line, err.path, err.message, err.value)]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 0
        reason = err.problem or "invalid YAML"
        raise SpecError(
            [Problem(filename, line, "(yaml)", f"YAML syntax error: {reason}")]
        ) from None
    except yaml.YAMLError as err:
        raise SpecError([Problem(filename, 0, "(yaml)", f"YAML syntax error: {err}")]) from None
    return parsed


def _check(parsed: Parsed, filename: str) -> Iterator[Problem]:
    def at(
        loc: Loc, message: str, value: Any = None, show_value: bool = True, line_loc: Loc = ()
    ) -> Problem:
        return Problem(
            filename,
            _line_of(parsed.lines, line_loc or loc),
            _dotted(loc),
            message,
            _show(value) if show_value else None,
            _origin_of(parsed.origins, line_loc or loc),
        )

    for loc, line in parsed.duplicates:
        yield Problem(filename, line, _dotted(loc), "duplicate key; each key may appear once")
    data = parsed.data
    if not isinstance(data, dict):
        yield at((), "a spec is a YAML mapping of keys (name, model, spaces, ...)", data)
        return
    yield from problems_in(data, at)


def _origin_of(origins: dict[Loc, str], loc: Loc) -> str | None:
    """The override that set the key at `loc` or one of its parents, if one did."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in origins:
            return origins[loc[:end]]
    return None


def _line_of(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of the key at `loc`, or of its nearest parent that exists."""
    while loc not in lines:
        loc = loc[:-1]
    return lines[loc]


