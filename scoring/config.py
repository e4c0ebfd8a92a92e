"""The scoring job's configuration: one immutable value built from the command line."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from scoring.lineup import Lineup

# What a run writes (``--scores``): probabilities wherever the model gives them, the prediction only,
# or probabilities required (see ``scoring.model.output.select_scores``).
SCORES = ("auto", "label", "probability")
# How the scoring pass reads the input (``--engine``): the Arrow pass wherever it applies, or always
# Spark's scan and UDF (see ``scoring.batch.arrow_pass``); ``arrow`` fails a run it does not apply to.
ENGINES = ("auto", "arrow", "spark")
# Where the Arrow pass's slices run (``--executor``): worker processes of this machine where the run
# allows it, else Spark's tasks (see ``scoring.batch.local``); ``local`` fails a run it does not apply to.
EXECUTORS = ("auto", "local", "spark")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """What one scoring run needs.

    Attributes:
        model_uri: Model reference (see ``scoring.model.resolve.SUPPORTED_URIS``).
        input: Parquet file or directory (hive-partitioned or not), any URI Spark reads.
        output: Root of the date-partitioned output dataset; or None with ``table``.
        date: The partition to score and write.
        table: The Iceberg table (``NAMESPACE.TABLE``) to publish to, instead of ``output``.
        catalog: The pyiceberg catalog holding ``table``; None: pyiceberg's default name
            (``scoring.dataset.catalog``: the embedded SQLite catalog when nothing configures it).
        id_columns: Columns that identify a row; copied to the output.
        partition_column: Name of the output's partition column, and of the input's when it has one.
        keep_columns: Further input columns copied to the output.
        batch_size: Rows per Arrow batch handed to the model.
        backend: ``auto``, ``pyfunc`` or ``onnx``.
        device: ``auto``, ``cpu`` or ``cuda`` (ONNX only).
        scores: ``auto`` (probabilities for classifiers), ``label`` or ``probability``.
        features: Feature columns overriding the model's signature (for models without one).
        threads: ONNX Runtime threads per task; None means ``spark.task.cpus``.
        master: Spark master; None means spark-submit's, or ``local[*]`` outside spark-submit.
        max_reject_fraction: Fail when more of the input than this is rejected.
        on_duplicate_id: ``reject`` all but one row of each id, or ``fail`` the job.
        skip_corrupt_files: Skip unreadable input files (listed in the manifest) instead of failing.
        lineup: Challengers, ensemble and A/B split scored beside the champion (``model_uri``).
        progress_seconds: Seconds between two progress lines while the partition is scored; 0: none.
        report: Whether to write the partition's ``_report.html`` after publishing it.
        engine: ``auto``, ``arrow`` or ``spark`` (``ENGINES``).
        executor: ``auto``, ``local`` or ``spark`` (``EXECUTORS``).
        cost_estimate: The pre-flight's estimate of this run (``scoring.orchestration.cost``), copied to
            the manifest beside the actual duration; None when the run was not estimated.
    """

    model_uri: str
    input: str
    output: str | None = None
    date: dt.date
    table: str | None = None
    catalog: str | None = None
    id_columns: tuple[str, ...] = ("id",)
    partition_column: str = "date"
    keep_columns: tuple[str, ...] = ()
    batch_size: int = 50_000
    backend: str = "auto"
    device: str = "auto"
    scores: str = "auto"
    features: tuple[str, ...] | None = None
    threads: int | None = None
    master: str | None = None
    max_reject_fraction: float = 0.01
    on_duplicate_id: str = "reject"
    skip_corrupt_files: bool = False
    lineup: Lineup = field(default_factory=Lineup)
    progress_seconds: float = 30.0
    report: bool = True
    engine: str = "auto"
    executor: str = "auto"
    cost_estimate: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.output is None) == (self.table is None):
            raise ValueError("a run publishes to an output directory or to a table: give one of the two")

    @property
    def partition_value(self) -> str:
        """The partition's directory value, ``YYYY-MM-DD``."""
        return self.date.isoformat()

    def to_json(self) -> dict:
        """The arguments as JSON-compatible values, for the manifest."""
        values = asdict(self)
        values["date"] = self.partition_value
        values["lineup"] = self.lineup.to_json()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def to_cli_args(self) -> list[str]:
        """The ``scoring score`` / ``jobs/score.py`` flags that reproduce this configuration.

        ``--master`` is left out: where the job runs is the launcher's business (spark-submit's).
        """
        args = [
            "--model-uri", self.model_uri,
            "--input", self.input,
            *(["--output", self.output] if self.output is not None else ["--table", str(self.table)]),
            *(["--catalog", self.catalog] if self.catalog else []),
            "--date", self.partition_value,
            "--id-column", ",".join(self.id_columns),
            "--partition-column", self.partition_column,
            "--batch-size", str(self.batch_size),
            "--backend", self.backend,
            "--device", self.device,
            "--scores", self.scores,
            "--max-reject-fraction", str(self.max_reject_fraction),
            "--on-duplicate-id", self.on_duplicate_id,
        ]  # fmt: skip
        if self.keep_columns:
            args += ["--keep-columns", ",".join(self.keep_columns)]
        if self.features:
            args += ["--features", ",".join(self.features)]
        if self.threads:
            args += ["--threads", str(self.threads)]
        if self.skip_corrupt_files:
            args.append("--skip-corrupt-files")
        if self.progress_seconds != JobConfig.progress_seconds:
            args += ["--progress-seconds", f"{self.progress_seconds:g}"]
        if not self.report:
            args.append("--no-report")
        if self.engine != JobConfig.engine:
            args += ["--engine", self.engine]
        if self.executor != JobConfig.executor:
            args += ["--executor", self.executor]
        if self.cost_estimate is not None:
            args += ["--cost-estimate", json.dumps(dict(self.cost_estimate), sort_keys=True)]
        return args + self.lineup.to_cli_args()
