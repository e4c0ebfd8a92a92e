"""The scoring job's configuration: one immutable value built from the command line."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
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
# What a repeated id does (``--on-duplicate-id``): all but one of its rows rejected, or the run failed.
DUPLICATE_ID_ACTIONS = ("reject", "fail")

# How a published partition is validated (``scoring validate`` and ``report``, the job's report, the
# DAG's validate task): the population stability index of its scores against the previous partition's
# above which they drifted (0.1: some shift; 0.2: a significant one), what drift then does, and how far
# an A/B variant's share of the rows may be from its split (0.01: one percentage point).
PSI_THRESHOLD = 0.2
PSI_ACTIONS = ("warn", "fail")
PSI_ACTION = "warn"
VARIANT_TOLERANCE = 0.01

# Fields of ``JobConfig`` that no flag of ``to_cli_args`` gives: where the job runs is the launcher's
# business (spark-submit's), and the lineup gives its own flags (``Lineup.to_cli_args``).
_NOT_FLAGS = ("master", "lineup")
# Fields whose flag is not their name: one id column is the common case, several are comma-separated.
_FLAG_NAMES = {"id_columns": "id_column"}


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

        Derived from the fields: each is the flag of its name (``flag``), given when it has no
        default or differs from it. ``--master`` is left out: where the job runs is the launcher's
        business (spark-submit's).
        """
        args: list[str] = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in _NOT_FLAGS or (spec.default is not MISSING and value == spec.default):
                continue
            if isinstance(value, bool):  # a switch: on where the default is off, and the other way
                args.append(flag(spec.name, negated=value is False))
            elif value is not None:
                args += [flag(spec.name), _flag_value(value)]
        return args + self.lineup.to_cli_args()


def flag(name: str, negated: bool = False) -> str:
    """The command-line flag of the ``JobConfig`` field ``name`` (``--no-NAME`` for a switch's off)."""
    return f"--{'no-' if negated else ''}{_FLAG_NAMES.get(name, name).replace('_', '-')}"


def _flag_value(value: object) -> str:
    """A field's value as its flag takes it (the parser's types in ``scoring.cli`` read it back)."""
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True)
    return str(value)
