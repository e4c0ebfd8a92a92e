"""The scoring job: config, then model, then read, check, score, write, commit.

``run_job`` is what both entry points (``spark-submit jobs/score.py`` and ``scoring score``) call.

Passes over the input, in the common case of a clean input: its rows are counted from the parquet
footers (no pass), one shuffle of the id columns alone tells that no id repeats, and the scoring pass
checks, scores and writes every row in one go. Only what the written files show costs more: when fewer
rows were scored than the footers hold, one more scan writes the rejects (their counts per reason are
read back from the written rejects); when an id repeats, the valid rows are counted per id and all but
one marked. Conservation (footers = scored + rejected, on the written files) closes every run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
from typing import TYPE_CHECKING

from scoring import faults
from scoring.batch.inputs import column_types, count_input, read_input, spark_read_errors
from scoring.batch.quarantine import (
    REJECT_REASON,
    duplicate_rows,
    ids_repeat,
    reject_reason,
    typed_features,
    with_duplicates_marked,
)
from scoring.batch.session import start_session
from scoring.batch.udf import distribute_model, score_column, ship_classifier
from scoring.config import JobConfig
from scoring.dataset.manifest import build_manifest
from scoring.dataset.publish import (
    MANIFEST_FILE,
    OutputLocation,
    discard_run,
    publish,
    recover,
    reject_counts,
    staged_files,
)
from scoring.dataset.storage import exists, write_json
from scoring.errors import InputError, OutputError
from scoring.model.output import OutputSpec
from scoring.model.predictors import Predictor, ScorerSpec, choose_backend, load_predictor
from scoring.model.resolve import ResolvedModel, resolve_model
from scoring.model.schema import check_columns

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Columns the job adds to every output row; input columns may not be carried under these names.
MODEL_COLUMNS = ("model_name", "model_version")
SCORE_COLUMNS = ("prediction", "probability")

# Rows scored on the driver to learn the shape of the model's output before the job starts.
PROBE_ROWS = 16


def run_job(config: JobConfig, spark: SparkSession | None = None) -> dict:
    """Score one date's partition and publish it, with its rejects and its manifest.

    Args:
        config: The run's arguments.
        spark: The session to run on; by default the active one, or a new one on ``config.master``,
            started while the model resolves (a bad model reference still fails in seconds).

    Returns:
        The published partition's manifest.

    Raises:
        ScoringError: The model, the input or the output is not usable; nothing was published.
    """
    started_at = dt.datetime.now(dt.UTC)
    location = OutputLocation.new_run(config.output, f"{config.partition_column}={config.partition_value}")
    carried = _carried_columns(config)
    session = (lambda: spark) if spark is not None else start_session(config.master)
    with tempfile.TemporaryDirectory(prefix="scoring-model-") as download_dir:
        model = resolve_model(config.model_uri, download_dir, config.features)
        backend = choose_backend(config.backend, model.is_onnx, model.has_pyfunc)
        log.info("model %s resolved to %s (%s backend)", model.uri, model.pinned_uri, backend)

        spark = session()
        spark.conf.set("spark.sql.files.ignoreCorruptFiles", str(config.skip_corrupt_files).lower())
        source = read_input(spark, config.input, config.partition_column, config.date)
        check_columns(column_types(source.schema), model.features, carried, config.input)
        partitioned = config.partition_column in source.columns
        inputs = count_input(
            source, config.input, location.partition if partitioned else None, config.skip_corrupt_files
        )
        if inputs.rows == 0:
            raise InputError(
                f"input {config.input}: no rows for {config.partition_column}={config.partition_value}"
            )
        checked = source.withColumn(
            REJECT_REASON, reject_reason(source.schema, model.features, config.id_columns)
        )
        checked = check_duplicates(checked, config, [*carried, *model.feature_names])
        valid = checked.where(checked[REJECT_REASON].isNull())

        spec = ScorerSpec(
            model_path=distribute_model(spark, model.local_path),
            fingerprint=model.fingerprint,
            backend=backend,
            device=config.device,
            threads=config.threads or int(spark.conf.get("spark.task.cpus", "1")),
            features=model.features,
            onnx_file=model.relative_onnx_file,
            scores=config.scores,
        )
        output, predictor = probe_output(valid, model, spec)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.batch_size))
        scored = score_frame(valid, model, spec, output, carried, ship_classifier(spark, predictor))

        output_existed = exists(location.root)
        recover(location.root, location.partition)
        try:
            with spark_read_errors(config.input):
                scored.write.parquet(location.staged)
                files = staged_files(location.staged)
                # Every row the scoring pass did not write was rejected: only then is the input
                # read again, for the rejects.
                if sum(n for _, n in files) < inputs.rows:
                    rejects_frame(checked, carried, model).write.parquet(location.staged_rejects)
            reject_files = staged_files(location.staged_rejects)
            counts = reject_counts(location.staged_rejects)
            _check_conservation(inputs.rows, files, reject_files, location)
            _check_reject_fraction(sum(counts.values()), inputs.rows, counts, config)
            manifest = build_manifest(
                config=config,
                model=model,
                backend=backend,
                output=output,
                run_id=location.run_id,
                input_rows=inputs.rows,
                input_files=inputs.files,
                skipped_files=inputs.skipped,
                files=files,
                reject_files=reject_files,
                reject_reasons=counts,
                columns=[(f.name, f.dataType.simpleString()) for f in scored.schema.fields],
                started_at=started_at,
                finished_at=dt.datetime.now(dt.UTC),
                spark_version=spark.version,
            )
            write_json(f"{location.staged}/{MANIFEST_FILE}", manifest)
            faults.at("before-publish")
            publish(location)
        finally:
            discard_run(location, output_existed)
    rejected = manifest["counts"]["rejected"]
    log.info("published %s rows (%s rejected) to %s", manifest["output"]["rows"], rejected, location.final)
    return manifest


def check_duplicates(checked: DataFrame, config: JobConfig, order: list[str]) -> DataFrame:
    """Apply ``--on-duplicate-id`` to valid rows that repeat an id.

    The common case, no id repeated at all, costs one shuffle of the id columns alone; only when some
    id repeats are the valid rows counted exactly and all but one of each id marked.

    Args:
        checked: The input with its ``reject_reason`` column.
        config: The run's arguments.
        order: Columns that decide which row of a repeated id is kept.

    Returns:
        The rows, with duplicates marked ``duplicate_id`` when there are any.

    Raises:
        InputError: Valid rows repeat an id and ``--on-duplicate-id`` is ``fail``.
    """
    if not ids_repeat(checked, config.id_columns):
        return checked
    duplicates = duplicate_rows(checked, config.id_columns)
    if duplicates and config.on_duplicate_id == "fail":
        raise InputError(
            f"input {config.input}: {duplicates} rows repeat an id ({', '.join(config.id_columns)}) "
            "and --on-duplicate-id is fail"
        )
    return with_duplicates_marked(checked, config.id_columns, order) if duplicates else checked


def probe_output(valid: DataFrame, model: ResolvedModel, spec: ScorerSpec) -> tuple[OutputSpec, Predictor]:
    """Score a few valid rows on the driver to learn the shape of the model's output.

    This also fails fast, before the job is spent, when the model cannot score this input at all.

    Returns:
        The output's shape, and the model as the driver loaded it (on the CPU).

    Raises:
        InputError: No row is valid.
    """
    sample = valid.select(*typed_features(model.features)).limit(PROBE_ROWS).toPandas()
    if sample.empty:
        raise InputError("no valid input rows to score: every row was rejected")
    # The driver may have no GPU (an EMR primary node has none): probe on the CPU.
    predictor = load_predictor(dataclasses.replace(spec, device="cpu"), model.local_path)
    return OutputSpec.of(predictor.predict(sample)), predictor


def score_frame(
    valid: DataFrame,
    model: ResolvedModel,
    spec: ScorerSpec,
    output: OutputSpec,
    carried: list[str],
    shipped: Broadcast | None = None,
) -> DataFrame:
    """The scored rows: carried columns, the scores, and the model's name and version.

    ``shipped`` is the native classifier broadcast by ``scoring.batch.udf.ship_classifier``.
    """
    from pyspark.sql import functions as F

    features = F.struct(*typed_features(model.features))
    scores = score_column(features, spec, output, shipped).alias("_scores")
    return valid.select(*carried, scores).select(
        *carried,
        "_scores.*",
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
    )


def rejects_frame(checked: DataFrame, carried: list[str], model: ResolvedModel) -> DataFrame:
    """The rejected rows: carried columns, the features as they were in the input, and the reason."""
    from pyspark.sql import functions as F

    columns = list(dict.fromkeys([*carried, *model.feature_names]))
    return checked.where(F.col(REJECT_REASON).isNotNull()).select(*columns, REJECT_REASON)


def _check_reject_fraction(rejected: int, rows: int, counts: dict[str, int], config: JobConfig) -> None:
    if rejected / rows <= config.max_reject_fraction:
        return
    top = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
    raise InputError(
        f"input {config.input}: {rejected} of {rows} rows rejected ({rejected / rows:.2%}), more than "
        f"--max-reject-fraction {config.max_reject_fraction}: {top}"
    )


def _check_conservation(
    rows: int, files: list[tuple[str, int]], reject_files: list[tuple[str, int]], location: OutputLocation
) -> None:
    """Input rows (their footers) = scored rows + rejected rows, counted on the written files."""
    scored = sum(n for _, n in files)
    rejected = sum(n for _, n in reject_files)
    if scored + rejected != rows:
        raise OutputError(
            f"output {location.run_staging}: {rows} input rows but {scored} scored and "
            f"{rejected} rejected rows written; nothing published"
        )


def _carried_columns(config: JobConfig) -> list[str]:
    """Id and keep columns, in order and without repeats, checked against the job's own columns."""
    carried = list(dict.fromkeys([*config.id_columns, *config.keep_columns]))
    for name in carried:
        if name in (*SCORE_COLUMNS, *MODEL_COLUMNS, REJECT_REASON, config.partition_column):
            raise InputError(f"column {name!r} cannot be carried to the output: the job writes it itself")
    return carried
