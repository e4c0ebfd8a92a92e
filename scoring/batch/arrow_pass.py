"""The Arrow scoring pass: each Python task reads its slice of the input files, checks, scores and writes.

Spark's own pass (``scoring.batch.job.score_frame``) reads the parquet in the JVM and moves every
feature to a Python worker and every score back through Arrow, row by row on the JVM's side: on two
cores that transport alone cost more than the model (``BENCHMARKS.md``). Here Spark only schedules:
one task per slice of row groups (even slices in whole rounds of tasks over the cores), where the
Python worker reads the slice with pyarrow, runs the batch job's row checks (``scoring.model.rows``,
the same reasons in the same order as the Spark expressions of ``scoring.batch.quarantine``), scores
the valid rows with the same ``BatchScorer`` as the UDF, and writes the scores and the rejects as
parquet, in the schemas Spark's pass would have written.

Nothing else changes: the files land in the run's staging directories, where the job checks
conservation on their footers, writes the manifest and publishes as always. A task writes each file
under a name of its own attempt in the run's attempts directory and moves it to the slice's name at
the end, so a retried or speculative attempt replaces the file whole, and one that dies leaves its
file where nothing is published (the run's staging, deleted at its end).

The pass applies only where it cannot differ from Spark's (``unsuitable`` says why not): ids that no
two valid rows share (so no row has to be chosen among repeats), features of numeric or boolean types
(text casts stay Spark's), carried columns of simple types, every file with the same column types.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scoring import faults
from scoring.batch.inputs import FOOTER_THREADS, parquet_file
from scoring.batch.udf import BatchScorer, values_arrow
from scoring.columns import MODEL_COLUMNS, REJECT_REASON, VARIANT
from scoring.dataset.storage import filesystem
from scoring.errors import OutputError
from scoring.model.predictors import Predictor
from scoring.model.rows import typed_columns
from scoring.model.signature import Feature

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql.types import StructType

# Arrow types a carried column may have in the input. Each is written as Spark's pass writes it: the
# same type, or for an unsigned integer the wider signed type (or decimal) Spark reads it as.
_CARRIED_TYPES = (pa.types.is_integer, pa.types.is_float32, pa.types.is_float64, pa.types.is_boolean,
                  pa.types.is_string, pa.types.is_date32)  # fmt: skip
# Arrow types a feature may have: the row checks cast them without a value-by-value loop.
_FEATURE_TYPES = (pa.types.is_integer, pa.types.is_float32, pa.types.is_float64, pa.types.is_boolean)
# Spark's parquet codecs (``spark.sql.parquet.compression.codec``) by their pyarrow names; pyarrow's
# lz4 is parquet's LZ4_RAW. One pyarrow cannot write (lzo) falls back to snappy, Spark's default.
_CODECS = {"snappy": "snappy", "gzip": "gzip", "zstd": "zstd", "lz4": "lz4", "lz4raw": "lz4",
           "lz4_raw": "lz4", "none": "none", "uncompressed": "none", "brotli": "brotli"}  # fmt: skip
# A file's rows are written in row groups of about this many rows (Spark writes about 128 MB each).
ROW_GROUP_ROWS = 1_048_576
# Spark's defaults of spark.sql.files.maxPartitionBytes and openCostInBytes: how the local executor,
# which has no Spark conf, packs slices.
PARTITION_BYTES = 128 * 1024 * 1024
OPEN_COST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Slice:
    """Whole row groups of one or more input files: one task's input.

    Attributes:
        index: The slice's number in the run, which names its output files.
        parts: Each file the slice reads (as Spark names it), with its row groups read.
        rows: Rows in those row groups (their footers').
    """

    index: int
    parts: tuple[tuple[str, tuple[int, ...]], ...]
    rows: int


@dataclass(frozen=True)
class Plan:
    """The input's slices, and the Arrow schema every file has for the columns the pass reads.

    Attributes:
        slices: One per task, in file order.
        schemas: Each file's types of the read columns, in file order, for ``unsuitable``.
    """

    slices: tuple[Slice, ...]
    schemas: Mapping[str, pa.Schema]

    @property
    def schema(self) -> pa.Schema:
        """The read columns' types: the first file's (``unsuitable`` requires all to agree)."""
        return next(iter(self.schemas.values()), pa.schema([]))


def read_columns(carried: Sequence[str], features: Sequence[Feature]) -> list[str]:
    """The input columns a run reads, in the rejects' order: carried, then features, each once."""
    return list(dict.fromkeys([*carried, *(f.name for f in features)]))


def plan(
    files: Sequence[tuple[str, int]],
    columns: Sequence[str],
    parallelism: int,
    max_partition_bytes: int,
    open_cost: int,
) -> Plan:
    """Pack the input files' row groups into slices, from their footers, read now (``plan_footers``)."""
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, max(len(files), 1))) as pool:
        footers = list(pool.map(lambda f: parquet_file(f[0]).metadata, files))
    named = [(file, meta) for (file, _), meta in zip(files, footers, strict=True)]
    return plan_footers(named, columns, parallelism, max_partition_bytes, open_cost)


def plan_footers(
    footers: Sequence[tuple[str, pq.FileMetaData]],
    columns: Sequence[str],
    parallelism: int,
    max_partition_bytes: int,
    open_cost: int,
) -> Plan:
    """Pack the input files' row groups into slices, in whole rounds of tasks.

    The bytes (the compressed bytes of the columns read, plus ``open_cost`` for each file that holds
    rows) are shared evenly among the fewest whole rounds of tasks over the cores (``parallelism``
    shares a round) in which a share is about ``max_partition_bytes`` at most. The pass is bound by the
    model's CPU: a last round that leaves cores idle (3 slices on 2 cores) would lengthen it, where
    Spark's own packing of splits does not care. Row groups are taken in file order, each whole, into
    the share their middle byte falls in: a big file is cut at row groups, small files share a slice.
    A row group bigger than a share leaves the next one empty, so there are fewer slices than shares
    where row groups are coarse (one row group makes one slice on any number of cores).

    Args:
        footers: The input's files (as Spark names them) and their footers.
        columns: The columns the pass reads (flat columns: their leaves' paths are their names).
        parallelism: Tasks run at once (Spark's default parallelism, or the local pool's workers).
        max_partition_bytes: ``spark.sql.files.maxPartitionBytes``.
        open_cost: ``spark.sql.files.openCostInBytes``.

    Returns:
        The slices, and the read columns' types in each file.
    """
    groups, schemas = _row_groups(footers, columns, open_cost)
    total = sum(size for *_, size in groups)
    cores = max(parallelism, 1)
    rounds = max(math.ceil(total / (max(max_partition_bytes, 1) * cores)), 1)
    shares = rounds * cores
    share = max(total / shares, 1.0)
    slices: list[Slice] = []
    parts: dict[str, list[int]] = {}
    rows = done = current = 0
    for file, g, group_rows, group_bytes in groups:
        into = min(int((done + group_bytes / 2) // share), shares - 1)  # where its middle byte falls
        if parts and into != current:
            slices.append(Slice(len(slices), tuple((f, tuple(gs)) for f, gs in parts.items()), rows))
            parts, rows = {}, 0
        current = into
        parts.setdefault(file, []).append(g)
        rows, done = rows + group_rows, done + group_bytes
    if parts:
        slices.append(Slice(len(slices), tuple((f, tuple(gs)) for f, gs in parts.items()), rows))
    return Plan(tuple(slices), schemas)


def _row_groups(
    footers: Sequence[tuple[str, pq.FileMetaData]], columns: Sequence[str], open_cost: int
) -> tuple[list[tuple[str, int, int, int]], dict[str, pa.Schema]]:
    """Every row group that holds rows, as (file, index, rows, bytes read), and each file's read types.

    A row group's bytes are its read columns' compressed bytes; a file's first one adds ``open_cost``.
    """
    read = set(columns)
    groups = []
    schemas = {}
    for file, meta in footers:
        arrow = meta.schema.to_arrow_schema()
        schemas[file] = pa.schema([arrow.field(c) for c in columns if arrow.get_field_index(c) >= 0])
        leaves = [i for i in range(meta.num_columns) if meta.schema.column(i).path in read]
        opened = False
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if group.num_rows:
                size = sum(group.column(i).total_compressed_size for i in leaves)
                groups.append((file, g, group.num_rows, size + (0 if opened else open_cost)))
                opened = True
    return groups, schemas


def unsuitable(
    input_plan: Plan, features: Sequence[Feature], carried: Sequence[str], ids_marked: bool
) -> str | None:
    """Why the Arrow pass could score this input differently from Spark's, or None when it cannot.

    Args:
        input_plan: The input's slices and schemas.
        features: The run's features.
        carried: The id and kept columns, copied to the output.
        ids_marked: Whether valid rows repeat an id (one of each must be chosen: a Spark window).
    """
    if ids_marked:
        return "valid rows repeat an id"
    for file, schema in input_plan.schemas.items():
        if schema != input_plan.schema:
            return f"input files differ in column types ({file})"
    for feature in features:
        if feature.name not in input_plan.schema.names:
            return f"feature {feature.name!r} is not in every input file"
        kind = input_plan.schema.field(feature.name).type
        if not any(check(kind) for check in _FEATURE_TYPES):
            return f"feature {feature.name!r} has type {kind} (cast value by value by Spark)"
    for name in carried:
        if name not in input_plan.schema.names:
            return f"column {name!r} is not in every input file"
        kind = input_plan.schema.field(name).type
        if not any(check(kind) for check in _CARRIED_TYPES):
            return f"column {name!r} has type {kind}"
    return None


@dataclass(frozen=True)
class Outputs:
    """Where and how a task writes.

    Attributes:
        scores: The staging directory of the scored rows.
        rejects: The staging directory of the rejected rows.
        attempts: Where task attempts write their files before moving them into place: in the run's
            staging, outside what is published, and deleted with it.
        scores_schema: The scored rows' Arrow schema (Spark's pass's, ``arrow_schema``).
        rejects_schema: The rejected rows' Arrow schema.
        codec: Parquet compression.
        model_columns: ``model_name`` and ``model_version``: one value each, or by A/B variant.
        partition: The date's column and value, written into every row (an Iceberg table's files
            hold their partition column); None for a directory, whose path holds it.
    """

    scores: str
    rejects: str
    attempts: str
    scores_schema: pa.Schema
    rejects_schema: pa.Schema
    codec: str
    model_columns: Mapping[str, Mapping[str | None, str]]
    partition: tuple[str, dt.date] | None = None

    def with_partition(self, columns: list[pa.Array], names: list[str], rows: int) -> pa.Table:
        """A table of ``columns``, with the partition's column last when the output carries it."""
        if self.partition is not None:
            columns = [*columns, pa.repeat(pa.scalar(self.partition[1], pa.date32()), rows)]
            names = [*names, self.partition[0]]
        return pa.Table.from_arrays(columns, names=names)


@dataclass(frozen=True)
class SliceResult:
    """What one task did.

    Attributes:
        index: The slice's number.
        scored: Rows written to the scores.
        rejected: Rows written to the rejects.
    """

    index: int
    scored: int
    rejected: int


@dataclass(frozen=True)
class ArrowPass:
    """One run's Arrow pass, pickled to every task.

    Attributes:
        scorer: The run's models.
        features: The run's features, in model order.
        id_columns: The columns that identify a row.
        carried: The id and kept columns, in output order.
        outputs: Where and how to write.
        batch_size: Rows per batch handed to the models.
    """

    scorer: BatchScorer
    features: tuple[Feature, ...]
    id_columns: tuple[str, ...]
    carried: tuple[str, ...]
    outputs: Outputs
    batch_size: int

    @property
    def read_columns(self) -> list[str]:
        """The input columns a task reads (``read_columns``)."""
        return read_columns(self.carried, self.features)

    def run(self, slices: Sequence[Slice]) -> Iterator[SliceResult]:
        """Score ``slices`` (a Spark partition's worth): the task's body."""
        for piece in slices:
            yield self.score_slice(piece)

    def score_slice(self, piece: Slice) -> SliceResult:
        """Read, check, score and write one slice; its files appear whole or not at all."""
        predictors = self.scorer.load()
        after_batch = faults.worker_fault()
        out = self.outputs
        scores = _StagedWriter(out.scores, out.attempts, piece.index, out.scores_schema, out.codec)
        rejects = _StagedWriter(out.rejects, out.attempts, piece.index, out.rejects_schema, out.codec)
        try:
            for batch in _batches(piece, self.read_columns, self.batch_size):
                typed, valid, reasons = self.check(batch)
                if valid.any():
                    scores.add(self.scored_table(batch, typed, valid, predictors))
                if not valid.all():
                    rejects.add(self.rejects_table(batch, valid, reasons))
                after_batch()
        except BaseException:
            # The failure is what the task reports: closing the attempt's files must not hide it.
            # What they leave is in the attempts directory, deleted with the run's staging.
            for writer in (scores, rejects):
                with contextlib.suppress(OSError, pa.ArrowException):
                    writer.abandon()
            raise
        return SliceResult(piece.index, scores.commit(), rejects.commit())

    def check(self, batch: pa.RecordBatch) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The batch's features typed, and each row's validity and reason, as Spark's pass decides them.

        Null ids are checked first, then each feature in model order (``scoring.model.rows``).

        Returns:
            Each feature cast to its signature's type (placeholders in rejected rows), whether each
            row is valid, and each row's reason (``CODE:COLUMN``, or None for a valid row).
        """
        rows = batch.num_rows
        columns, nulls = {}, {}
        for feature in self.features:
            array = batch.column(feature.name)
            if array.null_count:
                nulls[feature.name] = array.is_null().to_numpy(zero_copy_only=False)
                array = array.fill_null(False if pa.types.is_boolean(array.type) else 0)
            columns[feature.name] = array.to_numpy(zero_copy_only=False)
        typed, problems = typed_columns(columns, self.features, rows, nulls)
        reasons = np.full(rows, None, dtype=object)
        for problem in problems:
            reasons[problem.row] = problem.reason
        for name in reversed(self.id_columns):  # the first null id wins, before any feature
            ids = batch.column(name)
            if ids.null_count:
                reasons[ids.is_null().to_numpy(zero_copy_only=False)] = f"null_id:{name}"
        valid = np.equal(reasons, None)
        return typed, valid, reasons

    def scored_table(
        self,
        batch: pa.RecordBatch,
        typed: Mapping[str, np.ndarray],
        valid: np.ndarray,
        predictors: Mapping[str, Predictor],
    ) -> pa.Table:
        """The batch's valid rows scored: carried columns, score columns, model name and version."""
        mask = pa.array(valid)
        frame = pd.DataFrame({f.name: typed[f.name][valid] for f in self.features}, copy=False)
        for key, name in zip(self.scorer.keys, self.id_columns, strict=False):
            # As pandas, as the UDF's batch has it: a date is a datetime.date, hashed as Spark's pass does.
            frame[key] = batch.column(name).filter(mask).to_pandas()
        values = self.scorer.score(frame, predictors)
        struct = values_arrow(values, self.scorer.columns)
        columns = [batch.column(c).filter(mask) for c in self.carried]
        columns += struct.flatten()
        variants = values.get(VARIANT)
        for column in MODEL_COLUMNS:
            by_variant = self.outputs.model_columns[column]
            if variants is None:
                columns.append(pa.repeat(by_variant[None], int(valid.sum())))
            else:
                columns.append(pa.array([by_variant[v] for v in variants], type=pa.string()))
        names = [*self.carried, *(c.name for c in self.scorer.columns), *MODEL_COLUMNS]
        table = self.outputs.with_partition(columns, names, int(valid.sum()))
        return table.cast(self.outputs.scores_schema)

    def rejects_table(self, batch: pa.RecordBatch, valid: np.ndarray, reasons: np.ndarray) -> pa.Table:
        """The batch's rejected rows: carried columns and features as read, and the reason."""
        mask = pa.array(~valid)
        names = self.read_columns
        columns = [batch.column(c).filter(mask) for c in names]
        columns.append(pa.array(reasons[~valid].tolist(), type=pa.string()))
        table = self.outputs.with_partition(columns, [*names, REJECT_REASON], int((~valid).sum()))
        return table.cast(self.outputs.rejects_schema)


class UnreadableSlice(OSError):
    """An input file's data could not be decoded (corrupt or truncated behind a good footer).

    The task fails, so Spark retries it as it retries its own scan's; its message names the file as
    Spark's does, for the driver's one line (``scoring.batch.inputs.spark_read_errors``).
    """


def _batches(piece: Slice, columns: Sequence[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    """The slice's rows, file by file, ``batch_size`` at a time.

    Raises:
        UnreadableSlice: A file's data cannot be decoded. An I/O error (an object store's throttling
            or denial, a disk's error) is raised as it is: the file is not to blame, and the retry
            may succeed.
    """
    for file, row_groups in piece.parts:
        try:
            yield from parquet_file(file).iter_batches(
                batch_size=batch_size, row_groups=list(row_groups), columns=list(columns), use_threads=False
            )
        except (OSError, pa.ArrowException) as e:
            if _is_io_error(e):
                raise
            kind = type(e).__name__
            raise UnreadableSlice(f"{file} is not a Parquet file, or not a whole one ({kind})") from e


def _is_io_error(error: Exception) -> bool:
    """Whether a read error came from the storage rather than from the file's bytes.

    An operating system's error carries its errno; pyarrow's S3 errors name AWS.
    """
    return isinstance(error, OSError) and (error.errno is not None or "AWS Error" in str(error))


class _StagedWriter:
    """One output file of a slice: written in the attempts directory, moved into place at the end.

    Each attempt writes a file of its own name; the move gives it the slice's name, so a retried or
    speculative attempt replaces the file whole (the same rows), and an attempt that dies leaves its
    file where nothing is published. Tables are gathered until about ``ROW_GROUP_ROWS`` rows, so
    that a file's row groups are large, as a reader scanning a column wants them.
    """

    def __init__(self, directory: str, attempts: str, index: int, schema: pa.Schema, codec: str) -> None:
        self.fs, self.directory = filesystem(directory)
        _, self.attempts = filesystem(attempts)
        name = f"part-{index:05d}.{codec}.parquet" if codec != "none" else f"part-{index:05d}.parquet"
        self.final = f"{self.directory}/{name}"
        kind = self.directory.rstrip("/").rsplit("/", 2)[-2]  # data or rejects: the two share a name
        self.temporary = f"{self.attempts}/{kind}-{name}.{uuid.uuid4().hex[:12]}"
        self.schema, self.codec = schema, codec
        self.pending: list[pa.Table] = []
        self.pending_rows = self.rows = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, table: pa.Table) -> None:
        """Add rows; the attempt's file is created with the first."""
        if self.writer is None:
            if self.fs.type_name == "local":  # an object store has no directories to make
                self.fs.create_dir(self.attempts, recursive=True)
                self.fs.create_dir(self.directory, recursive=True)
            self.writer = pq.ParquetWriter(
                self.temporary, self.schema, filesystem=self.fs, compression=self.codec
            )
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending or self.writer is None:
            return
        self.writer.write_table(pa.concat_tables(self.pending), row_group_size=ROW_GROUP_ROWS)
        self.rows += self.pending_rows
        self.pending, self.pending_rows = [], 0

    def commit(self) -> int:
        """Close the file and give it its final name; the rows it holds (0: no file)."""
        self._flush()
        if self.writer is None:
            return 0
        self.writer.close()
        self.fs.move(self.temporary, self.final)
        return self.rows

    def abandon(self) -> None:
        """Close and delete what this attempt wrote."""
        if self.writer is not None:
            self.writer.close()
            self.fs.delete_file(self.temporary)


def arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema Spark's Python side gives a Spark schema (Spark 3.5 and 4)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema)


def codec(spark_codec: str) -> str:
    """The pyarrow name of Spark's parquet codec; snappy (Spark's default) for one pyarrow lacks."""
    return _CODECS.get(spark_codec.lower(), "snappy")


def run_pass(sc: SparkContext, arrow_pass: ArrowPass, slices: Sequence[Slice]) -> None:
    """Run the pass, one Spark task per slice, and check that each wrote every row it read.

    Raises:
        OutputError: A slice's files do not hold its rows (``check_slices``).
    """
    rdd = sc.parallelize(list(slices), max(len(slices), 1))
    check_slices(slices, {r.index: r for r in rdd.mapPartitions(arrow_pass.run).collect()})


def check_slices(slices: Sequence[Slice], results: Mapping[int, SliceResult]) -> None:
    """Check that every slice wrote as many rows as its footers hold, whichever executor ran it.

    Raises:
        OutputError: A slice's files do not hold its rows (never expected: the rows written are
            counted again on the files, for conservation).
    """
    for piece in slices:
        result = results.get(piece.index)
        written = None if result is None else result.scored + result.rejected
        if written != piece.rows:
            raise OutputError(
                f"Arrow pass slice {piece.index} ({piece.parts[0][0]}, ...): {piece.rows} rows read, "
                f"{written} written"
            )
