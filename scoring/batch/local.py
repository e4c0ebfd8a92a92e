"""The local executor: the Arrow pass on worker processes of this machine, with no JVM.

Where the job runs on one machine and the Arrow pass applies, Spark would only schedule Python tasks
that read, check, score and write with pyarrow, and its start (the JVM, the session, the Python
workers: about ten seconds on two cores) is the largest part of a small run. Here the driver reads what
the job needs to decide with pyarrow alone (the partition's files, their footers, the id column) and
hands the slices to a ``scoring.batch.pool.SlicePool``; everything else is the job's as always (the row
checks, the scores, the files, conservation, the manifest, the publish).

Spark runs instead whenever a run needs it or asks for it (``why_spark``): ``--executor spark``,
``--engine spark``, a session handed in (a backfill's, a notebook's), spark-submit, a master that is
not local; and where the input needs Spark's pass or Spark's reading (the reasons are logged): ids that
repeat or that the driver cannot check alone, features or carried columns whose types Spark casts,
files whose schemas differ, a layout only Spark's file index understands, or a lineup too big for the
driver's agreement figures.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from scoring.batch import agreement
from scoring.batch.arrow_pass import (
    OPEN_COST_BYTES,
    PARTITION_BYTES,
    Plan,
    plan_footers,
    read_columns,
    unsuitable,
)
from scoring.batch.inputs import FOOTER_THREADS, InputFiles, parquet_file, read_footer, unreadable_input_file
from scoring.batch.listing import partition_files
from scoring.batch.pool import MAX_FAILURES, SlicePool
from scoring.batch.unique_ids import ids_unique
from scoring.columns import MODEL_COLUMNS, REJECT_REASON
from scoring.config import JobConfig
from scoring.model.signature import Feature

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.parquet as pq
    from pyspark.sql import SparkSession

    from scoring.model.combine import Column

log = logging.getLogger(__name__)

# Input types the local executor reads as Spark would, with no cast of its own: Spark's parquet reader
# widens unsigned integers, and reads other types (timestamps, decimals) in ways the pass leaves to it.
_LOCAL_TYPES = (pa.types.is_signed_integer, pa.types.is_float32, pa.types.is_float64, pa.types.is_boolean,
                pa.types.is_string, pa.types.is_large_string, pa.types.is_date32)  # fmt: skip
_MASTER = re.compile(r"local(?:\[(\*|\d+)(?:,\s*(\d+))?\])?$")
_CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def why_spark(config: JobConfig, spark: SparkSession | None) -> str | None:
    """Why this run must run on Spark whatever its input, or None when the local executor may run it."""
    if config.executor == "spark":
        return "--executor spark"
    if config.engine == "spark":
        return "--engine spark (Spark's scan and UDF)"
    if spark is not None:
        return "the run was handed a SparkSession"
    active = _active_master()
    if active is not None and not _MASTER.match(active):
        return f"a Spark session on {active} is active"
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        return "started by spark-submit"
    if config.master is not None and not _MASTER.match(config.master):
        return f"--master {config.master} is a cluster"
    return None


def _active_master() -> str | None:
    """The master of this process's active Spark session (a notebook's), if pyspark is loaded and has one."""
    if "pyspark" not in sys.modules:  # never import it (and its JVM gateway code) only to ask
        return None
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    return None if active is None else active.sparkContext.master


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, bounded by a cgroup v2 CPU quota (a container's).

    The JVM counts a container's quota as its cores (``local[*]``); so does the pool, or a pod limited to
    2 CPUs on a 64-core node would start 64 workers.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open(_CGROUP_CPU_MAX) as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def pool_shape(master: str | None) -> tuple[int, int]:
    """Workers and attempts per slice for ``master`` (``local``, ``local[N]``, ``local[*]``, ``local[N,F]``).

    Without a master, one worker per core this process may use (``available_cores``). Spark's local
    masters try a task once unless ``F`` says otherwise; the pool, like a cluster, tries
    ``MAX_FAILURES`` times.
    """
    cores = available_cores()
    match = _MASTER.match(master or "local[*]")
    if match is None:
        return cores, MAX_FAILURES
    workers = 1 if match.group(1) is None else cores if match.group(1) == "*" else int(match.group(1))
    return max(workers, 1), int(match.group(2)) if match.group(2) else MAX_FAILURES


@dataclass(frozen=True)
class LocalInput:
    """The date's input as the driver read it with pyarrow: its files, their footers and their slices.

    Attributes:
        inputs: The files that hold rows, with their rows, and the unreadable ones skipped.
        footers: Each file of ``inputs`` with its footer, in file order.
        schema: The first file's Arrow schema (every file has the same types for the read columns,
            or the run goes to Spark: ``unsuitable``).
    """

    inputs: InputFiles
    footers: tuple[tuple[str, pq.FileMetaData], ...]
    schema: pa.Schema


def read_local_input(config: JobConfig) -> LocalInput | str:
    """The date's files and footers, and whether any id repeats, read on the driver; or why Spark must.

    Raises:
        InputError: A file is not readable parquet (and ``--skip-corrupt-files`` is not given).
    """
    listed = partition_files(config.input, config.partition_column, config.date)
    if listed is None:
        return "Spark's file index reads this input layout"
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, max(len(listed), 1))) as pool:
        footers = list(pool.map(read_footer, listed))
    unreadable = [f for f, meta in zip(listed, footers, strict=True) if meta is None]
    if unreadable and not config.skip_corrupt_files:
        raise unreadable_input_file(unreadable[0])
    read = tuple((f, m) for f, m in zip(listed, footers, strict=True) if m is not None and m.num_rows)
    if not read:
        return "no rows for the date"  # Spark's reading says why, as it always has
    schema = read[0][1].schema.to_arrow_schema()
    if config.partition_column in schema.names:
        return f"the input files hold a {config.partition_column!r} column"
    inputs = InputFiles(tuple((f, m.num_rows) for f, m in read), unreadable)
    if ids_unique(inputs.sizes, config.id_columns, skip_nulls=True) is not True:
        return "ids repeat, or the driver cannot check them alone"
    return LocalInput(inputs, read, schema)


def local_plan(
    local: LocalInput, config: JobConfig, features: Sequence[Feature], carried: Sequence[str], workers: int
) -> Plan | str:
    """The slices for ``workers`` local processes, or why the run's input needs Spark after all."""
    columns = read_columns(carried, features)
    for name in columns:
        field = local.schema.field(name) if name in local.schema.names else None
        if field is not None and not any(check(field.type) for check in _LOCAL_TYPES):
            return f"column {name!r} has type {field.type}, which Spark's reader converts"
    if config.lineup.several and local.inputs.rows > agreement.EXACT_ROWS:
        return f"a lineup above {agreement.EXACT_ROWS:,} rows has its agreement figures computed by Spark"
    input_plan = plan_footers(local.footers, columns, workers, PARTITION_BYTES, OPEN_COST_BYTES)
    return unsuitable(input_plan, features, carried, ids_marked=False) or input_plan


def output_schemas(
    schema: pa.Schema,
    carried: Sequence[str],
    features: Sequence[Feature],
    columns: Sequence[Column],
    config: JobConfig,
) -> tuple[pa.Schema, pa.Schema]:
    """The scored and the rejected rows' Arrow schemas, exactly as Spark's plans of the job give them.

    Spark reads every parquet column as nullable, and so is the reject reason (a ``coalesce`` of
    ``when``); a literal (the model's name and version, a table's date) is not null.

    Args:
        schema: The input's Arrow schema.
        carried: The id and kept columns.
        features: The run's features.
        columns: The run's score columns (``BatchScorer.columns``).
        config: The run's arguments.
    """
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import from_arrow_type

    from scoring.batch.arrow_pass import arrow_schema
    from scoring.batch.udf import output_schema

    def read(name: str) -> T.StructField:
        return T.StructField(name, from_arrow_type(schema.field(name).type), True)

    dated = [T.StructField(config.partition_column, T.DateType(), False)] if config.table else []
    named = [T.StructField(c, T.StringType(), bool(config.lineup.ab)) for c in MODEL_COLUMNS]
    scored = T.StructType([*map(read, carried), *output_schema(columns).fields, *named, *dated])
    reason = T.StructField(REJECT_REASON, T.StringType(), True)
    rejects = T.StructType([*map(read, read_columns(carried, features)), reason, *dated])
    return arrow_schema(scored), arrow_schema(rejects)


def spark_type_names(schema: pa.Schema) -> list[tuple[str, str]]:
    """Each column's name and Spark SQL type, for the manifest (Spark's ``simpleString``)."""
    from pyspark.sql.pandas.types import from_arrow_type

    return [(f.name, from_arrow_type(f.type).simpleString()) for f in schema]


def start_pool(config: JobConfig) -> SlicePool:
    """The run's worker processes, starting now (their imports overlap the model's resolution)."""
    workers, attempts = pool_shape(config.master)
    return SlicePool(workers, attempts)


def scan_sample(
    sizes: Sequence[tuple[str, int]], features: Sequence[Feature], rows: int
) -> pd.DataFrame | None:
    """Up to ``rows`` scorable rows of the input, read file by file until there are enough.

    For the probe when the head of the first file has none (``scoring.batch.inputs.head_sample``);
    None when no row of the input is scorable.
    """
    import pandas as pd

    from scoring.batch.inputs import HEAD_ROWS
    from scoring.model.rows import scorable_rows

    found: list[pd.DataFrame] = []
    for file, _ in sizes:
        batches = parquet_file(file).iter_batches(batch_size=HEAD_ROWS, columns=[f.name for f in features])
        for batch in batches:
            found.append(scorable_rows(batch.to_pandas(), features))
            if sum(len(f) for f in found) >= rows:
                return pd.concat(found).head(rows)
    sample = pd.concat(found) if found else None
    return None if sample is None or sample.empty else sample
