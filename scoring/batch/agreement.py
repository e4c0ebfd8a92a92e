"""How far each challenger's scores are from the champion's, measured on the written output.

For the manifest, per challenger against the champion, on the same rows:

* ``pearson``, ``spearman``: correlations of the scores (the positive class's probability of a binary
  classifier, a regressor's value); Spearman with average ranks for ties, as ``scipy.stats.spearmanr``.
* ``mean_abs_diff``, ``p99_abs_diff``: of the scores' absolute difference (multiclass: the largest
  difference over the classes). The 99th percentile is the smallest difference that at least 99 % of
  the rows do not exceed (numpy's ``inverted_cdf`` quantile).
* ``flip_share``: the share of rows whose decision differs: the score on either side of the decision
  threshold (multiclass, and labels without scores: the prediction differs).
* ``rows``: the rows compared, and ``spearman_rows``: the rows Spearman's ranks were taken on.

Up to ``EXACT_ROWS`` written rows, the columns compared are read back from the written files with
pyarrow and every figure is exact: no Spark job, a fraction of a second. Above it, Spark aggregates
every figure but Spearman over all the rows (the percentile by ``percentile_approx`` at an accuracy of
``P99_ACCURACY``, exact up to ``rows / P99_ACCURACY`` ranks), and Spearman's ranks are taken on a seeded
sample of about ``EXACT_ROWS`` rows collected to the driver: a global sort of every row per challenger
(Spark ML's exact Spearman) was measured to cost more than the scoring itself.

Under an A/B split, the ``prediction`` column holds the champion's scores only on the rows of the
champion's variant: the figures are measured there (a random sample, since the split is a hash), and
are None when the champion is not a variant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scoring.columns import PREDICTION, PROBABILITY, VARIANT, challenger_prefix
from scoring.lineup import CHAMPION, Lineup
from scoring.model.output import OutputSpec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

EXACT_ROWS = 2_000_000
P99_ACCURACY = 100_000
SAMPLE_SEED = 0
FIGURES = ("rows", "pearson", "spearman", "mean_abs_diff", "p99_abs_diff", "flip_share", "spearman_rows")


def lineup_figures(
    spark: SparkSession,
    staged: str,
    files: Sequence[tuple[str, int]],
    lineup: Lineup,
    outputs: Mapping[str, OutputSpec],
) -> tuple[dict[str, dict], dict[str, int] | None]:
    """Each challenger's agreement with the champion, and the rows each A/B variant received.

    Args:
        spark: The job's session (used above ``EXACT_ROWS`` rows).
        staged: Where the run's output was written.
        files: The written parquet files (names under ``staged``) and their rows.
        lineup: The run's models.
        outputs: Every model's output shape, by name.

    Returns:
        The figures of the module's docstring by challenger name, and the rows of every variant by
        variant name (None without an A/B split).
    """
    if not lineup.several:
        return {}, None
    rows = sum(n for _, n in files)
    if rows <= EXACT_ROWS:
        table = _read([f"{staged}/{name}" for name, _ in files], _compared_columns(lineup, outputs))
        counts = None
        if lineup.ab:
            seen = {r["values"]: r["counts"] for r in pc.value_counts(table.column(VARIANT)).to_pylist()}
            counts = {name: int(seen.get(name, 0)) for name, _ in lineup.ab}
        return exact_agreement(table, lineup, outputs), counts
    written = spark.read.parquet(staged)
    return _spark_agreement(written, rows, lineup, outputs), variant_rows(
        written, lineup
    ) if lineup.ab else None


def exact_agreement(table: pa.Table, lineup: Lineup, outputs: Mapping[str, OutputSpec]) -> dict[str, dict]:
    """Every figure, exactly, from the written columns of ``table`` (see ``_compared_columns``)."""
    if lineup.ab and CHAMPION not in dict(lineup.ab):
        return {name: dict.fromkeys(FIGURES) for name, _ in lineup.challengers}
    if lineup.ab:
        table = table.filter(pc.equal(table.column(VARIANT), CHAMPION))
    figures = {}
    for name, _ in lineup.challengers:
        a, b, kind = _scores(outputs[CHAMPION], outputs[name], challenger_prefix(name))
        labels = _values(table, PREDICTION) != _values(table, f"{challenger_prefix(name)}{PREDICTION}")
        values: dict = dict.fromkeys(FIGURES)
        values["rows"] = table.num_rows
        if table.num_rows:
            values["flip_share"] = float(labels.mean())
        if kind != "labels" and table.num_rows:
            x, y = _values(table, a), _values(table, b)
            diff = np.abs(x - y).max(axis=1) if kind == "multiclass" else np.abs(x - y)
            values["mean_abs_diff"] = float(diff.mean())
            values["p99_abs_diff"] = float(np.quantile(diff, 0.99, method="inverted_cdf"))
            if kind == "scores":
                t = lineup.decision_threshold
                values["flip_share"] = float(((x >= t) != (y >= t)).mean())
                values["pearson"] = _correlation(x, y)
                values["spearman"], values["spearman_rows"] = spearman(x, y), len(x)
        figures[name] = values
    return figures


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's correlation: Pearson's of the average ranks (ties share their mean rank)."""
    from scipy.stats import rankdata

    return _correlation(rankdata(x), rankdata(y))


def variant_rows(scored: DataFrame, lineup: Lineup) -> dict[str, int]:
    """Rows each A/B variant received, every variant named (0 for one that received none)."""
    counts = {row[VARIANT]: row["count"] for row in scored.groupBy(VARIANT).count().collect()}
    return {name: int(counts.get(name, 0)) for name, _ in lineup.ab}


def _spark_agreement(
    written: DataFrame, rows: int, lineup: Lineup, outputs: Mapping[str, OutputSpec]
) -> dict[str, dict]:
    from pyspark.sql import functions as F

    if lineup.ab and CHAMPION not in dict(lineup.ab):
        return {name: dict.fromkeys(FIGURES) for name, _ in lineup.challengers}
    if lineup.ab:
        written = written.where(F.col(VARIANT) == CHAMPION)
    threshold = lineup.decision_threshold
    aggregates: list[Column] = [F.count(F.lit(1)).alias("rows")]
    for name, _ in lineup.challengers:
        a, b, kind = _scores(outputs[CHAMPION], outputs[name], challenger_prefix(name))
        at = f"{name}__"
        labels = F.col(PREDICTION) != F.col(f"{challenger_prefix(name)}{PREDICTION}")
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
    totals = written.agg(*aggregates).first().asDict()
    scored = [
        (name, *_scores(outputs[CHAMPION], outputs[name], challenger_prefix(name)))
        for name, _ in lineup.challengers
    ]
    wanted = sorted({c for _, a, b, kind in scored if kind == "scores" for c in (a, b)})
    sample = None
    if wanted:
        # One seeded sample for every challenger: one scan, ranked on the driver.
        fraction = min(1.0, EXACT_ROWS / rows)
        sample = written.select(*wanted).sample(fraction=fraction, seed=SAMPLE_SEED).toPandas()
    figures = {}
    for name, a, b, kind in scored:
        values = {figure: _plain(totals.get(f"{name}__{figure}")) for figure in FIGURES}
        values["rows"] = totals["rows"]
        if kind == "scores" and sample is not None and len(sample) > 1:
            values["spearman"] = spearman(sample[a].to_numpy(), sample[b].to_numpy())
            values["spearman_rows"] = len(sample)
        figures[name] = values
    return figures


def _compared_columns(lineup: Lineup, outputs: Mapping[str, OutputSpec]) -> list[str]:
    columns = [PREDICTION]
    for name, _ in lineup.challengers:
        a, b, _ = _scores(outputs[CHAMPION], outputs[name], challenger_prefix(name))
        columns += [a, b, f"{challenger_prefix(name)}{PREDICTION}"]
    return list(dict.fromkeys([*columns, *([VARIANT] if lineup.ab else [])]))


def _read(paths: Sequence[str], columns: list[str]) -> pa.Table:
    """The columns compared, from the written files (local or S3), with pyarrow."""
    import pyarrow.dataset as ds

    from scoring.dataset.storage import filesystem

    if not paths:
        return pa.table({c: pa.array([], pa.float64()) for c in columns})
    fs, _ = filesystem(paths[0])
    located = [filesystem(p)[1] for p in paths]
    return ds.dataset(located, filesystem=fs, format="parquet").to_table(columns=columns)


def _values(table: pa.Table, column: str) -> np.ndarray:
    """A column as numpy: a matrix (rows x classes) for an array column."""
    data = table.column(column).combine_chunks()
    if pa.types.is_list(data.type):
        flat = data.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(data), -1) if len(data) else flat.reshape(0, 0)
    return data.to_numpy(zero_copy_only=False)


def _scores(champion: OutputSpec, challenger: OutputSpec, prefix: str) -> tuple[str, str, str]:
    """The columns compared, and what they hold: ``scores``, ``multiclass`` arrays or ``labels`` only.

    Labels (classifiers scored with ``--scores label``, string predictions) give the flip share alone.
    """
    if champion.probability is not None and challenger.probability is not None:
        kind = "multiclass" if champion.probability == "multiclass" else "scores"
        return PROBABILITY, f"{prefix}{PROBABILITY}", kind
    numeric = champion.prediction_type == challenger.prediction_type == "double"
    return PREDICTION, f"{prefix}{PREDICTION}", "scores" if numeric else "labels"


def _correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's correlation; None where it is undefined (fewer than two rows, a constant column)."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _plain(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    return value
