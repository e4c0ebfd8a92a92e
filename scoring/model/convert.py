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
    check_tolerance,
    example_sample,
    measure_parity,
    measured_rows_per_second,
    onnx_predictor,
    read_sample,
)
from scoring.model.predictors import load_predictor
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
    if register is None and output is None:
        output = DEFAULT_OUTPUT
    if output is not None and not Path(output).resolve().parent.is_dir():
        raise InputError(f"--output {output}: directory {Path(output).resolve().parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="scoring-convert-") as work:
        model = resolve_model(model_uri, work)
        if model.is_onnx:
            raise ModelError(f"model {model_uri!r} ({model.pinned_uri}) is already an ONNX model")
        if input_path is None:
            echo("no --input: measuring parity on the model's logged input example")
        sample = (
            example_sample(model)
            if input_path is None
            else read_sample(input_path, model.features, sample_rows)
        )
        echo(sample.describe())

        native = native_model(model)
        export = to_onnx(native, model.features, dtype)
        echo(
            f"converted {model.pinned_uri} ({type(native).__name__}) to ONNX opset {TARGET_OPSET}, "
            f"input {', '.join(export.inputs)}"
        )
        if export.note:
            echo(export.note)

        source = load_predictor(model.scorer_spec("pyfunc"), model.local_path)
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
        check_tolerance(parity, tolerance, "the ONNX export", model.pinned_uri)

        quantization = quantized_parity = None
        if quantize:
            quantization = quantize_dynamic(export.graph, export.dtype)
            echo(f"quantize: {quantization.summary}")
            quantized_parity = parity  # unless it changed: then it is measured like the export
            if quantization.changed:
                quantized = onnx_predictor(
                    save_onnx(quantization.graph, Path(work, "quantized.onnx")), model.features
                )
                quantized_parity = measure_parity(source, quantized, sample.frame)
                speeds["quantized"] = measured_rows_per_second(quantized, sample.frame)
                echo(f"parity of the quantized export: {quantized_parity.describe()}")
                echo(quantization_change(parity, quantized_parity, speeds))
                check_tolerance(quantized_parity, tolerance, "the quantized export", model.pinned_uri)

        graph = export.graph if quantization is None else quantization.graph
        registered = written = None
        if register is not None:
            changed = quantization is not None and quantization.changed
            tags = version_tags(model, quantized_parity or parity, changed, tolerance, export.dtype)
            registered = register_onnx(graph, model, register, tags)
            echo(
                f"registered {registered} (converted_from={model.pinned_uri}, quantized={tags['quantized']})"
            )
        if output is not None:
            written = str(save_onnx(graph, Path(output)))
            hint = f" --features {','.join(model.feature_names)}" if len(export.inputs) == 1 else ""
            echo(
                f"wrote {written}: score it with --model-uri {written}{hint} "
                "(--register keeps the signature and the feature ranges)"
            )
    return Conversion(
        model.pinned_uri, export, parity, speeds, quantization, quantized_parity, registered, written
    )


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
