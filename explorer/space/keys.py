"""Content keys for many networks at once: `canonical_keys` writes Arch.key's canonical
JSON directly from numpy columns; `distinct_rows` is the factorisation it and the file
writers use (each distinct row formatted once)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from explorer.arch import stage_strides

__all__ = ["canonical_keys", "distinct_rows"]


def _factorise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values of a 1-D integer array and each value's index among them.

    Values in a narrow range are looked up in a table, without sorting.
    """
    low, high = int(values.min()), int(values.max())
    if high - low > 4 * values.size + 1024:
        levels, inverse = np.unique(values, return_inverse=True)
        return levels, inverse.reshape(-1)
    present = np.zeros(high - low + 1, dtype=bool)
    present[values - low] = True
    levels = np.flatnonzero(present)
    lookup = np.cumsum(present) - 1
    return levels + low, lookup[values - low]


def distinct_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D integer array and, per row, the index of its distinct row.

    Like np.unique(axis=0, return_inverse=True) up to the order of the rows,
    without its slow sort of rows as opaque bytes: each column is factorised
    on its own and the codes are combined into one integer per row.
    """
    if values.shape[0] == 0:
        return values[:0], np.zeros(0, dtype=np.int64)
    code = np.zeros(values.shape[0], dtype=np.int64)
    room = 1
    for column in values.T:
        levels, inverse = _factorise(column)
        room *= len(levels)
        if room >= 2**62:  # the combined code would overflow
            unique, inverse = np.unique(values, axis=0, return_inverse=True)
            return unique, inverse.reshape(-1)
        code = code * len(levels) + inverse
    _, inverse = _factorise(code)
    first = np.zeros(int(inverse.max()) + 1, dtype=np.int64)
    first[inverse] = np.arange(values.shape[0])  # a row of each code: rows of one code are equal
    return values[first], inverse


def _text_per_row(template: str, values: np.ndarray) -> np.ndarray:
    """`template % row` for every row of a 2-D array, each distinct row formatted once."""
    unique, inverse = distinct_rows(values)
    text = np.array([template % tuple(row) for row in unique.tolist()], dtype=object)
    return text[inverse]


def canonical_keys(template: str, blocks: Sequence[str], stem_width: np.ndarray,
                   stages: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """Arch.key of every row, from the columns: the same canonical JSON, written directly.

    json.dumps with sorted keys and no spaces, per record, costs more than the
    whole count; the text has one fixed shape, so each stage's part is
    formatted once per distinct stage and the parts are joined column-wise.
    """
    strides = stage_strides(template, stages["depths"].shape[1])  # type: ignore[arg-type]
    parts = [[f'{{"block":"{b}","stages":[' for b in blocks]]
    for s, stride in enumerate(strides):
        stage = np.stack([stages["bottleneck_widths"][:, s], stages["cardinalities"][:, s],
                          stages["depths"][:, s], stages["widths"][:, s]], axis=1)
        part = ('{"bottleneck_width":%d,"cardinality":%d,"depth":%d,"stride":' + str(stride)
                + ',"width":%d}' + ("," if s < len(strides) - 1 else ""))
        parts.append(_text_per_row(part, stage).tolist())
    tail = '],"stem_width":%d,"template":"' + template + '"}'
    parts.append(_text_per_row(tail, stem_width.reshape(-1, 1)).tolist())
    if not parts[0]:
        return ()
    texts = "\n".join(map("".join, zip(*parts, strict=True))).encode().split(b"\n")
    return tuple(h.hexdigest()[:16] for h in map(hashlib.sha256, texts))
