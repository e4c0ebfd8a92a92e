"""Exact quantiles of a column read a batch at a time, in memory that does not grow with its rows.

The drift check bins a day's scores on the previous day's deciles. Sorting that column holds all of it
(8 bytes a row: 800 MB at 100M rows); a sketch (KLL, t-digest) holds little but answers within a rank
error. This finds the exact order statistics in a few passes over the column instead, a radix
selection: each value maps to a 64-bit key in the values' order, and a pass counts the keys of each
wanted rank's candidates by their next 16 bits (65,536 counts). The counts tell which 16-bit digit the
ranked key has, which narrows its candidates to the keys that share one more digit, until they are few
enough to hold (``HOLD_LIMIT``) and sort, or all 64 bits are known. The quantiles are then numpy's own
(``np.quantile``'s default, linear interpolation between the two nearest order statistics), to the
last bit: rank error 0.

Passes: one when the column has at most ``HOLD_LIMIT`` values; otherwise usually three (scores in
[0, 1]: the first pass splits each power of two in 16, the second in a million), never more than four.
Memory: per distinct range of candidates (at most two per quantile), 65,536 counts or at most
``HOLD_LIMIT`` held keys, whatever the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# What the drift check states about its deciles, in its JSON and in the report.
METHOD = "exact (streaming radix selection)"
RANK_ERROR = 0.0

# Candidates are held and sorted once at most this many remain (2 MB of keys).
HOLD_LIMIT = 1 << 18
_DIGIT_BITS = 16
_DIGITS = 1 << _DIGIT_BITS
_SIGN = np.uint64(1 << 63)


def order_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned 64-bit keys in the order of the values as float64 (-0.0 just below 0.0).

    A positive float's bits already sort as integers; setting the sign bit puts them above the
    negatives, whose bits are flipped so that a larger magnitude sorts lower.
    """
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def key_values(keys: np.ndarray) -> np.ndarray:
    """The float64 values of ``order_keys``' keys."""
    keys = np.asarray(keys, dtype=np.uint64)
    return np.where(keys & _SIGN, keys ^ _SIGN, ~keys).view(np.float64)


@dataclass(frozen=True)
class Candidates:
    """The keys a wanted rank is among: those whose top ``depth`` bits are ``prefix``.

    Attributes:
        depth: Bits of the ranked key known so far (0: any key is a candidate).
        prefix: Their value.
        below: Keys of the column below every candidate.
        count: Candidates in the column.
    """

    depth: int
    prefix: int
    below: int
    count: int

    @property
    def held(self) -> bool:
        """Whether the next pass holds the candidates (few enough), rather than counts their digits."""
        return self.count <= HOLD_LIMIT

    def among(self, keys: np.ndarray, tops: np.ndarray) -> np.ndarray:
        """The candidates among a batch's ``keys``, whose top ``depth`` bits are ``tops``."""
        return keys if self.depth == 0 else keys[tops == np.uint64(self.prefix)]

    def digits(self, keys: np.ndarray) -> np.ndarray:
        """The candidates' next 16-bit digit."""
        shift = np.uint64(64 - self.depth - _DIGIT_BITS)
        return ((keys >> shift) & np.uint64(_DIGITS - 1)).astype(np.intp)

    def narrow(self, counts: np.ndarray, rank: int) -> Candidates:
        """The candidates that share the ranked key's next digit, from the digits' ``counts``."""
        cumulative = np.cumsum(counts)
        digit = int(np.searchsorted(cumulative, rank - self.below, side="right"))
        before = int(cumulative[digit - 1]) if digit else 0
        prefix = (self.prefix << _DIGIT_BITS) | digit
        return Candidates(self.depth + _DIGIT_BITS, prefix, self.below + before, int(counts[digit]))


@dataclass(frozen=True)
class Quantiles:
    """A column's quantiles, and what finding them took.

    Attributes:
        values: The quantiles, as ``np.quantile`` gives them; all NaN when the column holds a NaN
            (as ``np.quantile``), or when it is empty.
        rows: Values in the column.
        passes: Reads of the column it took.
    """

    values: np.ndarray
    rows: int
    passes: int


def exact_quantiles(
    read: Callable[[], Iterable[np.ndarray]], quantiles: Sequence[float], rows_hint: int
) -> Quantiles:
    """The exact ``quantiles`` of the column that ``read`` yields a batch at a time.

    Args:
        read: A new iterator over the column's batches (float or integer arrays, nulls as NaN) at
            each call: one call per pass.
        quantiles: Probabilities in [0, 1].
        rows_hint: The column's rows as far as known (the footers'): at most ``HOLD_LIMIT``, the
            first pass holds the whole column.
    """
    first = Candidates(0, 0, 0, rows_hint)
    held, counts, rows, nans = _scan(read, [first])
    wanted = np.asarray(quantiles, dtype=np.float64)
    if nans or rows == 0:
        return Quantiles(np.full(len(wanted), np.nan), rows, 1)
    low, high, gamma = _neighbours(wanted, rows)
    searches = dict.fromkeys({*low.tolist(), *high.tolist()}, first)
    values: dict[int, float] = {}
    passes = 1
    while True:
        for rank, candidates in list(searches.items()):
            if candidates in held:
                values[rank] = float(key_values(held[candidates][rank - candidates.below]))
                del searches[rank]
                continue
            searches[rank] = narrowed = candidates.narrow(counts[candidates], rank)
            if narrowed.depth == 64:  # every bit known: the key itself
                values[rank] = float(key_values(narrowed.prefix))
                del searches[rank]
        if not searches:
            return Quantiles(_interpolate(low, high, gamma, values), rows, passes)
        held, counts, _, _ = _scan(read, list(set(searches.values())))
        passes += 1


def _scan(
    read: Callable[[], Iterable[np.ndarray]], wanted: list[Candidates]
) -> tuple[dict[Candidates, np.ndarray], dict[Candidates, np.ndarray], int, int]:
    """One pass: each ``wanted`` range's candidates held, or their next digits counted.

    Returns:
        The held ranges' keys (sorted), the other ranges' digit counts, the rows read and the NaNs
        among them.
    """
    held: dict[Candidates, list[np.ndarray]] = {c: [] for c in wanted if c.held}
    counts = {c: np.zeros(_DIGITS, dtype=np.int64) for c in wanted if not c.held}
    rows = nans = 0
    depth = wanted[0].depth  # every search moves one digit a pass: all are as deep
    for values in read():
        rows += len(values)
        nans += int(np.count_nonzero(np.isnan(values))) if values.dtype.kind == "f" else 0
        keys = order_keys(values)
        tops = keys >> np.uint64(64 - depth) if depth else keys
        for candidates, parts in held.items():
            parts.append(candidates.among(keys, tops))
        for candidates, total in counts.items():
            total += np.bincount(candidates.digits(candidates.among(keys, tops)), minlength=_DIGITS)
    empty = np.empty(0, dtype=np.uint64)
    return {c: np.sort(np.concatenate([empty, *parts])) for c, parts in held.items()}, counts, rows, nans


def _neighbours(quantiles: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each quantile's two ranks and the weight between them, as ``np.quantile``'s linear method.

    numpy's virtual index is ``(rows - 1) * q``; one at or past the last rank takes the last value.
    """
    virtual = (rows - 1) * quantiles
    previous = np.floor(virtual)
    gamma = virtual - previous
    low = previous.astype(np.int64)
    high = low + 1
    last = virtual >= rows - 1
    low[last] = high[last] = rows - 1
    return low, high, gamma


def _interpolate(
    low: np.ndarray, high: np.ndarray, gamma: np.ndarray, values: dict[int, float]
) -> np.ndarray:
    """Interpolate as numpy's ``_lerp``, bit for bit: from the lower value below a weight of 0.5."""
    a = np.array([values[r] for r in low.tolist()])
    b = np.array([values[r] for r in high.tolist()])
    difference = b - a
    return np.where(gamma >= 0.5, b - difference * (1 - gamma), a + difference * gamma)
