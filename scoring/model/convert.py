"""``scoring convert``: export an MLflow scikit-learn model to ONNX, checked on real rows first.

The model is resolved exactly as the job resolves it (``scoring.model.resolve``), its features and
their types come from its signature, and skl2onnx converts it (classifiers without ZipMap, so that the
probabilities are a plain tensor). XGBoost and LightGBM models (their scikit-learn API, alone or in a
pipeline) convert too where onnxmltools, which has their converters, is installed.

Parity is measured on what the job would write: a sample of input rows, typed and filtered as the job
types and rejects them, is scored with the source model and with the export through the job's own
predictors (``scoring.model.predictors``) and output convention (``scoring.model.output``). A
difference above the tolerance refuses the export: nothing is registered or written. ``--quantize``
applies ONNX Runtime's dynamic quantization to the export and measures it the same way.

Each step has its module: the export (``scoring.model.export``), the sample and the parity
(``scoring.model.parity``), the quantization (``scoring.model.quantize``); this one runs them in order
and registers or writes the result. skl2onnx and onnx are the ``convert`` extra
(``pip install 'scoring[convert]'``), imported only when a conversion runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoring.errors import InputError, ModelError, first_line
from scoring.model.export import (
    TARGET_OPSET,
    Export,
    native_model,
    require_converter,
    save_onnx,
    to_onnx,
)
from scoring.model.parity import (
    SPEED_REPEATS,
    Parity,
    Sample,
    check_tolerance,
    example_sample,
    measure_parity,
    measured_rows_per_second,
    onnx_predictor,
    read_sample,
)
from scoring.model.predictors import Predictor, load_predictor
from scoring.model.quantize import Quantization, quantization_change, quantize_dynamic
from scoring.model.resolve import ResolvedModel, resolve_model

# Where the export is written without --register or --output.
DEFAULT_OUTPUT = "model.onnx"

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Conversion:
    """What ``convert_model`` did.

    Attributes:
        source: The source model's pinned reference.
        export: The ONNX export.
        parity: The export's parity with the source.
        speeds: Rows per second on the sample: ``source``, ``onnx`` and, when quantized, ``quantized``.
        quantization: The quantized export, when asked for.
        quantized_parity: The quantized export's parity with the source, when asked for.
        registered_uri: ``models:/NAME/VERSION`` of the registered export, when registered.
        output: Path of the written ``.onnx`` file, when written.
    """

    source: str
    export: Export
    parity: Parity
    speeds: dict[str, float] = field(default_factory=dict)
    quantization: Quantization | None = None
    quantized_parity: Parity | None = None
    registered_uri: str | None = None
    output: str | None = None


def convert_model(
    model_uri: str,
    input_path: str | None = None,
    sample_rows: int = 10_000,
    quantize: bool = False,
    tolerance: float = 1e-5,
    register: str | None = None,
    output: str | None = None,
    dtype: str = "auto",
    echo: Echo = print,
) -> Conversion:
    """Export a model to ONNX, check its parity on real rows, then register it or write it.

    Args:
        model_uri: The source model, any reference ``scoring.model.resolve.resolve_model`` takes.
        input_path: Parquet file or directory whose first rows the parity is measured on; None for the
            model's logged input example.
        sample_rows: Rows to read from ``input_path``.
        quantize: Also quantize the export (dynamic, int8 weights); the quantized model is the one
            registered or written, and it must pass the tolerance too.
        tolerance: The largest difference accepted (see ``Parity.difference``).
        register: Registered model name to log the export under as a new version; None to write it to
            ``output`` instead.
        output: Where to write the ``.onnx`` file: by default ``model.onnx`` when not registering,
            nowhere when registering.
        dtype: ``auto`` (double when a feature is double or long, else float), ``float`` or ``double``:
            the precision of the export's floating-point input and arithmetic.
        echo: Where the figures are printed, line by line.

    Returns:
        What was converted, measured, registered or written.

    Raises:
        ModelError: The converter is not installed, the model cannot be converted, or the export
            differs from the source by more than ``tolerance`` (nothing is registered or written).
        InputError: The sample cannot be read, or none of its rows is scorable.
    """
    require_converter()
    output = _output_path(register, output)
    with tempfile.TemporaryDirectory(prefix="scoring-convert-") as work:
        model = _convertible_model(model_uri, work)
        sample = _parity_sample(model, input_path, sample_rows, echo)
        export = _convert(model, dtype, echo)
        source = load_predictor(model.scorer_spec("pyfunc"), model.local_path)
        parity, speeds = _measure_export(source, export, model, sample, work, echo)
        check_tolerance(parity, tolerance, "the ONNX export", model.pinned_uri)
        quantization = quantized_parity = None
        if quantize:
            quantization, quantized_parity = _quantize_export(
                export, parity, speeds, source, model, sample, tolerance, work, echo
            )
        registered, written = _publish(
            export, quantization, quantized_parity or parity, model, tolerance, register, output, echo
        )
    return Conversion(
        model.pinned_uri, export, parity, speeds, quantization, quantized_parity, registered, written
    )


def _output_path(register: str | None, output: str | None) -> str | None:
    """Where the export is to be written, checked before any work is done.

    Args:
        register: The registered model name, or None.
        output: The ``--output`` path, or None.

    Returns:
        ``output``, or ``DEFAULT_OUTPUT`` when neither registering nor given an output; None when only
        registering.

    Raises:
        InputError: The output's directory does not exist.
    """
    if register is None and output is None:
        output = DEFAULT_OUTPUT
    if output is not None and not Path(output).resolve().parent.is_dir():
        raise InputError(f"--output {output}: directory {Path(output).resolve().parent} does not exist")
    return output


def _convertible_model(model_uri: str, work: str) -> ResolvedModel:
    """Resolve the source model as the job does, refusing one that is already ONNX.

    Args:
        model_uri: The source model's reference.
        work: Scratch directory the model is staged in.

    Returns:
        The resolved model.

    Raises:
        ModelError: The model is already an ONNX model.
    """
    model = resolve_model(model_uri, work)
    if model.is_onnx:
        raise ModelError(f"model {model_uri!r} ({model.pinned_uri}) is already an ONNX model")
    return model


def _parity_sample(model: ResolvedModel, input_path: str | None, sample_rows: int, echo: Echo) -> Sample:
    """The rows parity is measured on: the first rows of ``input_path``, else the logged input example.

    Args:
        model: The source model.
        input_path: Parquet file or directory, or None for the model's logged input example.
        sample_rows: Rows to read from ``input_path``.
        echo: Where the sample is described.

    Returns:
        The sample, typed and filtered as the job would.
    """
    if input_path is None:
        echo("no --input: measuring parity on the model's logged input example")
    sample = (
        example_sample(model) if input_path is None else read_sample(input_path, model.features, sample_rows)
    )
    echo(sample.describe())
    return sample


def _convert(model: ResolvedModel, dtype: str, echo: Echo) -> Export:
    """Convert the source model's native estimator to ONNX.

    Args:
        model: The source model.
        dtype: ``auto``, ``float`` or ``double`` (see ``convert_model``).
        echo: Where the conversion is reported.

    Returns:
        The ONNX export.
    """
    native = native_model(model)
    export = to_onnx(native, model.features, dtype)
    echo(
        f"converted {model.pinned_uri} ({type(native).__name__}) to ONNX opset {TARGET_OPSET}, "
        f"input {', '.join(export.inputs)}"
    )
    if export.note:
        echo(export.note)
    return export


def _measure_export(
    source: Predictor, export: Export, model: ResolvedModel, sample: Sample, work: str, echo: Echo
) -> tuple[Parity, dict[str, float]]:
    """Measure the export's parity with the source, and both one's speed, on the sample.

    Args:
        source: The source model's predictor.
        export: The ONNX export.
        model: The source model.
        sample: The rows measured on.
        work: Scratch directory the export is saved in to be loaded by ONNX Runtime.
        echo: Where the parity and the speeds are reported.

    Returns:
        The export's parity, and rows per second keyed ``source`` and ``onnx``.
    """
    candidate = onnx_predictor(save_onnx(export.graph, Path(work, "export.onnx")), model.features)
    parity = measure_parity(source, candidate, sample.frame)
    echo(f"parity of the export: {parity.describe()}")
    speeds = {
        "source": measured_rows_per_second(source, sample.frame),
        "onnx": measured_rows_per_second(candidate, sample.frame),
    }
    echo(
        f"speed ({len(sample.frame):,} rows, best of {SPEED_REPEATS}+ runs, ONNX Runtime on 1 thread "
        f"as in one Spark task): source {speeds['source']:,.0f} rows/s, "
        f"ONNX {speeds['onnx']:,.0f} rows/s ({speeds['onnx'] / speeds['source']:.1f}x)"
    )
    return parity, speeds


def _quantize_export(
    export: Export,
    parity: Parity,
    speeds: dict[str, float],
    source: Predictor,
    model: ResolvedModel,
    sample: Sample,
    tolerance: float,
    work: str,
    echo: Echo,
) -> tuple[Quantization, Parity]:
    """Quantize the export and, when that changed it, measure and check it as the export was.

    Args:
        export: The ONNX export, already within the tolerance.
        parity: The export's parity with the source.
        speeds: Rows per second so far; gains ``quantized`` when the quantization changed the export.
        source: The source model's predictor.
        model: The source model.
        sample: The rows measured on.
        tolerance: The largest difference accepted.
        work: Scratch directory the quantized export is saved in.
        echo: Where the quantization, its parity and its speed are reported.

    Returns:
        The quantization, and its parity with the source (the export's when nothing changed).

    Raises:
        ModelError: The quantized export differs from the source by more than ``tolerance``.
    """
    quantization = quantize_dynamic(export.graph, export.dtype)
    echo(f"quantize: {quantization.summary}")
    if not quantization.changed:
        return quantization, parity
    quantized = onnx_predictor(save_onnx(quantization.graph, Path(work, "quantized.onnx")), model.features)
    quantized_parity = measure_parity(source, quantized, sample.frame)
    speeds["quantized"] = measured_rows_per_second(quantized, sample.frame)
    echo(f"parity of the quantized export: {quantized_parity.describe()}")
    echo(quantization_change(parity, quantized_parity, speeds))
    check_tolerance(quantized_parity, tolerance, "the quantized export", model.pinned_uri)
    return quantization, quantized_parity


def _publish(
    export: Export,
    quantization: Quantization | None,
    parity: Parity,
    model: ResolvedModel,
    tolerance: float,
    register: str | None,
    output: str | None,
    echo: Echo,
) -> tuple[str | None, str | None]:
    """Register the accepted graph, write it, or both: the quantized one when quantized.

    Args:
        export: The ONNX export.
        quantization: The quantization, when asked for.
        parity: The parity the graph was accepted on.
        model: The source model.
        tolerance: The tolerance the parity was accepted at.
        register: Registered model name, or None not to register.
        output: Path of the ``.onnx`` file, or None not to write one.
        echo: Where the registration and the file are reported.

    Returns:
        ``models:/NAME/VERSION`` of the registered version, or None; the written file's path, or None.

    Raises:
        ModelError: MLflow refuses to log or register it.
    """
    graph = export.graph if quantization is None else quantization.graph
    registered = written = None
    if register is not None:
        registered = _register_export(graph, model, register, parity, quantization, tolerance, export, echo)
    if output is not None:
        written = _write_export(graph, output, model, export, echo)
    return registered, written


def _register_export(
    graph: Any,
    model: ResolvedModel,
    name: str,
    parity: Parity,
    quantization: Quantization | None,
    tolerance: float,
    export: Export,
    echo: Echo,
) -> str:
    """Register the graph as a new version of ``name``, tagged with its source and parity.

    Args:
        graph: The ONNX graph to register (the quantized one when quantized).
        model: The source model.
        name: Registered model name.
        parity: The parity the graph was accepted on.
        quantization: The quantization, when asked for.
        tolerance: The tolerance the parity was accepted at.
        export: The ONNX export (its dtype is tagged).
        echo: Where the registration is reported.

    Returns:
        ``models:/NAME/VERSION`` of the new version.

    Raises:
        ModelError: MLflow refuses to log or register it.
    """
    changed = quantization is not None and quantization.changed
    tags = version_tags(model, parity, changed, tolerance, export.dtype)
    registered = register_onnx(graph, model, name, tags)
    echo(f"registered {registered} (converted_from={model.pinned_uri}, quantized={tags['quantized']})")
    return registered


def _write_export(graph: Any, output: str, model: ResolvedModel, export: Export, echo: Echo) -> str:
    """Write the graph to ``output`` and say how to score it.

    Args:
        graph: The ONNX graph to write (the quantized one when quantized).
        output: Path of the ``.onnx`` file.
        model: The source model.
        export: The ONNX export (a single input needs ``--features`` to score).
        echo: Where the file and the command to score it are reported.

    Returns:
        The written file's path.
    """
    written = str(save_onnx(graph, Path(output)))
    hint = f" --features {','.join(model.feature_names)}" if len(export.inputs) == 1 else ""
    echo(
        f"wrote {written}: score it with --model-uri {written}{hint} "
        "(--register keeps the signature and the feature ranges)"
    )
    return written


def version_tags(
    model: ResolvedModel, parity: Parity, quantized: bool, tolerance: float, dtype: str
) -> dict[str, str]:
    """The model-version tags of a registered export: its source and the parity it was accepted on."""
    tags = {
        "converted_from": model.pinned_uri,
        "quantized": str(quantized).lower(),
        "onnx_dtype": dtype,
        "parity_measure": parity.measure,
        "max_abs_diff": f"{parity.difference:.6g}",
        "parity_rows": str(parity.rows),
        "parity_tolerance": f"{tolerance:g}",
    }
    if parity.label_agreement is not None:
        tags["label_agreement"] = f"{parity.label_agreement:.6f}"
    return tags


def register_onnx(graph: Any, source: ResolvedModel, name: str, tags: Mapping[str, str]) -> str:
    """Log an ONNX graph with the source's signature and metadata and register it as a version of ``name``.

    The run is created in the source run's experiment when the source has one (else MLflow's current
    experiment) and carries ``tags``, as does the new model version.

    Returns:
        ``models:/NAME/VERSION`` of the new version.

    Raises:
        ModelError: MLflow refuses to log or register it.
    """
    import mlflow
    import mlflow.onnx
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    mlmodel = Model.load(source.local_path)
    client = mlflow.MlflowClient()
    try:
        experiment_id = client.get_run(source.run_id).info.experiment_id if source.run_id else None
    except MlflowException:
        experiment_id = None  # a staged copy whose run this registry does not know
    try:
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"convert-{source.name}",
            nested=mlflow.active_run() is not None,
        ):
            mlflow.set_tags(dict(tags))
            info = mlflow.onnx.log_model(
                graph,
                name="model",
                signature=mlmodel.signature,
                metadata=mlmodel.metadata,
                registered_model_name=name,
            )
        version = str(info.registered_model_version)
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
    except MlflowException as e:
        raise ModelError(f"cannot register the ONNX export as {name!r}: {first_line(e.message)}") from e
    return f"models:/{name}/{version}"
