"""How far each challenger's scores are from the champion's, measured on the written output.

For the manifest, per challenger against the champion, on the same rows:

* ``pearson``, ``spearman``: correlations of the scores (the positive class's probability of a binary
  classifier, a regressor's value); Spearman with average ranks for ties, as ``scipy.stats.spearmanr``.
* ``mean_abs_diff``, ``p99_abs_diff``: of the scores' absolute difference (multiclass: the largest
  difference over the classes). The 99th percentile is Spark's ``percentile_approx`` at an accuracy of
  ``P99_ACCURACY``: the smallest difference that at least 99 % of the rows do not exceed, exact up to
  ``rows / P99_ACCURACY`` ranks (exact below that many rows).
* ``flip_share``: the share of rows whose decision differs: the score on either side of the decision
  threshold (multiclass: the top class differs).

Under an A/B split, the ``prediction`` column holds the champion's scores only on the rows of the
champion's variant: the figures are measured there (a random sample, since the split is a hash), and
are None when the champion is not a variant.

Read from the written files, not recomputed from the models, so the figures describe the very columns an
analyst reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from scoring.lineup import CHAMPION, Lineup
from scoring.model.combine import challenger_prefix
from scoring.model.output import OutputSpec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

P99_ACCURACY = 100_000
FIGURES = ("rows", "pearson", "spearman", "mean_abs_diff", "p99_abs_diff", "flip_share")


def agreement(scored: DataFrame, lineup: Lineup, outputs: Mapping[str, OutputSpec]) -> dict[str, dict]:
    """Each challenger's agreement with the champion (see the module's docstring), by challenger name.

    Args:
        scored: The written output's rows.
        lineup: The run's models.
        outputs: Every model's output shape, by name.
    """
    from pyspark.sql import functions as F

    if not lineup.challengers:
        return {}
    if lineup.ab:
        if CHAMPION not in dict(lineup.ab):
            return {name: dict.fromkeys(FIGURES) for name, _ in lineup.challengers}
        scored = scored.where(F.col("variant") == CHAMPION)
    threshold = lineup.decision_threshold
    aggregates: list[Column] = [F.count(F.lit(1)).alias("rows")]
    for name, _ in lineup.challengers:
        a, b, kind = _scores(outputs[CHAMPION], outputs[name], challenger_prefix(name))
        at = f"{name}__"
        labels = F.col("prediction") != F.col(f"{challenger_prefix(name)}prediction")
        if kind == "labels":
            aggregates.append(F.avg(labels.cast("double")).alias(f"{at}flip_share"))
            continue
        if kind == "multiclass":
            diff = F.array_max(F.zip_with(F.col(a), F.col(b), lambda x, y: F.abs(x - y)))
            flips = labels
        else:
            diff = F.abs(F.col(a) - F.col(b))
            flips = (F.col(a) >= threshold) != (F.col(b) >= threshold)
            aggregates.append(F.corr(a, b).alias(f"{at}pearson"))
        aggregates += [
            F.avg(diff).alias(f"{at}mean_abs_diff"),
            F.percentile_approx(diff, 0.99, P99_ACCURACY).alias(f"{at}p99_abs_diff"),
            F.avg(flips.cast("double")).alias(f"{at}flip_share"),
        ]
    totals = scored.agg(*aggregates).first().asDict()
    figures = {}
    for name, _ in lineup.challengers:
        a, b, kind = _scores(outputs[CHAMPION], outputs[name], challenger_prefix(name))
        values = {figure: totals.get(f"{name}__{figure}") for figure in FIGURES[1:]}
        values["rows"] = totals["rows"]
        if kind == "scores" and totals["rows"] > 1:
            values["spearman"] = spearman(scored, a, b)
        figures[name] = {figure: _plain(values[figure]) for figure in FIGURES}
    return figures


def variant_rows(scored: DataFrame, lineup: Lineup) -> dict[str, int]:
    """Rows each A/B variant received, every variant named (0 for one that received none)."""
    counts = {row["variant"]: row["count"] for row in scored.groupBy("variant").count().collect()}
    return {name: int(counts.get(name, 0)) for name, _ in lineup.ab}


def spearman(scored: DataFrame, a: str, b: str) -> float | None:
    """Spearman's correlation of two double columns: Pearson's of their average ranks (Spark ML)."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.stat import Correlation

    vectors = VectorAssembler(inputCols=[a, b], outputCol="_pair").transform(scored.select(a, b))
    matrix = Correlation.corr(vectors, "_pair", "spearman").first()[0]
    value = float(matrix[0, 1])
    return None if value != value else value  # NaN (a constant column) is no correlation


def _scores(champion: OutputSpec, challenger: OutputSpec, prefix: str) -> tuple[str, str, str]:
    """The columns compared, and what they hold: ``scores``, ``multiclass`` arrays or ``labels`` only.

    Labels (classifiers scored with ``--scores label``, string predictions) give the flip share alone.
    """
    if champion.probability is not None and challenger.probability is not None:
        kind = "multiclass" if champion.probability == "multiclass" else "scores"
        return "probability", f"{prefix}probability", kind
    numeric = champion.prediction_type == challenger.prediction_type == "double"
    return "prediction", f"{prefix}prediction", "scores" if numeric else "labels"


def _plain(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    return value
