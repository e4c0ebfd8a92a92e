"""The models of one run besides its champion: challengers, a weighted ensemble and an A/B split.

A run names its models once, by flags (``--challenger NAME=URI``, ``--ensemble NAME=WEIGHT,...``,
``--ab NAME=SHARE,... --ab-salt SALT``) or in a models file (``--models models.yaml``, see
``Lineup.from_file``); the batch job, the DAG and ``scoring serve`` read the same ``Lineup``. The
champion is the run's ``--model-uri`` and is called ``champion`` wherever a model is named (an ensemble
member, an A/B variant). Model names become column names (``challenger_<name>_probability``), so they
are lower-case identifiers.

Weights and shares are normalised here, once, so that the manifest, the scores and the online answers
use the very same numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from scoring.errors import ScoringError

# The champion's name where a model is named: an ensemble member, an A/B variant, a route.
CHAMPION = "champion"
# Names that mean something else in the output's columns or the online routes (/predict/batch).
RESERVED_NAMES = (CHAMPION, "ensemble", "ab", "variant", "batch")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

Pairs = tuple[tuple[str, float], ...]


class LineupError(ScoringError):
    """The run's models, weights or split do not make sense together."""


# Where a probability (or a regressor's value) becomes a positive decision, unless the lineup says.
DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class Lineup:
    """The models a run scores beside its champion, and how their scores are combined.

    Attributes:
        challengers: (name, model reference) pairs, scored on every row beside the champion.
        ensemble: (model name, weight) pairs, weights normalised to sum to 1; empty for no ensemble.
        ab: (model name, share) pairs, shares normalised to sum to 1; empty for no A/B split.
        ab_salt: The experiment's salt; with the id it decides a row's variant (required with ``ab``).
        decision_threshold: Where a probability (or a regressor's value) becomes a positive decision,
            for the share of decisions a challenger flips.
    """

    challengers: tuple[tuple[str, str], ...] = ()
    ensemble: Pairs = ()
    ab: Pairs = ()
    ab_salt: str | None = None
    decision_threshold: float = DECISION_THRESHOLD

    def __post_init__(self) -> None:
        names = [name for name, _ in self.challengers]
        for name in names:
            check_name(name)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise LineupError(f"challenger {repeated[0]!r} is named twice")
        known = (CHAMPION, *names)
        for what, pairs in (("--ensemble", self.ensemble), ("--ab", self.ab)):
            for name, _ in pairs:
                if name not in known:
                    raise LineupError(
                        f"{what}: no model named {name!r} in this run (models: {', '.join(known)})"
                    )
        object.__setattr__(self, "ensemble", normalised(self.ensemble, "--ensemble"))
        object.__setattr__(self, "ab", normalised(self.ab, "--ab"))
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Refuse an ensemble or a split of one model, a split without its salt, and the other way."""
        if self.ab and not self.ab_salt:
            raise LineupError("--ab needs --ab-salt (the experiment's id): it decides each row's variant")
        if self.ab_salt and not self.ab:
            raise LineupError("--ab-salt without --ab: name the variants and their shares")
        if len(self.ensemble) == 1:
            raise LineupError("--ensemble needs two models or more")
        if len(self.ab) == 1:
            raise LineupError("--ab needs two variants or more")
        if not math.isfinite(self.decision_threshold):
            raise LineupError("--decision-threshold must be a finite number")

    @property
    def names(self) -> tuple[str, ...]:
        """Every model of the run, the champion first."""
        return (CHAMPION, *(name for name, _ in self.challengers))

    @property
    def several(self) -> bool:
        """Whether the run scores more than its champion."""
        return bool(self.challengers)

    def uri(self, name: str, champion_uri: str) -> str:
        """The model reference of the model called ``name``."""
        return champion_uri if name == CHAMPION else dict(self.challengers)[name]

    def to_json(self) -> dict:
        """The lineup as JSON values in the models file's shape (``from_mapping`` reads them back)."""
        return {
            "challengers": dict(self.challengers),
            "ensemble": dict(self.ensemble),
            "ab": {"split": dict(self.ab), "salt": self.ab_salt} if self.ab else {},
            "decision_threshold": self.decision_threshold,
        }

    def to_cli_args(self) -> list[str]:
        """The flags that give this lineup (empty for a champion alone at the default threshold)."""
        args: list[str] = []
        for name, uri in self.challengers:
            args += ["--challenger", f"{name}={uri}"]
        if self.ensemble:
            args += ["--ensemble", format_pairs(self.ensemble)]
        if self.ab:
            args += ["--ab", format_pairs(self.ab), "--ab-salt", str(self.ab_salt)]
        if self.decision_threshold != DECISION_THRESHOLD:
            args += ["--decision-threshold", repr(self.decision_threshold)]
        return args

    @classmethod
    def from_mapping(cls, values: Mapping) -> Lineup:
        """A lineup from the models file's (or a DAG param's) mapping; see ``from_file``.

        Raises:
            LineupError: An unknown key, or a value of the wrong kind.
        """
        unknown = sorted(set(values) - {"champion", "challengers", "ensemble", "ab", "decision_threshold"})
        if unknown:
            raise LineupError(f"unknown key {unknown[0]!r} (keys: champion, challengers, ensemble, ab, "
                              "decision_threshold)")  # fmt: skip
        ab = values.get("ab") or {}
        if not isinstance(ab, Mapping) or set(ab) - {"split", "salt"}:
            raise LineupError("ab must be a mapping with 'split' (variant: share) and 'salt'")
        challengers = _mapping(values.get("challengers"), "challengers")
        for name, uri in challengers.items():
            if not isinstance(uri, str):
                raise LineupError(f"challengers: {name!r} must be a model reference (a string)")
        salt = ab.get("salt")
        return cls(
            challengers=tuple((str(k), v) for k, v in challengers.items()),
            ensemble=_number_pairs(values.get("ensemble"), "ensemble"),
            ab=_number_pairs(ab.get("split"), "ab.split"),
            ab_salt=None if salt is None else str(salt),
            decision_threshold=_number(
                values.get("decision_threshold", DECISION_THRESHOLD), "decision_threshold"
            ),
        )

    @classmethod
    def from_file(cls, path: str) -> tuple[str | None, Lineup]:
        """The champion's reference (None when the file names none) and the lineup of a models file.

        The file is YAML (JSON is YAML too)::

            champion: models:/credit-risk@champion
            challengers:
              candidate: models:/credit-risk@challenger
              onnx: models:/credit-risk-onnx/3
            ensemble: {champion: 0.7, candidate: 0.3}
            ab:
              split: {champion: 0.9, candidate: 0.1}
              salt: experiment-42
            decision_threshold: 0.5

        Raises:
            LineupError: The file cannot be read or parsed, or its lineup is not valid.
        """
        import yaml

        try:
            values = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise LineupError(f"models file {path}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise LineupError(f"models file {path}: not YAML: {str(e).splitlines()[0]}") from e
        if not isinstance(values, Mapping):
            raise LineupError(f"models file {path}: expected a mapping of champion, challengers, ...")
        try:
            champion = values.get("champion")
            if champion is not None and not isinstance(champion, str):
                raise LineupError("champion must be a model reference (a string)")
            return champion, cls.from_mapping(values)
        except LineupError as e:
            raise LineupError(f"models file {path}: {e}") from e


def check_name(name: str) -> str:
    """``name`` if it can name a challenger (and so a column), else a one-line error.

    Raises:
        LineupError: ``name`` is reserved or not a lower-case identifier of at most 40 characters.
    """
    if name in RESERVED_NAMES:
        raise LineupError(f"{name!r} cannot name a challenger: it is reserved ({', '.join(RESERVED_NAMES)})")
    if not _NAME.fullmatch(name):
        raise LineupError(
            f"challenger name {name!r} must be a lower-case identifier (a-z, 0-9, _), at most 40 characters"
        )
    return name


def parse_challenger(text: str) -> tuple[str, str]:
    """``NAME=URI`` as a (name, reference) pair.

    Raises:
        LineupError: No ``=``, or a name that cannot name a challenger.
    """
    name, sep, uri = text.partition("=")
    if not sep or not uri:
        raise LineupError(f"challenger {text!r}: expected NAME=URI")
    return check_name(name.strip()), uri.strip()


def parse_pairs(text: str, what: str) -> Pairs:
    """``NAME=NUMBER,...`` as (name, number) pairs, in order (not yet normalised).

    Raises:
        LineupError: An item without ``=``, a value that is not a number, or a name given twice.
    """
    pairs = []
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep:
            raise LineupError(f"{what} {text!r}: expected NAME=NUMBER,...")
        pairs.append((name.strip(), _number(value.strip(), f"{what} {name.strip()}")))
    return tuple(pairs)


def format_pairs(pairs: Pairs) -> str:
    """(name, number) pairs as ``NAME=NUMBER,...``, exactly (``parse_pairs`` reads them back)."""
    return ",".join(f"{name}={value!r}" for name, value in pairs)


def normalised(pairs: Pairs, what: str) -> Pairs:
    """Weights or shares divided by their sum, so that they sum to 1.

    Raises:
        LineupError: A name repeats, a value is negative, or they sum to zero.
    """
    if not pairs:
        return ()
    names = [name for name, _ in pairs]
    for name in names:
        if names.count(name) > 1:
            raise LineupError(f"{what}: {name!r} is given twice")
    for name, value in pairs:
        if not math.isfinite(value) or value < 0:
            raise LineupError(f"{what}: {name}={value} must be a non-negative number")
    total = math.fsum(value for _, value in pairs)
    if total <= 0:
        raise LineupError(f"{what}: the values sum to zero")
    return tuple((name, value / total) for name, value in pairs)


def _number(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise LineupError(f"{what}: {value!r} is not a number") from e
    if isinstance(value, bool):
        raise LineupError(f"{what}: {value!r} is not a number")
    return number


def _mapping(value: object, what: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LineupError(f"{what} must be a mapping of name: value")
    return value


def _number_pairs(value: object, what: str) -> Pairs:
    if isinstance(value, str):
        return parse_pairs(value, what)
    return tuple((str(k), _number(v, f"{what} {k}")) for k, v in _mapping(value, what).items())
