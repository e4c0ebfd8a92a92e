"""Several models' scores of one batch as the run's columns: champion, challengers, ensemble, variant.

The batch job's Python workers and ``scoring serve`` call the same functions, so a row's ensemble score
and its variant are the same offline and online. The columns, in order:

* ``prediction``, ``probability``: the champion's, as for a run of the champion alone; under an A/B
  split, those of the row's variant's model.
* ``challenger_<name>_prediction``, ``challenger_<name>_probability``: each challenger's, on every row.
* ``ensemble_probability`` (classifiers) or ``ensemble_prediction`` (regressors): the weighted mean of
  the members' probabilities (values), with the weights of ``Lineup.ensemble``.
* ``variant``: the row's A/B variant (``scoring.model.variants``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scoring.columns import ENSEMBLE_PREFIX, PREDICTION, PROBABILITY, VARIANT, challenger_prefix
from scoring.errors import ModelError
from scoring.lineup import CHAMPION, Lineup
from scoring.model.output import OutputSpec, Scores, prediction_values
from scoring.model.signature import Feature
from scoring.model.variants import assign_variants

# Column types, as Spark's simpleString names them.
_PROBABILITY_TYPE = {"binary": "double", "multiclass": "array<double>"}


@dataclass(frozen=True)
class Column:
    """One output column of a run's scores: its name and its Spark type name."""

    name: str
    type: str


def union_features(features: Mapping[str, Sequence[Feature]]) -> tuple[Feature, ...]:
    """The features a run checks: every model's, the champion's order first, ranges intersected.

    A row is rejected for the run when any model would reject it, so a feature two models declare
    with different ranges keeps the narrower one.

    Args:
        features: Each model's features, by model name, the champion first.

    Raises:
        ModelError: Two models declare the same column with different types.
    """
    union: dict[str, Feature] = {}
    owner: dict[str, str] = {}
    for model, declared in features.items():
        for f in declared:
            seen = union.get(f.name)
            if seen is None:
                union[f.name], owner[f.name] = f, model
                continue
            if seen.type != f.type:
                raise ModelError(
                    f"feature {f.name!r} is {seen.type} for model {owner[f.name]!r} but {f.type} for "
                    f"model {model!r}: one column cannot feed both"
                )
            low = max((v for v in (seen.min, f.min) if v is not None), default=None)
            high = min((v for v in (seen.max, f.max) if v is not None), default=None)
            union[f.name] = Feature(f.name, f.type, low, high)
    return tuple(union.values())


def score_columns(output: OutputSpec, prefix: str = "") -> list[Column]:
    """One model's columns: ``prediction`` and, for classifiers, ``probability``, after ``prefix``."""
    columns = [Column(f"{prefix}prediction", output.prediction_type)]
    if output.probability is not None:
        columns.append(Column(f"{prefix}probability", _PROBABILITY_TYPE[output.probability]))
    return columns


def ensemble_column(outputs: Mapping[str, OutputSpec], lineup: Lineup) -> Column | None:
    """The ensemble's column, or None when the run has no ensemble."""
    if not lineup.ensemble:
        return None
    first = outputs[lineup.ensemble[0][0]]
    if first.probability is None:
        return Column(f"{ENSEMBLE_PREFIX}{PREDICTION}", "double")
    return Column(f"{ENSEMBLE_PREFIX}{PROBABILITY}", _PROBABILITY_TYPE[first.probability])


def lineup_columns(lineup: Lineup, outputs: Mapping[str, OutputSpec]) -> list[Column]:
    """Every score column of a run, in order (see the module's docstring).

    Args:
        lineup: The run's models besides the champion.
        outputs: The output shape of every model, by name (``champion`` included).
    """
    served = outputs[lineup.ab[0][0]] if lineup.ab else outputs[CHAMPION]
    columns = score_columns(served)
    for name, _ in lineup.challengers:
        columns += score_columns(outputs[name], challenger_prefix(name))
    ensemble = ensemble_column(outputs, lineup)
    if ensemble is not None:
        columns.append(ensemble)
    if lineup.ab:
        columns.append(Column(VARIANT, "string"))
    return columns


def check_lineup(lineup: Lineup, outputs: Mapping[str, OutputSpec]) -> None:
    """Refuse, before any row is scored, an ensemble or a split whose models cannot be combined.

    Raises:
        ModelError: Ensemble members that are not all classifiers with the same classes or all
            regressors; A/B variants whose outputs differ in shape (they share the champion's columns).
    """
    members = [name for name, _ in lineup.ensemble]
    for name in members[1:]:
        _check_same_scores(members[0], outputs[members[0]], name, outputs[name])
    if lineup.ensemble and outputs[members[0]].probability is None:
        for name in members:
            if outputs[name].prediction_type != "double":
                raise ModelError(
                    f"--ensemble: model {name!r} gives {outputs[name].prediction_type} labels without "
                    "probabilities, which cannot be averaged (score it with --scores auto or probability)"
                )
    variants = [name for name, _ in lineup.ab]
    for name in variants[1:]:
        first, other = outputs[variants[0]], outputs[name]
        if (first.prediction_type, first.probability) != (other.prediction_type, other.probability):
            raise ModelError(
                f"--ab: variants {variants[0]!r} and {name!r} give differently shaped scores "
                f"({_described(first)} against {_described(other)}); they share the prediction columns"
            )
        _check_same_scores(variants[0], first, name, other)


def lineup_values(
    lineup: Lineup,
    outputs: Mapping[str, OutputSpec],
    scores: Mapping[str, Scores],
    keys: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The values of ``lineup_columns`` for one batch, by column name.

    Args:
        lineup: The run's models besides the champion.
        outputs: Every model's output shape, by name.
        scores: Every model's scores of the batch, by name.
        keys: Each row's ``scoring.model.variants.variant_key``; required under an A/B split.

    Returns:
        Predictions typed as ``OutputSpec.prediction_type`` says, binary probabilities as float64,
        multiclass probabilities as a float64 matrix (rows x classes), variants as strings.
    """
    values: dict[str, np.ndarray] = {}
    if lineup.ab:
        if keys is None:
            raise ValueError("an A/B split needs each row's id key")
        variants = assign_variants(keys, lineup.ab, str(lineup.ab_salt))
        values.update(_values(pick_variant(variants, scores), outputs[lineup.ab[0][0]]))
    else:
        values.update(_values(scores[CHAMPION], outputs[CHAMPION]))
    for name, _ in lineup.challengers:
        values.update(_values(scores[name], outputs[name], challenger_prefix(name)))
    ensemble = ensemble_column(outputs, lineup)
    if ensemble is not None:
        values[ensemble.name] = blend(lineup, outputs, scores)
    if lineup.ab:
        values[VARIANT] = variants
    return values


def blend(lineup: Lineup, outputs: Mapping[str, OutputSpec], scores: Mapping[str, Scores]) -> np.ndarray:
    """The ensemble's weighted mean: of probabilities for classifiers, of predictions for regressors."""
    total = None
    for name, weight in lineup.ensemble:
        s = scores[name]
        part = s.probability if outputs[name].probability is not None else s.prediction
        term = weight * np.asarray(part, dtype=np.float64)
        total = term if total is None else total + term
    return total


def pick_variant(variants: np.ndarray, scores: Mapping[str, Scores]) -> Scores:
    """Each row's scores from its variant's model."""
    names = list(dict.fromkeys(variants.tolist()))
    first = scores[names[0]] if names else next(iter(scores.values()))
    prediction = np.array(first.prediction, copy=True)
    probability = None if first.probability is None else np.array(first.probability, dtype=np.float64)
    for name in names[1:]:
        rows = variants == name
        prediction[rows] = scores[name].prediction[rows]
        if probability is not None:
            probability[rows] = scores[name].probability[rows]
    return Scores(prediction, probability, first.methods, first.classes)


def _values(scores: Scores, output: OutputSpec, prefix: str = "") -> dict[str, np.ndarray]:
    values = {f"{prefix}prediction": prediction_values(scores.prediction, output.prediction_type)}
    if output.probability is not None and scores.probability is not None:
        values[f"{prefix}probability"] = np.asarray(scores.probability, dtype=np.float64)
    return values


def _check_same_scores(first: str, a: OutputSpec, name: str, b: OutputSpec) -> None:
    if a.probability != b.probability:
        raise ModelError(
            f"models {first!r} and {name!r} cannot be combined: {_described(a)} against {_described(b)}"
        )
    if a.classes is not None and b.classes is not None and list(a.classes) != list(b.classes):
        raise ModelError(
            f"models {first!r} and {name!r} cannot be combined: classes {list(a.classes)} "
            f"against {list(b.classes)}"
        )


def _described(output: OutputSpec) -> str:
    if output.probability is None:
        return f"{output.prediction_type} predictions without probabilities"
    return f"{output.probability} probabilities"


def join_variants(variants: np.ndarray, parts: Mapping[str, Scores]) -> Scores:
    """Each row's scores when each variant's model scored only the rows of its own variant.

    What ``pick_variant`` gives from every model's scores of every row, for a caller that scores a row
    with its variant's model alone (``POST /predict/ab``: online, no model runs for an answer that is
    thrown away, and a challenger that fails cannot fail the champion's traffic).

    Args:
        variants: Each row's variant (``scoring.model.variants.assign_variants``), at least one row.
        parts: By variant, its model's scores of that variant's rows, in row order; a variant that got
            no row may be absent.
    """
    variants = np.asarray(variants, dtype=object)
    names = list(dict.fromkeys(variants.tolist()))
    first = parts[names[0]]
    # result_type: labels of one type (check_lineup), but strings of different lengths widen.
    prediction = np.empty(len(variants), dtype=np.result_type(*(parts[n].prediction for n in names)))
    probability = None
    if first.probability is not None:
        probability = np.empty((len(variants), *np.shape(first.probability)[1:]), dtype=np.float64)
    for name in names:
        rows = variants == name
        prediction[rows] = parts[name].prediction
        if probability is not None:
            probability[rows] = parts[name].probability
    return Scores(prediction, probability, first.methods, first.classes)
