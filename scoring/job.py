"""The scoring job: config, then model, then read, check, score, write, commit.

``run_job`` is what both entry points (``spark-submit jobs/score.py`` and ``scoring score``) call.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
import uuid
from typing import TYPE_CHECKING

from scoring.backends import OutputSpec, ScorerSpec, choose_backend, load_predictor
from scoring.config import JobConfig
from scoring.errors import InputError, OutputError
from scoring.inputs import cast_features, check_columns, read_input
from scoring.manifest import build_manifest
from scoring.models import ResolvedModel, resolve_model
from scoring.publish import (
    MANIFEST_FILE,
    OutputLocation,
    discard,
    normalize_uri,
    publish,
    staged_files,
    write_json,
)
from scoring.session import get_session
from scoring.udf import distribute_model, score_column

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Columns the job adds to every output row; input columns may not be carried under these names.
MODEL_COLUMNS = ("model_name", "model_version")
SCORE_COLUMNS = ("prediction", "probability")

# Rows scored on the driver to learn the shape of the model's output before the job starts.
PROBE_ROWS = 16


def run_job(config: JobConfig, spark: SparkSession | None = None) -> dict:
    """Score one date's partition and publish it with its manifest.

    Args:
        config: The run's arguments.
        spark: The session to run on; by default the active one, or a new one on ``config.master``.
            It is started only once the model is resolved, so a bad model reference fails in
            seconds.

    Returns:
        The published partition's manifest.

    Raises:
        ScoringError: The model, the input or the output is not usable; nothing was published.
    """
    started_at = dt.datetime.now(dt.UTC)
    run_id = f"{config.partition_value}-{uuid.uuid4().hex[:12]}"
    location = OutputLocation(
        normalize_uri(config.output), f"{config.partition_column}={config.partition_value}", run_id
    )
    carried = _carried_columns(config)
    with tempfile.TemporaryDirectory(prefix="scoring-model-") as download_dir:
        model = resolve_model(config.model_uri, download_dir, config.features)
        backend = choose_backend(config.backend, model.is_onnx, model.has_pyfunc)
        log.info("model %s resolved to %s (%s backend)", model.uri, model.pinned_uri, backend)

        spark = spark or get_session(config.master)
        source = read_input(spark, config.input, config.partition_column, config.date)
        check_columns(source.schema, model.features, carried, config.input)
        input_rows = source.count()
        if input_rows == 0:
            raise InputError(
                f"input {config.input}: no rows for {config.partition_column}={config.partition_value}"
            )

        spec = ScorerSpec(
            model_path=distribute_model(spark, model.local_path),
            fingerprint=model.fingerprint,
            backend=backend,
            device=config.device,
            threads=config.threads or int(spark.conf.get("spark.task.cpus", "1")),
            features=model.features,
            onnx_file=_relative_onnx_file(model),
        )
        output = probe_output(source, model, spec)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.batch_size))
        scored = score_frame(source, model, spec, output, carried)
        try:
            scored.write.mode("errorifexists").parquet(location.staged)
            files = staged_files(location.staged)
            output_rows = sum(rows for _, rows in files)
            if output_rows != input_rows:
                raise OutputError(
                    f"output {location.staged}: {output_rows} rows written for {input_rows} input rows"
                )
            manifest = build_manifest(
                config=config,
                model=model,
                backend=backend,
                run_id=run_id,
                input_rows=input_rows,
                files=files,
                columns=[(f.name, f.dataType.simpleString()) for f in scored.schema.fields],
                started_at=started_at,
                finished_at=dt.datetime.now(dt.UTC),
                spark_version=spark.version,
            )
            write_json(f"{location.staged}/{MANIFEST_FILE}", manifest)
            publish(location)
        finally:
            discard(location.run_staging)
    log.info("published %s rows to %s", output_rows, location.final)
    return manifest


def probe_output(source: DataFrame, model: ResolvedModel, spec: ScorerSpec) -> OutputSpec:
    """Score a few input rows on the driver to learn the shape of the model's output.

    This also fails fast, before the job is spent, when the model cannot score this input at all.
    """
    sample = source.select(*cast_features(model.features)).limit(PROBE_ROWS).toPandas()
    # The driver may have no GPU (an EMR primary node has none): probe on the CPU.
    predictor = load_predictor(dataclasses.replace(spec, device="cpu"), model.local_path)
    return OutputSpec.of(predictor.predict(sample))


def score_frame(
    source: DataFrame,
    model: ResolvedModel,
    spec: ScorerSpec,
    output: OutputSpec,
    carried: list[str],
) -> DataFrame:
    """The scored rows: carried columns, the scores, and the model's name and version."""
    from pyspark.sql import functions as F

    features = F.struct(*cast_features(model.features))
    scores = score_column(features, spec, output).alias("_scores")
    return source.select(*carried, scores).select(
        *carried,
        "_scores.*",
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
    )


def _carried_columns(config: JobConfig) -> list[str]:
    """Id and keep columns, in order and without repeats, checked against the job's own columns."""
    carried = list(dict.fromkeys([*config.id_columns, *config.keep_columns]))
    for name in carried:
        if name in (*SCORE_COLUMNS, *MODEL_COLUMNS, config.partition_column):
            raise InputError(f"column {name!r} cannot be carried to the output: the job writes it itself")
    return carried


def _relative_onnx_file(model: ResolvedModel) -> str:
    if model.onnx_file is None or model.onnx_file == model.local_path:
        return ""
    return model.onnx_file.removeprefix(model.local_path).lstrip("/")
