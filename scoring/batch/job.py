"""The scoring job: config, then model, then read, check, score, write, commit.

``run_job`` is what both entry points (``spark-submit jobs/score.py`` and ``scoring score``) call.

Passes over the input, in the common case of a clean input: its rows are counted from the parquet
footers (no pass), the id column read on the driver (or, for ids that are not one integer column, one
shuffle of the id columns alone) tells that no id repeats, and the scoring pass
checks, scores and writes every row in one go: the Arrow pass (``scoring.batch.arrow_pass``: Python
tasks read the files themselves and write scores and rejects) wherever it applies, else Spark's scan and
UDF. In Spark's pass only what the written files show costs more: when fewer rows were scored than the
footers hold, one more scan writes the rejects (their counts per reason are read back from the written
rejects); when an id repeats, the valid rows are counted per id and all but one marked. Conservation
(footers = scored + rejected, on the written files) closes every run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from scoring import faults
from scoring.batch.agreement import lineup_figures
from scoring.batch.arrow_pass import (
    ArrowPass,
    Outputs,
    Plan,
    SliceResult,
    arrow_schema,
    check_slices,
    codec,
    plan,
    read_columns,
    run_pass,
    unsuitable,
)
from scoring.batch.inputs import (
    InputFiles,
    column_types,
    count_input,
    head_sample,
    read_input,
    spark_read_errors,
)
from scoring.batch.local import (
    LocalInput,
    local_plan,
    output_schemas,
    read_local_input,
    scan_sample,
    spark_type_names,
    start_pool,
    why_spark,
)
from scoring.batch.pool import SlicePool
from scoring.batch.progress import progress, progress_lines
from scoring.batch.quarantine import (
    duplicate_rows,
    ids_repeat,
    reject_reason,
    typed_features,
    with_duplicates_marked,
)
from scoring.batch.session import start_session
from scoring.batch.udf import (
    BatchScorer,
    Member,
    Shipped,
    distribute_model,
    pickled_classifier,
    probe_on_worker,
    scores_struct,
    ship_classifier,
)
from scoring.batch.unique_ids import ids_unique
from scoring.columns import (
    ENSEMBLE_PREFIX,
    MODEL_COLUMNS,
    MODEL_NAME,
    MODEL_VERSION,
    REJECT_REASON,
    SCORE_COLUMNS,
    VARIANT,
    challenger_prefix,
)
from scoring.config import JobConfig
from scoring.dataset.catalog import open_catalog
from scoring.dataset.destination import destination_of
from scoring.dataset.manifest import (
    Challenger,
    InputRecord,
    Manifest,
    ModelRecord,
    OutputRecord,
    RejectsRecord,
    Resources,
    build_manifest,
)
from scoring.dataset.publish import OutputLocation, reject_counts, staged_files
from scoring.dataset.publisher import DirectoryPublisher, Publisher, TablePublisher
from scoring.dataset.report import write_report_or_warn
from scoring.dataset.table import TableRun
from scoring.errors import InputError, OutputError, ScoringError
from scoring.lineup import CHAMPION, Lineup
from scoring.model.combine import check_lineup, union_features
from scoring.model.output import OutputSpec
from scoring.model.predictors import OnnxPredictor, Predictor, ScorerSpec, choose_backend, load_predictor
from scoring.model.resolve import ResolvedModel, resolve_lineup
from scoring.model.schema import arrow_column_types, check_columns
from scoring.model.signature import Feature

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows scored on the driver to learn the shape of the model's output before the job starts.
PROBE_ROWS = 16


def run_job(config: JobConfig, spark: SparkSession | None = None) -> Manifest:
    """Score one date's partition and publish it, with its rejects and its manifest.

    On one machine, where the Arrow pass applies and nothing needs Spark, the pass runs on local worker
    processes and no JVM starts (``scoring.batch.local``); otherwise it is a Spark application.

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
    carried = _carried_columns(config)
    catalog = open_catalog_in_background(config)
    with tempfile.TemporaryDirectory(prefix="scoring-model-") as download_dir:
        # The registry (importing MLflow alone takes seconds) while the driver reads the input's footers.
        resolving = in_background(resolve_models, config, download_dir)
        try:
            local = start_local(config, spark)
        except ScoringError:
            resolving()  # a model that does not resolve is what the run reports first, as always
            raise
        # Spark starts now, beside the registry, unless the run may not need it.
        session = None if local is not None else _session(config, spark)
        try:
            models = resolving()
            features = union_features({m.name: m.model.features for m in models})
            local_run = local.planned(config, features, carried) if local is not None else None
            setup = RunSetup(config, models, features, carried, catalog, started_at)
            if local_run is not None:
                manifest = score_locally(setup, local_run)
            else:
                if local is not None:
                    local.pool.close()  # idle: its workers must not compete with the JVM's start
                spark = (session or _session(config, spark))()
                manifest = score_on_spark(setup, spark)
        finally:
            if local is not None:
                local.pool.close()
    log.info(
        "published %s rows (%s rejected) to %s",
        manifest.output.rows,
        manifest.counts.rejected,
        manifest.output.path,
    )
    if config.report:
        write_report_or_warn(destination_of(config), config.date)
    return manifest


@dataclass(frozen=True)
class LocalStart:
    """A run that may score on local workers: their pool, starting, and the input the driver read.

    Attributes:
        pool: The worker processes (one per core), importing while the model resolves.
        input: The date's files and footers, no id repeated.
    """

    pool: SlicePool
    input: LocalInput

    def planned(
        self, config: JobConfig, features: tuple[Feature, ...], carried: list[str]
    ) -> LocalRun | None:
        """The run's slices on the pool, or None when the input needs Spark after all (logged).

        Raises:
            InputError: ``--executor local`` and the input needs Spark.
        """
        input_plan = local_plan(self.input, config, features, carried, self.pool.size)
        if isinstance(input_plan, str):
            _refuse_or_log(config, input_plan)
            return None
        return LocalRun(self.pool, self.input, input_plan)


@dataclass(frozen=True)
class LocalRun:
    """A run scoring on local workers (``LocalStart.planned``): the pool, the input and its slices."""

    pool: SlicePool
    input: LocalInput
    plan: Plan


def start_local(config: JobConfig, spark: SparkSession | None) -> LocalStart | None:
    """The local executor's start, when the run may use it; None for a Spark application (logged).

    Raises:
        InputError: ``--executor local`` and the run needs Spark; or an input file is not readable.
    """
    why = why_spark(config, spark)
    if why is None:
        local_input = read_local_input(config)
        if not isinstance(local_input, str):
            return LocalStart(start_pool(config), local_input)
        why = local_input
    _refuse_or_log(config, why)
    return None


def _session(config: JobConfig, spark: SparkSession | None) -> Callable[[], SparkSession]:
    """The run's session: ``spark``, else the active one or a new one on ``--master``, starting now."""
    return (lambda: spark) if spark is not None else start_session(config.master)


def _refuse_or_log(config: JobConfig, why: str) -> None:
    """Refuse a run that asked for the local executor; else say why Spark runs it."""
    if config.executor == "local":
        raise InputError(f"input {config.input}: --executor local cannot run it: {why}")
    log.info("running as a Spark application: %s", why)


@dataclass(frozen=True)
class RunSetup:
    """What a run scores with, wherever it runs (``score_locally``, ``score_on_spark``).

    Attributes:
        config: The run's arguments.
        models: Its models, resolved and pinned, the champion first.
        features: The features of them all (``union_features``).
        carried: The input columns copied to the output (the ids, ``--keep-columns``).
        catalog: Waits for the table's catalog opened in the background (None for a directory).
        started_at: When the run started (UTC).
    """

    config: JobConfig
    models: list[RunModel]
    features: tuple[Feature, ...]
    carried: list[str]
    catalog: Callable[[], Catalog | None]
    started_at: dt.datetime


def score_locally(setup: RunSetup, local: LocalRun) -> Manifest:
    """Probe, write with the Arrow pass on the local pool, check and publish; the manifest."""
    config, models, features, carried = setup.config, setup.models, setup.features, setup.carried
    inputs = local.input.inputs
    check_columns(dict(arrow_column_types(local.input.schema)), features, carried, config.input)
    sample = head_sample(inputs.sizes, features, PROBE_ROWS)
    if sample is None:
        sample = scan_sample(inputs.sizes, features, PROBE_ROWS)
    probed = probe_models(sample, models, config, config.threads or 1, local.pool)
    members = [p.member_local() for p in probed]
    scorer = _scorer(members, config)
    schemas = output_schemas(local.input.schema, carried, features, scorer.columns, config)
    publisher = open_publisher(config, *schemas, setup.catalog)
    location = publisher.location
    log.info("scoring with the Arrow pass on %d local workers: %d slices over %d files",
             local.pool.size, len(local.plan.slices), inputs.files)  # fmt: skip
    publisher.prepare()
    faults.at("writing")
    published = False
    try:
        direct = build_pass(config, scorer, features, carried, location, schemas, codec("snappy"), models)
        done = RowCount()
        with (
            spark_read_errors(config.input),  # a file corrupt behind its footer: one line naming it
            progress_lines(done.read, location.partition, inputs.rows, config.progress_seconds),
        ):
            results = local.pool.run(direct, local.plan.slices, done.add)
        check_slices(local.plan.slices, results)
        runtime = Runtime(None, None, local.pool.size, "arrow", "local")
        outputs = {p.run_model.name: p.output for p in probed}
        columns = spark_type_names(schemas[0])
        manifest = close_run(config, publisher, inputs, models, outputs, columns, runtime, setup.started_at)
        published = True
    finally:
        publisher.finish(published)
    return manifest


def score_on_spark(setup: RunSetup, spark: SparkSession) -> Manifest:
    """Read, check, probe, score and write with Spark, then check and publish; the manifest."""
    config, models, features, carried = setup.config, setup.models, setup.features, setup.carried
    read = read_checked(spark, config, features, carried)
    inputs, valid = read.inputs, read.valid
    # Decided before the models are shipped: a run refused here adds no file to the context.
    input_plan = arrow_plan(spark, config, inputs, features, carried, read.marked)
    probed = _probe_on_spark(spark, config, read, features, models)
    outputs = {p.run_model.name: p.output for p in probed}
    rejects = rejects_frame(read.checked, carried, features)
    # Opened from the output's schemas (a plan, nothing runs) before a model is shipped: a table
    # that refuses this run's columns adds no file to the context.
    unshipped = score_frame(valid, features, [p.member() for p in probed], models, config, carried)
    publisher = open_publisher(
        config, *(arrow_schema(_dated(frame, config).schema) for frame in (unshipped, rejects)), setup.catalog
    )
    members = [p.member(spark) for p in probed]
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.batch_size))
    scored = score_frame(valid, features, members, models, config, carried)
    scored, rejects = (_dated(frame, config) for frame in (scored, rejects))
    location = publisher.location

    publisher.prepare()
    faults.at("writing")
    published = False
    try:
        with spark_read_errors(config.input):
            with progress(
                spark.sparkContext,
                location.partition,
                inputs.rows,
                config.progress_seconds,
                by_tasks=input_plan is not None,
            ):
                if input_plan is None:
                    scored.write.mode("append").parquet(location.staged)
                else:
                    schemas = (arrow_schema(scored.schema), arrow_schema(rejects.schema))
                    direct = _spark_arrow_pass(
                        spark, config, members, features, carried, location, schemas, models
                    )
                    run_pass(spark.sparkContext, direct, input_plan.slices)
            # Every row Spark's pass did not write was rejected: only then is the input read
            # again, for the rejects. The Arrow pass wrote its rejects as it went.
            if input_plan is None and sum(n for _, n in staged_files(location.staged)) < inputs.rows:
                rejects.write.mode("append").parquet(location.staged_rejects)
        runtime = Runtime.of_spark(spark, "spark" if input_plan is None else "arrow")
        columns = [(f.name, f.dataType.simpleString()) for f in scored.schema.fields]
        manifest = close_run(config, publisher, inputs, models, outputs, columns, runtime, setup.started_at)
        published = True
    finally:
        publisher.finish(published)
    return manifest


def _probe_on_spark(
    spark: SparkSession,
    config: JobConfig,
    read: SparkInput,
    features: tuple[Feature, ...],
    models: list[RunModel],
) -> list[Probed]:
    """Probe the models on a few rows: the first file's head, or Spark's first valid rows."""
    threads = config.threads or int(spark.conf.get("spark.task.cpus", "1"))
    sample = head_sample(read.inputs.sizes, features, PROBE_ROWS)
    if sample is None:
        sample = read.valid.select(*typed_features(features)).limit(PROBE_ROWS).toPandas()
    return probe_models(sample, models, config, threads)


def _spark_arrow_pass(
    spark: SparkSession,
    config: JobConfig,
    members: list[Member],
    features: tuple[Feature, ...],
    carried: list[str],
    location: OutputLocation | TableRun,
    schemas: tuple[pa.Schema, pa.Schema],
    models: list[RunModel],
) -> ArrowPass:
    """The Arrow pass Spark's tasks run, writing parquet in the session's codec."""
    spark_codec = codec(spark.conf.get("spark.sql.parquet.compression.codec"))
    return build_pass(
        config, _scorer(members, config), features, carried, location, schemas, spark_codec, models
    )


@dataclass(frozen=True)
class SparkInput:
    """The date's input as Spark reads it, checked (``read_checked``).

    Attributes:
        inputs: Its files and rows.
        checked: Every row, with its ``reject_reason`` (null for the rows to score).
        valid: The rows to score.
        marked: Whether a Spark job marked repeated ids (the Arrow pass then does not apply).
    """

    inputs: InputFiles
    checked: DataFrame
    valid: DataFrame
    marked: bool


def read_checked(
    spark: SparkSession, config: JobConfig, features: tuple[Feature, ...], carried: list[str]
) -> SparkInput:
    """The date's rows read with Spark, counted, and each given its reject reason.

    Raises:
        InputError: A column is missing or of the wrong type, or the date has no rows.
    """
    spark.conf.set("spark.sql.files.ignoreCorruptFiles", str(config.skip_corrupt_files).lower())
    source = read_input(spark, config.input, config.partition_column, config.date)
    check_columns(column_types(source.schema), features, carried, config.input)
    partitioned = config.partition_column in source.columns
    partition = f"{config.partition_column}={config.partition_value}"
    inputs = count_input(source, config.input, partition if partitioned else None, config.skip_corrupt_files)
    if inputs.rows == 0:
        raise InputError(
            f"input {config.input}: no rows for {config.partition_column}={config.partition_value}"
        )
    checked = source.withColumn(REJECT_REASON, reject_reason(source.schema, features, config.id_columns))
    order = [*carried, *(f.name for f in features)]
    with spark_read_errors(config.input):  # the id check may scan the input with Spark
        checked, marked = check_duplicates(checked, config, order, inputs)
    return SparkInput(inputs, checked, checked.where(checked[REJECT_REASON].isNull()), marked)


@dataclass
class RowCount:
    """The input rows of the slices finished so far: the local pass's progress."""

    rows: int = 0

    def add(self, result: SliceResult) -> None:
        """Count a finished slice's rows, scored and rejected."""
        self.rows += result.scored + result.rejected

    def read(self) -> int:
        """The rows so far (read by the progress lines' thread)."""
        return self.rows


@dataclass(frozen=True)
class Runtime:
    """What ran the scoring pass, for the manifest.

    Attributes:
        spark: The session (None on local workers): the lineup's agreement reads with it above
            ``EXACT_ROWS``.
        spark_version: Spark's version; None when no Spark ran.
        cores: Tasks run at once: Spark's default parallelism, or the local pool's workers.
        engine: ``arrow`` (Python tasks read the files) or ``spark`` (Spark's scan and UDF).
        executor: ``local`` (worker processes of this machine) or ``spark``.
    """

    spark: SparkSession | None
    spark_version: str | None
    cores: int
    engine: str
    executor: str

    @classmethod
    def of_spark(cls, spark: SparkSession, engine: str) -> Runtime:
        """A pass Spark's tasks ran, with ``engine``, on the session's default parallelism."""
        return cls(spark, spark.version, spark.sparkContext.defaultParallelism, engine, "spark")


def close_run(
    config: JobConfig,
    publisher: Publisher,
    inputs: InputFiles,
    models: list[RunModel],
    outputs: dict[str, OutputSpec],
    columns: list[tuple[str, str]],
    runtime: Runtime,
    started_at: dt.datetime,
) -> Manifest:
    """Check what the pass wrote (conservation, the reject fraction), write the manifest and publish.

    Returns:
        The published manifest.

    Raises:
        OutputError, InputError: The written files do not conserve the input's rows, or too many
            rows were rejected; nothing is published.
    """
    location = publisher.location
    files = staged_files(location.staged)
    reject_files = staged_files(location.staged_rejects)
    counts = reject_counts(location.staged_rejects)
    _check_conservation(inputs.rows, files, reject_files, location)
    _check_reject_fraction(sum(counts.values()), inputs.rows, counts, config)
    agreement, variant_rows = lineup_figures(runtime.spark, location.staged, files, config.lineup, outputs)
    records = {m.name: ModelRecord.of(m.model, m.backend, outputs[m.name], config.scores) for m in models}
    manifest = build_manifest(
        config=config,
        run_id=location.run_id,
        champion=records[CHAMPION],
        challengers=[Challenger(m.name, records[m.name], (agreement or {}).get(m.name)) for m in models[1:]],
        input=InputRecord(config.input, inputs.rows, inputs.files, tuple(inputs.skipped)),
        output=OutputRecord.written(publisher.output_path, config.table, files, columns),
        rejects=RejectsRecord.written(publisher.rejects_path, reject_files, counts),
        resources=Resources(runtime.cores, runtime.engine, runtime.executor),
        spark_version=runtime.spark_version,
        started_at=started_at,
        finished_at=dt.datetime.now(dt.UTC),
        variant_rows=variant_rows,
    )
    return publisher.publish(manifest)


def open_catalog_in_background(config: JobConfig) -> Callable[[], Catalog | None]:
    """Open the table's catalog while the model resolves and Spark starts; the function returned waits.

    Importing pyiceberg and opening a catalog take about a second, which the run would otherwise add
    to its fixed cost. A catalog that cannot be opened fails the run when it is waited for, before
    anything is scored.
    """
    if config.table is None:
        return lambda: None
    return in_background(open_catalog, config.catalog)


def in_background(function: Callable[..., T], *args: object) -> Callable[[], T]:
    """Call ``function(*args)`` on a thread of its own; the function returned waits for its result.

    Its exception, if any, is raised by the waiting call.
    """
    executor = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=getattr(function, "__name__", "background")
    )
    called = executor.submit(function, *args)
    executor.shutdown(wait=False)
    return called.result


def open_publisher(
    config: JobConfig, scored: pa.Schema, rejects: pa.Schema, catalog: Callable[[], Catalog | None]
) -> Publisher:
    """How this run publishes: into the output directory, or into the table.

    The table is created or evolved now, from the output's schemas, so that a changed column type
    fails the run before it scores.
    """
    if config.table is None:
        return DirectoryPublisher(config)
    return TablePublisher(config, scored, rejects, catalog=catalog())


def _dated(frame: DataFrame, config: JobConfig) -> DataFrame:
    """The rows with the date's column for a table, whose files hold their partition's value."""
    if not config.table:
        return frame
    from pyspark.sql import functions as F

    return frame.withColumn(config.partition_column, F.lit(config.date))


def check_duplicates(
    checked: DataFrame, config: JobConfig, order: list[str], inputs: InputFiles
) -> tuple[DataFrame, bool]:
    """Apply ``--on-duplicate-id`` to valid rows that repeat an id.

    The common case, no id repeated at all, costs a read of the id column on the driver when it is one
    integer column (``scoring.batch.unique_ids``), else one shuffle of the id columns alone; only when
    some id repeats are the valid rows counted exactly and all but one of each id marked.

    Args:
        checked: The input with its ``reject_reason`` column.
        config: The run's arguments.
        order: Columns that decide which row of a repeated id is kept.
        inputs: The input's files, whose id column the driver may read.

    Returns:
        The rows, with duplicates marked ``duplicate_id`` when there are any, and whether there were.

    Raises:
        InputError: Valid rows repeat an id and ``--on-duplicate-id`` is ``fail``.
    """
    unique = ids_unique(inputs.sizes, config.id_columns)
    if unique is None:
        unique = not ids_repeat(checked, config.id_columns)
    if unique:
        return checked, False
    duplicates = duplicate_rows(checked, config.id_columns)
    if duplicates and config.on_duplicate_id == "fail":
        raise InputError(
            f"input {config.input}: {duplicates} rows repeat an id ({', '.join(config.id_columns)}) "
            "and --on-duplicate-id is fail"
        )
    if not duplicates:
        return checked, False
    return with_duplicates_marked(checked, config.id_columns, order), True


@dataclass(frozen=True)
class RunModel:
    """One model of the run, pinned on the driver.

    Attributes:
        name: ``champion`` or the challenger's name.
        model: The resolved, pinned model.
        backend: ``pyfunc`` or ``onnx``.
    """

    name: str
    model: ResolvedModel
    backend: str


def resolve_models(config: JobConfig, download_dir: str) -> list[RunModel]:
    """Resolve and pin every model of the run, the champion first.

    ``--backend`` applies to the champion; each challenger gets its natural backend (ONNX Runtime for an
    ONNX model, else pyfunc). Each model downloads into its own directory, whose name is unique to it.

    Raises:
        ModelError: A reference cannot be resolved, or the champion cannot use ``--backend``.
    """
    models = []
    for name, model in resolve_lineup(config.lineup, config.model_uri, download_dir, config.features).items():
        backend = choose_backend(
            config.backend if name == CHAMPION else "auto", model.is_onnx, model.has_pyfunc
        )
        log.info("%s %s resolved to %s (%s backend)", name, model.uri, model.pinned_uri, backend)
        models.append(RunModel(name, model, backend))
    return models


@dataclass(frozen=True)
class Probed:
    """One model of the run, probed on the driver.

    Attributes:
        run_model: The pinned model.
        spec: How the workers load it (its files still the driver's).
        predictor: The driver's loaded predictor, which scored the probe; None when a local worker
            probed it.
        output: The shape of its output.
    """

    run_model: RunModel
    spec: ScorerSpec
    predictor: Predictor | None
    output: OutputSpec

    def member(self, spark: SparkSession | None = None) -> Member:
        """The model as the workers score it: shipped to the executors, or not yet without ``spark``.

        An unshipped member plans a frame of the same schema; no pass may run on it.
        """
        name, model = self.run_model.name, self.run_model.model
        if spark is None:
            return Member(name, self.spec, self.output, tuple(model.feature_names), None)
        # Files are added to the SparkContext only now that the run will score: a file added by a run
        # that then fails is still fetched by the next run's tasks in this context (a backfill's next
        # date, a notebook's next job), and this run's temporary directory is gone by then.
        shipped = dataclasses.replace(self.spec, model_path=distribute_model(spark, model.local_path))
        return Member(
            name, shipped, self.output, tuple(model.feature_names), ship_classifier(spark, self.predictor)
        )

    def member_local(self) -> Member:
        """The model as local workers score it: from the driver's files, its classifier pickled along."""
        pickled = pickled_classifier(self.predictor)
        shipped = None if pickled is None else Shipped(pickled)
        return Member(
            self.run_model.name, self.spec, self.output, tuple(self.run_model.model.feature_names), shipped
        )


def probe_models(
    sample: pd.DataFrame | None,
    models: list[RunModel],
    config: JobConfig,
    threads: int,
    pool: SlicePool | None = None,
) -> list[Probed]:
    """Score a few valid rows with every model on the driver; nothing is shipped yet (``Probed.member``).

    The probe learns the shape of each model's output, and fails fast, before the job is spent, when
    a model cannot score this input at all or the models cannot be combined as the lineup says.

    Args:
        sample: Up to ``PROBE_ROWS`` scorable rows of the input, their features typed; None or empty
            when there are none.
        models: Every model of the run.
        config: The run's arguments.
        threads: ONNX Runtime threads per task.
        pool: The run's local workers, if it has them: an ONNX model is probed on one (``probe_local``).

    Raises:
        InputError: No row is valid.
        ModelError: A model cannot score the sample, or ``check_lineup`` refuses the lineup.
    """
    if sample is None or sample.empty:
        raise InputError("no valid input rows to score: every row was rejected")
    probed = []
    for run_model in models:
        model = run_model.model
        spec = model.scorer_spec(run_model.backend, config.device, threads, config.scores)
        if pool is not None and run_model.backend == "onnx":
            probed.append(probe_local(pool, run_model, spec, sample[model.feature_names]))
            continue
        # The driver may have no GPU (an EMR primary node has none): probe on the CPU.
        predictor = load_predictor(dataclasses.replace(spec, device="cpu"), model.local_path)
        output = OutputSpec.of(predictor.predict(sample[model.feature_names]))
        if isinstance(predictor, OnnxPredictor):  # read once here, not again by every worker
            spec = dataclasses.replace(spec, classes=predictor.classes)
        probed.append(Probed(run_model, spec, predictor, output))
    check_lineup(config.lineup, {p.run_model.name: p.output for p in probed})
    return probed


def probe_local(pool: SlicePool, run_model: RunModel, spec: ScorerSpec, sample: pd.DataFrame) -> Probed:
    """Probe an ONNX model on a local worker, not the driver.

    The worker has ONNX Runtime (and onnx, for a classifier's labels) imported while the driver
    resolved the model, and keeps the session it opens for its first slice: the driver neither imports
    them (0.6 s) nor opens a session of its own. A pyfunc model is probed on the driver, which has
    MLflow imported already and ships the loaded classifier (``Probed.member_local``).
    """
    output, classes = pool.call(probe_on_worker, spec, sample)
    return Probed(run_model, dataclasses.replace(spec, classes=classes), None, output)


def score_frame(
    valid: DataFrame,
    features: tuple[Feature, ...],
    members: list[Member],
    models: list[RunModel],
    config: JobConfig,
    carried: list[str],
) -> DataFrame:
    """The scored rows: carried columns, every score column, and the scoring model's name and version.

    Under an A/B split, ``model_name`` and ``model_version`` are those of the row's variant's model.
    """
    from pyspark.sql import functions as F

    lineup = config.lineup
    keys = [f"_key{i}" for i in range(len(config.id_columns))] if lineup.ab else []
    ids = [F.col(c).alias(k) for c, k in zip(config.id_columns, keys, strict=False)]
    struct = F.struct(*typed_features(features), *ids)
    scores = scores_struct(struct, members, lineup, keys).alias("_scores")
    columns = model_columns(config.lineup, models)
    if lineup.ab:
        # The variant's model, looked up in a literal map: variant -> name, variant -> version.
        name, version = (
            F.create_map(*(F.lit(x) for pair in columns[c].items() for x in pair))[F.col(VARIANT)]
            for c in MODEL_COLUMNS
        )
    else:
        name, version = (F.lit(columns[c][None]) for c in MODEL_COLUMNS)
    return valid.select(*carried, scores).select(
        *carried, "_scores.*", name.alias(MODEL_NAME), version.alias(MODEL_VERSION)
    )


def model_columns(lineup: Lineup, models: list[RunModel]) -> dict[str, dict[str | None, str]]:
    """``model_name`` and ``model_version`` of the model that scores a row, by the row's A/B variant.

    Without a split, the champion's, under the key None.
    """
    by_name = {m.name: m.model for m in models}
    variants = [v for v, _ in lineup.ab] if lineup.ab else [None]
    return {
        MODEL_NAME: {v: by_name[v or CHAMPION].name for v in variants},
        MODEL_VERSION: {v: by_name[v or CHAMPION].version for v in variants},
    }


def arrow_plan(
    spark: SparkSession,
    config: JobConfig,
    inputs: InputFiles,
    features: tuple[Feature, ...],
    carried: list[str],
    ids_marked: bool,
) -> Plan | None:
    """The input's slices for the Arrow pass, from its footers; None for Spark's pass (``--engine``).

    Args:
        spark: The run's session (its maxPartitionBytes, openCostInBytes and parallelism shape the slices).
        config: The run's arguments.
        inputs: The input's files.
        features: The run's features, in model order.
        carried: The id and kept columns.
        ids_marked: Whether valid rows repeat an id (``check_duplicates``).

    Raises:
        InputError: ``--engine arrow`` and the Arrow pass does not apply to this input.
    """
    if config.engine == "spark":
        return None
    conf = spark.conf
    as_bytes = spark.sparkContext._jvm.org.apache.spark.network.util.JavaUtils.byteStringAsBytes
    input_plan = plan(
        inputs.sizes,
        read_columns(carried, features),
        spark.sparkContext.defaultParallelism,
        as_bytes(conf.get("spark.sql.files.maxPartitionBytes")),
        as_bytes(conf.get("spark.sql.files.openCostInBytes")),
    )
    why_not = unsuitable(input_plan, features, carried, ids_marked)
    if why_not is None:
        log.info("scoring with the Arrow pass: %d tasks over %d files", len(input_plan.slices), inputs.files)
        return input_plan
    if config.engine == "arrow":
        raise InputError(f"input {config.input}: --engine arrow cannot score it: {why_not}")
    log.info("scoring with Spark's scan and UDF: %s", why_not)
    return None


def build_pass(
    config: JobConfig,
    scorer: BatchScorer,
    features: tuple[Feature, ...],
    carried: list[str],
    location: OutputLocation | TableRun,
    schemas: tuple[pa.Schema, pa.Schema],
    parquet_codec: str,
    models: list[RunModel],
) -> ArrowPass:
    """The run's Arrow pass, as its tasks run it, on Spark or on local workers.

    Args:
        config: The run's arguments.
        scorer: Every model of the run as the workers score it (``_scorer``).
        features: The run's features, in model order.
        carried: The id and kept columns.
        location: Where the run stages its files.
        schemas: The scored and the rejected rows' Arrow schemas, as Spark's pass would write them.
        parquet_codec: The files' compression (pyarrow's name).
        models: Every model of the run, pinned.
    """
    outputs = Outputs(
        scores=location.staged,
        rejects=location.staged_rejects,
        attempts=location.attempts,
        scores_schema=schemas[0],
        rejects_schema=schemas[1],
        codec=parquet_codec,
        model_columns=model_columns(config.lineup, models),
        partition=(config.partition_column, config.date) if config.table else None,
    )
    return ArrowPass(
        scorer=scorer,
        features=features,
        id_columns=tuple(config.id_columns),
        carried=tuple(carried),
        outputs=outputs,
        batch_size=config.batch_size,
    )


def _scorer(members: list[Member], config: JobConfig) -> BatchScorer:
    """The run's models as one scoring step, with the id columns' keys under an A/B split."""
    keys = tuple(f"_key{i}" for i in range(len(config.id_columns))) if config.lineup.ab else ()
    return BatchScorer(tuple(members), config.lineup, keys)


def rejects_frame(checked: DataFrame, carried: list[str], features: tuple[Feature, ...]) -> DataFrame:
    """The rejected rows: carried columns, the features as they were in the input, and the reason."""
    from pyspark.sql import functions as F

    columns = read_columns(carried, features)
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
    rows: int,
    files: list[tuple[str, int]],
    reject_files: list[tuple[str, int]],
    location: OutputLocation | TableRun,
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
    """Id and keep columns, in order and without repeats, checked against the job's own columns.

    Raises:
        InputError: An input column would be carried under a name the job writes itself.
    """
    carried = list(dict.fromkeys([*config.id_columns, *config.keep_columns]))
    lineup = config.lineup
    written = [*SCORE_COLUMNS, *MODEL_COLUMNS, REJECT_REASON, config.partition_column]
    written += [f"{challenger_prefix(n)}{c}" for n, _ in lineup.challengers for c in SCORE_COLUMNS]
    written += [f"{ENSEMBLE_PREFIX}{c}" for c in SCORE_COLUMNS] if lineup.ensemble else []
    written += [VARIANT] if lineup.ab else []
    for name in carried:
        if name in written:
            raise InputError(f"column {name!r} cannot be carried to the output: the job writes it itself")
    return carried
