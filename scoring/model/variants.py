"""A/B assignment: a row's variant from a stable hash of its id and the experiment's salt.

One function for the batch job's Python workers and ``POST /predict/ab``: the same id and salt give the
same variant on any machine, in any Python process (no ``hash()``, whose seed changes per process), and
in SQL too. The rule, for analysts who want to recompute it (Athena, DuckDB and Spark have ``sha256``)::

    h = the first 8 bytes of sha256(salt || 0x1f || key), as an unsigned big-endian integer
    variant = the first variant, in the split's order, whose cumulative share x 2^64 exceeds h

where ``key`` is the id's text (``str()`` of an integer or a string id; several id columns are joined by
0x1f). Changing the salt reshuffles everyone; changing the shares moves only the rows at the borders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

_SEPARATOR = "\x1f"
_SPAN = 1 << 64


def variant_key(values: Sequence[object]) -> str:
    """The text a row's id columns hash as: each value's ``str()``, joined by 0x1f.

    Integers held by numpy (``np.int64(7)``) and by Python (``7``) give the same text, ``"7"``, so a
    parquet id column and a JSON id agree.
    """
    return _SEPARATOR.join(_text(value) for value in values)


def thresholds(split: Sequence[tuple[str, float]]) -> list[int]:
    """The cumulative shares of a split as integers of [0, 2^64]; the last is exactly 2^64."""
    bounds, running = [], 0.0
    for _, share in split:
        running += share
        bounds.append(min(_SPAN, round(running * _SPAN)))
    bounds[-1] = _SPAN  # shares sum to 1 up to rounding: every hash falls in some variant
    return bounds


def assign_variants(keys: Iterable[str], split: Sequence[tuple[str, float]], salt: str) -> np.ndarray:
    """The variant of each key, as an object array of variant names.

    Args:
        keys: Each row's ``variant_key``.
        split: (variant, share) pairs; shares sum to 1 (``scoring.lineup.normalised``).
        salt: The experiment's salt.
    """
    names = [name for name, _ in split]
    bounds = thresholds(split)
    prefix = (salt + _SEPARATOR).encode()
    hashes = np.fromiter(
        (int.from_bytes(hashlib.sha256(prefix + key.encode()).digest()[:8], "big") for key in keys),
        dtype=np.uint64,
    )
    # searchsorted on the first len-1 bounds: h < bounds[0] is variant 0, and so on.
    at = np.searchsorted(np.array(bounds[:-1], dtype=np.uint64), hashes, side="right")
    return np.array(names, dtype=object)[at]


def _text(value: object) -> str:
    return str(value.item() if isinstance(value, np.generic) else value)
