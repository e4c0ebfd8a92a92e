"""The ``scoring`` command line; ``spark-submit jobs/score.py`` takes the same flags as ``scoring score``.

Expected failures (a bad model reference, a missing column, ...) print one line, ``error: ...``, and
exit 1; argument errors exit 2, as argparse does.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from scoring.config import (
    DUPLICATE_ID_ACTIONS,
    ENGINES,
    EXECUTORS,
    PSI_ACTION,
    PSI_ACTIONS,
    PSI_THRESHOLD,
    SCORES,
    VARIANT_TOLERANCE,
    JobConfig,
)
from scoring.errors import ScoringError
from scoring.lineup import DECISION_THRESHOLD, Lineup, LineupError, parse_challenger, parse_pairs
from scoring.model.convert import DEFAULT_OUTPUT
from scoring.model.export import DTYPES
from scoring.model.predictors import BACKENDS, DEVICES

if TYPE_CHECKING:
    from scoring.dataset.destination import Destination

log = logging.getLogger("scoring")


# Commands whose exit skips the final garbage collection (``console_script``).
_FROZEN_AT_EXIT = ("score", "backfill")


def console_script() -> None:
    """The ``scoring`` command: ``main``, then exit with its code.

    A scoring run leaves millions of objects behind (MLflow, SQLAlchemy, pandas): the interpreter's
    collection at exit took over a second of every run, for memory the operating system frees
    anyway. For the batch commands, freezing them first (``gc.freeze``) skips it; modules still tear
    down and ``atexit`` handlers still run. Not for the others: libraries bound with nanobind (DuckDB,
    which the demo queries with) report the objects left uncollected as leaks, at length.
    """
    code = main()
    if sys.argv[1:2] and sys.argv[1] in _FROZEN_AT_EXIT:
        gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``scoring`` subcommand and return its exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        return args.run(args)
    except ScoringError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="scoring", description="Batch scoring on Spark.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    score = commands.add_parser("score", help="score one date's partition and publish it")
    add_score_arguments(score)
    score.set_defaults(run=_run_score)

    backfill = commands.add_parser("backfill", help="score a range of dates in order; exit 1 if any failed")
    add_score_arguments(backfill, dated=False)
    backfill.add_argument("--start", required=True, type=_date, help="first date, YYYY-MM-DD")
    backfill.add_argument("--end", required=True, type=_date, help="last date, YYYY-MM-DD (included)")
    backfill.add_argument(
        "--force", action="store_true", help="rescore dates the same model version published"
    )
    backfill.set_defaults(run=_run_backfill)

    validate = commands.add_parser("validate", help="check a published partition; exit 1 when invalid")
    add_destination_arguments(validate)
    validate.add_argument("--date", required=True, type=_date, help="the partition to check, YYYY-MM-DD")
    add_validation_arguments(validate)
    validate.add_argument(
        "--variant-tolerance",
        type=_fraction,
        default=VARIANT_TOLERANCE,
        help="how far an A/B variant's share of the rows may be from its split (default: %(default)s)",
    )
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    validate.set_defaults(run=_run_validate)

    report = commands.add_parser(
        "report", help="write a published partition's _report.html (the job writes it too) and print where"
    )
    add_destination_arguments(report)
    report.add_argument("--date", required=True, type=_date, help="the partition, YYYY-MM-DD")
    add_validation_arguments(report)
    report.set_defaults(run=_run_report)

    add_table_commands(commands)

    convert = commands.add_parser(
        "convert", help="export an MLflow scikit-learn model to ONNX; refused when parity is off"
    )
    add_convert_arguments(convert)
    convert.set_defaults(run=_run_convert)

    serve = commands.add_parser(
        "serve", help="serve the model over HTTP and gRPC through the batch job's checks and predictors"
    )
    add_serve_arguments(serve)
    serve.set_defaults(run=_run_serve)

    demo = commands.add_parser("demo", help="train, register and score a synthetic dataset, offline")
    demo.add_argument("--workdir", default="demo-workdir", help="where the demo writes everything")
    demo.add_argument("--rows", type=positive_int, default=300_000, help="rows per date")
    demo.add_argument("--master", default=None, help="Spark master (default: local[*])")
    demo.set_defaults(run=_run_demo)
    return parser


def add_validation_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags ``validate`` and ``report`` share: the partition column and the drift check's.

    Args:
        parser: The subcommand's parser.
    """
    add = parser.add_argument
    add(
        "--partition-column",
        default=JobConfig.partition_column,
        help="partition column (default: %(default)s)",
    )
    add("--psi-threshold", type=float, default=PSI_THRESHOLD, help="score drift limit (default: %(default)s)")
    add("--psi-action", choices=PSI_ACTIONS, default=PSI_ACTION, help="drift above it (default: %(default)s)")


def add_score_arguments(parser: argparse.ArgumentParser, dated: bool = True) -> None:
    """The flags of one scoring run, shared by ``scoring score``, ``jobs/score.py`` and backfills.

    Args:
        parser: The subcommand's parser.
        dated: Whether the run takes ``--date`` (a backfill takes ``--start`` and ``--end``).
    """
    add = parser.add_argument
    add(
        "--model-uri",
        default=None,
        help="the champion: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH, an MLflow model "
        "directory or a .onnx file; the registry is MLFLOW_TRACKING_URI's (or the models file's champion)",
    )
    add_lineup_arguments(parser)
    add("--input", required=True, help="input parquet file or directory (hive-partitioned or not)")
    add_destination_arguments(parser)
    if dated:
        add("--date", required=True, type=_date, help="the partition to score, YYYY-MM-DD")
    add(
        "--id-column",
        dest="id_columns",
        default=JobConfig.id_columns,
        type=_names,
        help=f"id column(s), comma-separated (default: {','.join(JobConfig.id_columns)})",
    )
    add(
        "--partition-column",
        default=JobConfig.partition_column,
        help="partition column of the output and input (default: %(default)s)",
    )
    add("--keep-columns", default=(), type=_names, help="more input columns to copy to the output")
    _add_model_arguments(parser)
    _add_run_arguments(parser)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """How a run loads and calls its models: the batch size, the backend, the device, the scores."""
    add = parser.add_argument
    add(
        "--batch-size",
        default=JobConfig.batch_size,
        type=positive_int,
        help="rows per Arrow batch (default: %(default)s)",
    )
    add(
        "--backend",
        default=JobConfig.backend,
        choices=BACKENDS,
        help="auto: ONNX Runtime for ONNX models, else pyfunc",
    )
    add(
        "--device",
        default=JobConfig.device,
        choices=DEVICES,
        help="ONNX device; auto: CUDA where the node has it",
    )
    add(
        "--scores",
        default=JobConfig.scores,
        choices=SCORES,
        help="auto: class probabilities for classifiers however they were logged; label: the prediction "
        "only; probability: fail for a model without probabilities",
    )
    add("--features", default=None, type=_names, help="feature columns, for a model without a signature")
    add("--threads", type=positive_int, help="ONNX threads per task (default: spark.task.cpus)")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a run runs, what it accepts of its input, and what it reports."""
    add = parser.add_argument
    add("--master", default=None, help="Spark master (default: spark-submit's, else local[*])")
    add(
        "--max-reject-fraction",
        default=JobConfig.max_reject_fraction,
        type=_fraction,
        help="fail above this share of rejected rows (default: %(default)s)",
    )
    add(
        "--on-duplicate-id",
        default=JobConfig.on_duplicate_id,
        choices=DUPLICATE_ID_ACTIONS,
        help="reject all but one, or fail (default: %(default)s)",
    )
    add("--skip-corrupt-files", action="store_true", help="skip unreadable input files, listing them")
    add(
        "--progress-seconds",
        default=JobConfig.progress_seconds,
        type=_non_negative,
        help="seconds between two progress lines while a partition is scored (default: %(default)g; 0: none)",
    )
    add("--no-report", dest="report", action="store_false", help="write no _report.html beside the manifest")
    add(
        "--engine",
        default=JobConfig.engine,
        choices=ENGINES,
        help="auto: Python tasks read the parquet themselves wherever that cannot change a row's fate "
        "(numeric features, no repeated ids), else Spark's scan; arrow: fail where it does not apply; "
        "spark: always Spark's scan and UDF",
    )
    add(
        "--executor",
        default=JobConfig.executor,
        choices=EXECUTORS,
        help="auto: on one machine, the Arrow pass's slices run on local worker processes (no JVM) "
        "wherever the run needs nothing of Spark's, else on Spark; local: fail where it cannot; "
        "spark: always a Spark application",
    )
    add(
        "--cost-estimate",
        default=None,
        type=_json_object,
        help="the pre-flight's cost estimate (a JSON object), kept in the manifest beside the duration",
    )


def add_destination_arguments(parser: argparse.ArgumentParser, table_only: bool = False) -> None:
    """Where the scores are published: ``--output`` (a directory) or ``--table`` (Iceberg), and ``--catalog``.

    Args:
        parser: The subcommand's parser.
        table_only: The command works on tables only (``history``, ``restore``, ``maintain``).
    """
    where = parser.add_mutually_exclusive_group(required=True)
    if not table_only:
        where.add_argument("--output", help="root of the date-partitioned output dataset (a directory)")
    where.add_argument(
        "--table",
        metavar="NAMESPACE.TABLE",
        help="an Apache Iceberg table, each date published in one commit (rejects in TABLE__rejects)",
    )
    parser.add_argument(
        "--catalog",
        default=None,
        help="the pyiceberg catalog holding --table (.pyiceberg.yaml, PYICEBERG_CATALOG__NAME__*); default: "
        "pyiceberg's default name, or an embedded SQLite catalog in ./warehouse when none is configured",
    )
    if table_only:
        parser.add_argument("--partition-column", default="date", help="partition column (default: date)")


def add_table_commands(commands: argparse._SubParsersAction) -> None:
    """``history``, ``restore`` and ``maintain``: a table's versions of a date, and its upkeep."""
    history = commands.add_parser(
        "history", help="list a table's versions of a date (snapshot, model, counts)"
    )
    add_destination_arguments(history, table_only=True)
    history.add_argument("--date", required=True, type=_date, help="the date, YYYY-MM-DD")
    history.set_defaults(run=_run_history)

    restore = commands.add_parser("restore", help="commit a date's earlier version back, for that date alone")
    add_destination_arguments(restore, table_only=True)
    restore.add_argument("--date", required=True, type=_date, help="the date, YYYY-MM-DD")
    restore.add_argument("--to", required=True, type=int, metavar="SNAPSHOT", help="a snapshot from history")
    restore.set_defaults(run=_run_restore)

    maintain = commands.add_parser(
        "maintain", help="expire a table's old snapshots and remove files no kept snapshot references"
    )
    add_destination_arguments(maintain, table_only=True)
    maintain.add_argument(
        "--older-than",
        default=dt.timedelta(days=30),
        type=_age,
        help="what to expire (default: 30d; e.g. 12h, 7d)",
    )
    maintain.set_defaults(run=_run_maintain)


def add_lineup_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags naming the models scored beside the champion (``scoring.lineup``).

    Args:
        parser: The subcommand's parser (``score``, ``backfill``, ``serve``).
    """
    add = parser.add_argument
    add("--models", default=None, metavar="FILE", help="a YAML/JSON models file (champion, challengers, "
        "ensemble, ab); flags below add to it")  # fmt: skip
    add("--challenger", action="append", default=[], metavar="NAME=URI", help="a model scored beside the "
        "champion, in columns challenger_NAME_*; repeatable")  # fmt: skip
    add("--ensemble", default=None, metavar="NAME=WEIGHT,...", help="a weighted mean of these models "
        "(champion and challengers) in ensemble_probability / ensemble_prediction")  # fmt: skip
    add("--ab", default=None, metavar="NAME=SHARE,...", help="an A/B split over these models: each row's "
        "variant (a stable hash of its id and --ab-salt) decides its prediction")  # fmt: skip
    add("--ab-salt", default=None, metavar="SALT", help="the A/B experiment's id, hashed with each row's id")
    add("--decision-threshold", default=None, type=float, help="where a probability becomes a positive "
        f"decision, for the share a challenger flips (default: {DECISION_THRESHOLD})")  # fmt: skip


def lineup_from_args(args: argparse.Namespace) -> tuple[str, Lineup]:
    """The champion's reference and the run's lineup, from the models file and the flags.

    A flag adds to (challengers) or replaces (ensemble, split, salt, threshold) what the file says.

    Raises:
        LineupError: No champion, a champion named twice differently, or a lineup that is not valid.
    """
    champion, base = (None, Lineup()) if args.models is None else Lineup.from_file(args.models)
    if args.model_uri and champion and args.model_uri != champion:
        raise LineupError(f"--model-uri {args.model_uri} and the models file's champion {champion} differ")
    champion = args.model_uri or champion
    if not champion:
        raise LineupError("no model: give --model-uri, or a models file with a champion")
    ab = parse_pairs(args.ab, "--ab") if args.ab else base.ab
    lineup = Lineup(
        challengers=base.challengers + tuple(parse_challenger(c) for c in args.challenger),
        ensemble=parse_pairs(args.ensemble, "--ensemble") if args.ensemble else base.ensemble,
        ab=ab,
        ab_salt=args.ab_salt if args.ab_salt is not None else base.ab_salt,
        decision_threshold=base.decision_threshold
        if args.decision_threshold is None
        else args.decision_threshold,
    )
    return champion, lineup


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``scoring convert``.

    Args:
        parser: The subcommand's parser.
    """
    add = parser.add_argument
    add(
        "--model-uri",
        required=True,
        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or an MLflow model directory "
        "(scikit-learn; XGBoost and LightGBM with onnxmltools); the registry is MLFLOW_TRACKING_URI's",
    )
    add(
        "--input",
        default=None,
        help="parquet file or directory to check parity on (default: the model's input example)",
    )
    add("--sample-rows", default=10_000, type=positive_int, help="rows of --input to check (default: 10000)")
    add("--quantize", action="store_true", help="also quantize (int8 weights); keep the quantized model")
    add("--tolerance", default=1e-5, type=_non_negative, help="largest difference accepted (default: 1e-5)")
    add("--dtype", default="auto", choices=DTYPES, help="auto: double when a feature is double or long")
    add("--register", default=None, metavar="NAME", help="register the export as a new version of NAME")
    add(
        "--output",
        default=None,
        help=f"write the .onnx file here (default: {DEFAULT_OUTPUT} without --register)",
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``scoring serve``; the API key comes from ``SCORING_API_KEY``, never a flag.

    Args:
        parser: The subcommand's parser.
    """
    add = parser.add_argument
    add(
        "--model-uri",
        default=None,
        help="the champion, resolved and pinned as the job does (or the models file's champion); the "
        "lineup flags below serve challengers, an ensemble and an A/B split beside it",
    )
    add_lineup_arguments(parser)
    add(
        "--id-column",
        default=JobConfig.id_columns,
        type=_names,
        help="the record field(s) holding its id, hashed for its A/B variant as the job's --id-column "
        f"(default: {','.join(JobConfig.id_columns)})",
    )
    add("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 in a container)")
    add("--port", default=8080, type=_port, help="HTTP port (default: 8080; 0: any free port)")
    add("--grpc-port", default=8081, type=_port, help="gRPC port (default: 8081; 0: any free port)")
    add("--no-grpc", action="store_true", help="serve HTTP only")
    add(
        "--workers",
        default=1,
        type=positive_int,
        help="processes serving the same ports (default: 1); raise it to one per core for throughput. Each "
        "worker holds its own copy of the models; a gRPC channel keeps one connection, so it reaches one "
        "worker",
    )
    add("--backend", default="auto", choices=BACKENDS, help="auto: ONNX Runtime for ONNX models")
    add("--device", default="auto", choices=DEVICES, help="ONNX Runtime device (default: auto)")
    add("--threads", default=1, type=positive_int, help="ONNX Runtime threads per model call (default: 1)")
    add("--scores", default="auto", choices=SCORES, help="what to answer, as the job's --scores")
    add("--max-records", default=10_000, type=positive_int, help="most records per request (default: 10000)")
    add("--max-body-bytes", default=8 << 20, type=positive_int, help="largest body (default: 8 MiB)")
    add("--batch-rows", default=256, type=positive_int, help="most rows per model call (default: 256)")
    add(
        "--batch-wait-ms",
        default=1.0,
        type=_non_negative,
        help="longest a request waits to share a model call (default: 1 ms; 0: no waiting)",
    )
    add(
        "--max-queue",
        default=128,
        type=positive_int,
        help="most scoring requests a worker holds at once; more get 503 / RESOURCE_EXHAUSTED at once "
        "(default: 128)",
    )


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The job configuration for parsed ``score`` arguments: each field from the flag of its name.

    Raises:
        LineupError: The models named do not make a lineup (see ``lineup_from_args``).
    """
    champion, lineup = lineup_from_args(args)
    named = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(JobConfig) if f.name not in _FROM_LINEUP
    }
    return JobConfig(model_uri=champion, lineup=lineup, **named)


# The fields ``lineup_from_args`` gives, from the models file and the lineup's flags.
_FROM_LINEUP = ("model_uri", "lineup")


def _run_score(args: argparse.Namespace) -> int:
    from scoring.batch.job import run_job
    from scoring.dataset.manifest import summary

    manifest = run_job(config_from_args(args))
    print(summary(manifest))
    return 0


def _run_backfill(args: argparse.Namespace) -> int:
    from scoring.batch.backfill import ProgressPrinter, run_backfill, totals_line

    args.date = args.start  # each date of the range replaces it
    results = run_backfill(config_from_args(args), args.start, args.end, args.force, ProgressPrinter())
    print(totals_line(results))
    return 1 if any(r.status == "failed" for r in results) else 0


def _run_validate(args: argparse.Namespace) -> int:
    from scoring.dataset.validate import report_json, validate_partition

    report = validate_partition(
        _destination(args),
        args.date,
        args.partition_column,
        args.psi_threshold,
        args.psi_action,
        variant_tolerance=args.variant_tolerance,
    )
    print(report_json(report) if args.json else report.summary())
    return 0 if report.ok else 1


def _run_report(args: argparse.Namespace) -> int:
    from scoring.dataset.report import write_report

    where = write_report(
        _destination(args),
        args.date,
        args.partition_column,
        psi_threshold=args.psi_threshold,
        psi_action=args.psi_action,
    )
    print(where)
    return 0


def _destination(args: argparse.Namespace) -> Destination:
    from scoring.dataset.destination import Destination

    return Destination(
        directory=getattr(args, "output", None),
        table=args.table,
        catalog=args.catalog,
        partition_column=args.partition_column,
    )


def _run_history(args: argparse.Namespace) -> int:
    from scoring.dataset.table import HISTORY_HEADER, history, open_tables

    _, scores, _ = open_tables(args.catalog, args.table)
    versions = history(scores, args.date)
    if not versions:
        print(f"table {args.table} has no version of {args.date}")
        return 0
    print(HISTORY_HEADER)
    for version in versions:
        print(version.line())
    return 0


def _run_restore(args: argparse.Namespace) -> int:
    from scoring.dataset.table import open_tables, restore

    _, scores, rejects = open_tables(args.catalog, args.table)
    if rejects is None:
        raise ScoringError(f"table {args.table}: no rejects table beside it; was it written by scoring?")
    snapshot = restore(scores, rejects, args.partition_column, args.date, args.to)
    print(f"restored {args.date} of {args.table} as it was in snapshot {args.to}: snapshot {snapshot}")
    return 0


def _run_maintain(args: argparse.Namespace) -> int:
    from scoring.dataset.table import maintain, open_tables

    _, scores, rejects = open_tables(args.catalog, args.table)
    for table in (scores, rejects):
        if table is not None:
            print(maintain(table, args.older_than).line())
    return 0


def _run_convert(args: argparse.Namespace) -> int:
    from scoring.model.convert import convert_model

    convert_model(
        args.model_uri,
        input_path=args.input,
        sample_rows=args.sample_rows,
        quantize=args.quantize,
        tolerance=args.tolerance,
        register=args.register,
        output=args.output,
        dtype=args.dtype,
    )
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    import os

    from scoring.serve.served_model import ServeSettings
    from scoring.serve.server import serve

    champion, lineup = lineup_from_args(args)
    settings = ServeSettings(
        model_uri=champion,
        lineup=lineup,
        id_columns=args.id_column,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        scores=args.scores,
        max_records=args.max_records,
        max_body_bytes=args.max_body_bytes,
        batch_rows=args.batch_rows,
        batch_wait_s=args.batch_wait_ms / 1000,
        max_queue=args.max_queue,
        api_key=os.environ.get("SCORING_API_KEY") or None,
    )
    return serve(settings, args.host, args.port, None if args.no_grpc else args.grpc_port, args.workers)


def _run_demo(args: argparse.Namespace) -> int:
    from scoring.demo import run_demo

    run_demo(args.workdir, rows=args.rows, master=args.master)
    return 0


def _configure_logging() -> None:
    # Our progress at INFO; other libraries (py4j, MLflow) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    # MLflow's download bars (carriage returns, a line per step) garble a job's log in Airflow or an EMR
    # step's stderr, as Spark's console bar would; a user who wants them sets the variable.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {value!r}") from None


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected one or more comma-separated column names")
    return names


def _json_object(value: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e.msg} at character {e.pos}") from e
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return parsed


def _age(value: str) -> dt.timedelta:
    """``30d``, ``12h`` or ``90m``: how old a snapshot or file must be to go."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    number, unit = value[:-1], value[-1:]
    if unit not in units or not number.isdigit():
        raise argparse.ArgumentTypeError(
            f"expected a number of days, hours or minutes (30d, 12h, 90m), not {value!r}"
        )
    return dt.timedelta(**{units[unit]: int(number)})


def _bounded(kind: Callable[[str], float], low: float, high: float, refusal: str) -> Callable[[str], float]:
    """An argparse type: a ``kind`` number from ``low`` to ``high``, else ``refusal`` with the value."""

    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            number = math.nan
        if not low <= number <= high:  # NaN included
            raise argparse.ArgumentTypeError(refusal.format(value=value))
        return number

    return parse


_fraction = _bounded(float, 0.0, 1.0, "expected a fraction between 0 and 1, got {value!r}")
_non_negative = _bounded(float, 0.0, math.inf, "expected a number >= 0, got {value!r}")
_port = _bounded(int, 0, 65535, "not a port number (0 to 65535): {value!r}")
# An argparse type: an integer of at least 1 (the bench's flags take it too).
positive_int = _bounded(int, 1, math.inf, "expected a positive integer, got {value!r}")
