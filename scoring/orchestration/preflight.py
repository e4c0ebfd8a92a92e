"""Checks that run before any cluster is paid for: the models, and the input's footers.

Neither needs Spark: the model check asks the registry, the input check reads parquet footers and a
few rows with pyarrow (a local disk or S3), and scores them with every model of the run's lineup, with
the backends the job uses; an ensemble or an A/B split whose models cannot be combined fails here.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow.dataset as ds
import pyarrow.fs as pafs

from scoring.dataset.storage import filesystem
from scoring.errors import InputError, ModelError
from scoring.lineup import CHAMPION, Lineup
from scoring.model.combine import check_lineup, union_features
from scoring.model.kinds import ModelKind, model_kind
from scoring.model.output import OutputSpec
from scoring.model.predictors import PyfuncPredictor, choose_backend, load_predictor
from scoring.model.resolve import ResolvedModel, pin_model_uri, resolve_lineup
from scoring.model.rows import scorable_rows
from scoring.model.schema import arrow_column_types, check_columns

if TYPE_CHECKING:
    import pandas as pd

# Rows scored locally by the pre-flight check.
SAMPLE_ROWS = 64


def check_model(uri: str, max_age_days: float | None, as_of: dt.datetime) -> dict:
    """Check that a registry reference resolves, is recent enough and has a signature.

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID/PATH``.
        max_age_days: Oldest acceptable version, in days before ``as_of``; None for no limit.
        as_of: The time the age is measured at (the run's data interval end, not the wall clock).

    Returns:
        The pinned reference: ``pinned_uri``, ``name``, ``version``, ``created_at``.

    Raises:
        ModelError: The reference does not resolve, the version is too old, or has no signature.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    pinned = pin_model_uri(uri)
    if max_age_days is not None and pinned.created_at is not None:
        age = (as_of - pinned.created_at).total_seconds() / 86_400
        if age > max_age_days:
            raise ModelError(
                f"model {pinned.pinned_uri} (from {uri}) is {age:.0f} days old at {as_of:%Y-%m-%d}, "
                f"older than the {max_age_days:g} days allowed"
            )
    try:
        signature = mlflow.models.get_model_info(pinned.pinned_uri).signature
    except MlflowException as e:
        raise ModelError(f"cannot read model {pinned.pinned_uri}: {e.message.splitlines()[0]}") from e
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        raise ModelError(f"model {pinned.pinned_uri} has no signature with named input columns")
    return {
        "pinned_uri": pinned.pinned_uri,
        "name": pinned.name,
        "version": pinned.version,
        "created_at": pinned.created_at.isoformat() if pinned.created_at else None,
    }


def check_input(
    model_uri: str,
    input_path: str,
    date: dt.date,
    partition_column: str = "date",
    carried: Sequence[str] = ("id",),
    backend: str = "auto",
    scores: str = "auto",
    lineup: Lineup | None = None,
) -> dict:
    """Check the input partition against every model from footers only, then score a few rows.

    Args:
        model_uri: The (pinned) champion's reference.
        input_path: The job's ``--input``.
        date: The partition to score.
        partition_column: The input's partition column, when it is partitioned.
        carried: Id and keep columns the job copies to the output.
        backend: The job's ``--backend`` (the champion's; challengers get their natural one, as in the
            job).
        scores: The job's ``--scores``.
        lineup: The (pinned) challengers, ensemble and A/B split scored beside the champion.

    Returns:
        ``rows``, ``files`` and ``output`` (the champion's output shape) of the partition; ``kinds``:
        each model's backend and whether it is a tree ensemble (``scoring.model.kinds.ModelKind``), by
        name in the lineup; and with challengers, ``challengers``: each one's output shape, by name.

    Raises:
        InputError: The partition is missing or empty, or does not match a model's signature.
        ModelError: A model cannot score a sample of it (or gives no probabilities when ``scores`` is
            ``probability``), or the lineup's ensemble or split cannot combine the models' outputs.
    """
    lineup = lineup or Lineup()
    partition = _partition_path(input_path, partition_column, date)
    dataset, rows = _read_footers(partition, partition_column, date)
    with tempfile.TemporaryDirectory(prefix="scoring-preflight-") as download_dir:
        models = resolve_lineup(lineup, model_uri, download_dir)
        sample = _read_sample(dataset, models, carried, partition)
        sampled = _score_sample(models, backend, scores, sample)
    outputs = {name: output for name, (output, _) in sampled.items()}
    check_lineup(lineup, outputs)
    return _findings(lineup, dataset, rows, outputs, sampled)


def _read_footers(partition: str, partition_column: str, date: dt.date) -> tuple[ds.FileSystemDataset, int]:
    """Open the partition as a parquet dataset and count its rows from the footers alone.

    Args:
        partition: The partition's path (a local directory or an S3 URI).
        partition_column: The input's partition column, named in the error for an empty partition.
        date: The partition's date, named in the error for an empty partition.

    Returns:
        The dataset and its number of rows.

    Raises:
        InputError: The partition cannot be read as parquet, or has no rows.
    """
    fs, path = filesystem(partition)
    try:
        dataset = ds.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=False)
        rows = dataset.count_rows()  # footers only
    except (OSError, ValueError) as e:  # not found, or not parquet
        raise InputError(f"input {partition}: cannot read parquet footers: {e}") from e
    if rows == 0:
        raise InputError(f"input {partition}: no rows for {partition_column}={date.isoformat()}")
    return dataset, rows


def _read_sample(
    dataset: ds.FileSystemDataset,
    models: dict[str, ResolvedModel],
    carried: Sequence[str],
    partition: str,
) -> pd.DataFrame:
    """Check the input's columns against every model's features, then read its first scorable rows.

    Args:
        dataset: The partition.
        models: The lineup's resolved models, by name.
        carried: Id and keep columns the job copies to the output.
        partition: The partition's path, for the errors.

    Returns:
        The scorable rows among the first ``SAMPLE_ROWS``, with the features of all the models.

    Raises:
        InputError: The columns do not match the models' features, or no sampled row is scorable.
    """
    features = union_features({name: model.features for name, model in models.items()})
    check_columns(arrow_column_types(dataset.schema), features, carried, partition)
    head = dataset.head(SAMPLE_ROWS, columns=[f.name for f in features]).to_pandas()
    sample = scorable_rows(head, features)
    if sample.empty:
        raise InputError(f"input {partition}: none of the first {SAMPLE_ROWS} rows is scorable")
    return sample


def _score_sample(
    models: dict[str, ResolvedModel], backend: str, scores: str, sample: pd.DataFrame
) -> dict[str, tuple[OutputSpec, ModelKind]]:
    """Score the sample with every model, the champion with the job's backend, the others with theirs.

    Args:
        models: The lineup's resolved models, by name.
        backend: The job's ``--backend``, for the champion.
        scores: The job's ``--scores``.
        sample: The rows to score.

    Returns:
        Each model's output shape and kind, by name.
    """
    return {
        name: _sample_output(model, backend if name == CHAMPION else "auto", scores, sample, name)
        for name, model in models.items()
    }


def _findings(
    lineup: Lineup,
    dataset: ds.FileSystemDataset,
    rows: int,
    outputs: dict[str, OutputSpec],
    sampled: dict[str, tuple[OutputSpec, ModelKind]],
) -> dict:
    """What the input check found, as ``check_input`` returns it.

    Args:
        lineup: The run's lineup.
        dataset: The partition.
        rows: The partition's number of rows.
        outputs: Each model's output shape, by name.
        sampled: Each model's output shape and kind, by name.

    Returns:
        ``rows``, ``files``, ``output`` and ``kinds``; with challengers, ``challengers`` too.
    """
    found = {
        "rows": rows,
        "files": len(dataset.files),
        "output": _kind(outputs[CHAMPION]),
        "kinds": {name: kind.to_json() for name, (_, kind) in sampled.items()},
    }
    if lineup.several:
        found["challengers"] = {name: _kind(outputs[name]) for name, _ in lineup.challengers}
    return found


def _sample_output(
    model: ResolvedModel, backend: str, scores: str, sample: pd.DataFrame, name: str
) -> tuple[OutputSpec, ModelKind]:
    """The output shape of ``model`` on the sample's rows, scored as the job would (on the CPU).

    With it, the model's kind (its backend, whether it is a tree ensemble), from what was loaded.
    """
    chosen = choose_backend(backend, model.is_onnx, model.has_pyfunc)
    try:
        predictor = load_predictor(model.scorer_spec(chosen, scores=scores), model.local_path)
        output = OutputSpec.of(predictor.predict(sample[model.feature_names]))
    except ModelError as e:
        raise (e if name == CHAMPION else ModelError(f"challenger {name!r}: {e}")) from e
    native = predictor.classifier if isinstance(predictor, PyfuncPredictor) else None
    return output, model_kind(chosen, model.onnx_file, model.local_path, native)


def _kind(output: OutputSpec) -> str:
    """A model's output shape in a word: ``binary``, ``multiclass``, or its prediction type."""
    return output.probability or output.prediction_type


def _partition_path(input_path: str, partition_column: str, date: dt.date) -> str:
    """The date's partition directory when the input is partitioned by ``partition_column``."""
    candidate = f"{input_path.rstrip('/')}/{partition_column}={date.isoformat()}"
    fs, path = filesystem(candidate)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        return candidate
    _, root = filesystem(input_path)
    listing = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    if any(info.base_name.startswith(f"{partition_column}=") for info in listing):
        raise InputError(f"input {input_path}: no partition {partition_column}={date.isoformat()}")
    return input_path
