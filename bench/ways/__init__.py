"""The ways of scoring that the benchmark compares, and the command line that runs each one.

Every way is one whole process, measured from its start to its exit. The Spark ways start their
session with ``scoring.batch.session.get_session`` and the same master as the job, so every Spark
process runs with the same settings. ``python -m bench.ways WAY ...`` runs one of the ways below that
are not the job itself (``ours_*`` run the ``scoring`` console script, exactly as a user would).

``ours_table`` is ``ours_onnx`` publishing to an Iceberg table instead of a directory: ``--table
bench.scores --catalog bench``, the catalog a fresh SQL one (SQLite, ``OUTPUT/catalog.db``, its
warehouse ``OUTPUT/warehouse``) configured by ``PYICEBERG_CATALOG__BENCH__*`` variables in that run's
environment alone (``environment``).

The peers (issue 33) are ``raw2`` (the ``raw`` way in one process per core), ``daft``,
``daft_sklearn`` and ``ray_data``; Daft and Ray come from the ``bench`` extra of setup.py
(``PEER_MODULES`` says which way needs which).

This module imports neither Spark nor ONNX Runtime: the benchmark's driver only builds commands.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench import data


@dataclass(frozen=True)
class Way:
    """One way of scoring.

    Attributes:
        name: Its name in the tables and for ``--ways``.
        summary: What it does, one line.
        model: Which model it scores with: ``none``, ``gbt`` (the classifier) or ``mlp``.
        subset: Whether it runs on the small row-at-a-time subset instead of the sizes.
        provider: ONNX Runtime provider of the ``raw`` way: ``cpu`` or ``cuda``.
        table: Whether it publishes to an Iceberg table (``TABLE`` in the catalog ``CATALOG``, a fresh
            SQLite one in the run's output directory: ``environment``) instead of a directory.
    """

    name: str
    summary: str
    model: str = "gbt"
    subset: bool = False
    provider: str = "cpu"
    table: bool = False


WAYS: dict[str, Way] = {
    way.name: way
    for way in (
        Way("floor", "Spark reads, adds a constant double column and writes parquet: no Python", "none"),
        Way(
            "raw", "pyarrow + ONNX Runtime (1 thread) in one process, no Spark: file by file, batch by batch"
        ),
        Way(
            "raw2",
            "the raw way in one process per core (os.cpu_count()), every N-th file each: the floor",
        ),
        Way("zeros", "iterator pandas UDF, struct of the 20 features in, zeros out", "none"),
        Way("plain", "iterator pandas UDF + ONNX Runtime (1 thread per task), model cached per worker"),
        Way("predict_batch_udf", "pyspark.ml.functions.predict_batch_udf + ONNX Runtime (1 thread)"),
        Way("spark_udf", "mlflow.pyfunc.spark_udf of models:/bench@sklearn, env_manager=local"),
        Way("ours_onnx", "scoring score --model-uri models:/bench@onnx (the job, ONNX backend)"),
        Way(
            "ours_table",
            "ours_onnx publishing to an Iceberg table (--table, a fresh SQLite catalog) instead of --output",
            table=True,
        ),
        Way("ours_pyfunc", "scoring score --model-uri models:/bench@sklearn --backend pyfunc"),
        Way("ours_spark", "scoring score --model-uri models:/bench@onnx --engine spark (Spark's pass)"),
        Way(
            "ours_lineup",
            "scoring score --model-uri models:/bench@onnx --challenger sklearn=models:/bench@sklearn "
            "--challenger retrained=models:/bench_retrained@onnx: three models in one pass",
        ),
        Way("ours_retrained", "scoring score --model-uri models:/bench_retrained@onnx (a challenger alone)"),
        Way(
            "daft",
            "Daft read_parquet -> batch UDF class holding the ONNX Runtime session (1 thread), one worker "
            "process per core -> write_parquet",
        ),
        Way(
            "daft_sklearn",
            "daft with models:/bench@sklearn (mlflow.sklearn.load_model once per worker, predict_proba)",
        ),
        Way(
            "ray_data",
            "Ray Data read_parquet -> map_batches, actor pool of one actor per core at 0.5 CPU each "
            "(ONNX Runtime, 1 thread) -> write_parquet",
        ),
        Way("row_udf", "row-at-a-time @udf calling ONNX Runtime once per row", subset=True),
    )
}
# The peers that need a package of the bench extra (setup.py), by way.
PEER_MODULES = {"daft": "daft", "daft_sklearn": "daft", "ray_data": "ray"}
# The --gpu section: the raw way with an MLP, on each provider.
GPU_WAYS: dict[str, Way] = {
    way.name: way
    for way in (
        Way("mlp_raw_cpu", "raw way, MLP, ONNX Runtime CPUExecutionProvider", "mlp", provider="cpu"),
        Way("mlp_raw_cuda", "raw way, MLP, ONNX Runtime CUDAExecutionProvider", "mlp", provider="cuda"),
    )
}
ALL_WAYS = {**WAYS, **GPU_WAYS}
# The ways that need the second challenger, bench_retrained, trained and registered.
RETRAINED_WAYS = ("ours_lineup", "ours_retrained")
# The lineup's challengers: (name, attribute of ``bench.model.Models`` holding its model reference).
CHALLENGERS = (("sklearn", "sklearn_uri"), ("retrained", "retrained_uri"))
# The table ways' table and catalog; its configuration is the run's environment (``environment``).
TABLE = "bench.scores"
CATALOG = "bench"
CATALOG_ENV = f"PYICEBERG_CATALOG__{CATALOG.upper()}__"
CATALOG_FILE = "catalog.db"


def command(way: Way, models, input_root: Path, output: Path, master: str) -> list[str]:
    """The command line of one run of ``way``.

    Args:
        way: The way.
        models: The ``bench.model.Models`` to score with.
        input_root: Root of the hive-partitioned input.
        output: The run's fresh output directory.
        master: Spark master of every Spark way.
    """
    date = data.DATE.isoformat()
    if way.name.startswith("ours_"):
        scoring = str(Path(sys.executable).with_name("scoring"))
        uri = {"ours_pyfunc": models.sklearn_uri, "ours_retrained": models.retrained_uri}.get(
            way.name, models.onnx_uri
        )
        line = [scoring, "score", "--model-uri", uri, "--input", str(input_root)]
        line += ["--table", TABLE, "--catalog", CATALOG] if way.table else ["--output", str(output)]
        line += ["--date", date, "--id-column", data.ID_COLUMN, "--partition-column", data.PARTITION_COLUMN]
        line += ["--master", master]
        if way.name == "ours_lineup":
            for name, attribute in CHALLENGERS:
                line += ["--challenger", f"{name}={getattr(models, attribute)}"]
        if way.name == "ours_spark":
            line += ["--engine", "spark"]
        return line + (["--backend", "pyfunc"] if way.name == "ours_pyfunc" else [])
    line = [sys.executable, "-m", "bench.ways", "raw" if way.name.startswith("mlp_raw") else way.name]
    line += ["--input", str(input_root), "--output", str(output), "--master", master]
    line += ["--provider", way.provider]
    if way.model == "gbt":
        line += ["--model", models.gbt_onnx]
    elif way.model == "mlp":
        line += ["--model", models.mlp_onnx]
    if way.name in ("spark_udf", "daft_sklearn"):
        line += ["--model-uri", models.sklearn_uri]
    return line


def catalog_properties(output: Path) -> dict[str, str]:
    """The pyiceberg properties of a table way's catalog: SQLite and its warehouse in ``output``.

    Args:
        output: The run's fresh output directory (absolute; it must exist before the run, for SQLite).
    """
    return {
        "type": "sql",
        "uri": f"sqlite:///{output}/{CATALOG_FILE}",
        "warehouse": f"file://{output}/warehouse",
    }


def environment(way: Way, output: Path, base: dict[str, str]) -> dict[str, str]:
    """The environment of one run of ``way``: ``base``, and for a table way its catalog's configuration.

    ``--catalog bench`` is configured as pyiceberg users configure a catalog, by
    ``PYICEBERG_CATALOG__BENCH__*`` variables, for that process only; any such variable inherited from
    the caller's environment is dropped, so every run gets a fresh catalog of its own.

    Args:
        way: The way.
        output: The run's fresh output directory.
        base: The environment every run shares.
    """
    if not way.table:
        return base
    env = {k: v for k, v in base.items() if not k.upper().startswith(CATALOG_ENV)}
    env.update({CATALOG_ENV + key.upper(): value for key, value in catalog_properties(output).items()})
    return env
