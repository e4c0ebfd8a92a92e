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

skl2onnx and onnx are the ``convert`` extra (``pip install 'scoring[convert]'``), imported only here
and only when a conversion runs.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scoring.errors import InputError, ModelError, first_line
from scoring.model.output import OutputSpec, scores_frame
from scoring.model.predictors import Predictor, ScorerSpec, load_predictor
from scoring.model.resolve import ResolvedModel, resolve_model
from scoring.model.rows import scorable_rows
from scoring.model.schema import arrow_column_types, check_columns
from scoring.model.signature import Feature

# The ONNX opset of the exports: what the demo uses, and what every supported onnxruntime runs.
TARGET_OPSET = 17
DTYPES = ("auto", "float", "double")
DEFAULT_OUTPUT = "model.onnx"
# Timed runs of each model over the sample; the best one counts.
SPEED_REPEATS = 5

_EXTRA = "scoring convert needs skl2onnx and onnx: pip install 'scoring[convert]'"
# Flavors whose native model skl2onnx (with onnxmltools' converters for the last two) can convert.
_CONVERTIBLE_FLAVORS = ("sklearn", "xgboost", "lightgbm")
_NUMERIC = ("boolean", "integer", "long", "float", "double")

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Sample:
    """Feature rows to measure parity and speed on, typed as the job types them.

    Attributes:
        frame: The rows, one column per feature in model order, of the signature's numpy types.
        source: The parquet input they were read from; None for the model's logged input example.
        read: Rows read, before those the job would reject were left out.
    """

    frame: pd.DataFrame
    source: str | None
    read: int

    def describe(self) -> str:
        """One line: how many rows, from where, and how many were left out."""
        where = "the model's logged input example" if self.source is None else f"the first {self.read:,}"
        if self.source is not None:
            where += f" of {self.source}"
        left_out = self.read - len(self.frame)
        if left_out:
            where += (
                f", less {left_out:,} that the job would reject: null, NaN/inf, not castable or outside "
                "the model's declared range"
            )
        return f"sample: {len(self.frame):,} rows ({where})"


@dataclass(frozen=True)
class Export:
    """An ONNX graph converted from a native model.

    Attributes:
        graph: The ONNX model (an ``onnx.ModelProto``).
        dtype: ``float`` or ``double``: the precision of its floating-point input.
        inputs: Its graph inputs, as ``name: type[shape]`` for messages.
        note: Why the precision differs from the one asked for, if it does.
    """

    graph: Any
    dtype: str
    inputs: tuple[str, ...]
    note: str | None = None


@dataclass(frozen=True)
class Parity:
    """How far a candidate model's written columns are from the source model's, on one sample.

    Attributes:
        rows: Rows compared.
        measure: ``probability`` (classifiers), ``prediction`` (regressors) or ``label`` (classifiers
            without probabilities).
        difference: The largest absolute difference of the measured column; for ``label``, the share
            of rows whose label differs. This is what the tolerance applies to.
        label_agreement: Share of rows with the same ``prediction``, for classifiers; else None.
    """

    rows: int
    measure: str
    difference: float
    label_agreement: float | None = None

    def within(self, tolerance: float) -> bool:
        """Whether the difference is at most ``tolerance``."""
        return self.difference <= tolerance

    def describe(self) -> str:
        """The figures, in words."""
        if self.measure == "label":
            what = f"labels differ on {self.difference:.4%} of {self.rows:,} rows"
        else:
            what = f"max |diff| of {self.measure} {self.difference:.3g} on {self.rows:,} rows"
        if self.label_agreement is not None and self.measure != "label":
            what += f", labels agree on {self.label_agreement:.4%}"
        return what


@dataclass(frozen=True)
class Quantization:
    """The export after ONNX Runtime's dynamic quantization.

    Attributes:
        graph: The quantized ONNX model (the export itself when nothing was quantized).
        changed: Whether quantization changed the graph.
        summary: What changed, or why nothing did.
    """

    graph: Any
    changed: bool
    summary: str


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
        _check_tolerance(parity, tolerance, "the ONNX export", model.pinned_uri)

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
                echo(_quantization_change(parity, quantized_parity, speeds))
                _check_tolerance(quantized_parity, tolerance, "the quantized export", model.pinned_uri)

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


def require_converter() -> None:
    """Check that skl2onnx and onnx are installed.

    Raises:
        ModelError: They are not: the message names the extra that installs them.
    """
    try:
        import onnx  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError as e:
        raise ModelError(_EXTRA) from e


def native_model(model: ResolvedModel) -> object:
    """The native model of an MLflow model of a convertible flavor (sklearn, xgboost, lightgbm).

    Raises:
        ModelError: The model has no convertible flavor, or MLflow cannot load it.
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    flavors = sorted(set(Model.load(model.local_path).flavors) - {"python_function"})
    if not any(flavor in flavors for flavor in _CONVERTIBLE_FLAVORS):
        raise ModelError(
            f"model {model.uri!r} has flavor {', '.join(flavors) or 'none'}: scoring convert exports "
            "scikit-learn models (and XGBoost or LightGBM ones, with onnxmltools installed)"
        )
    try:
        return mlflow.pyfunc.load_model(model.local_path).get_raw_model()
    except Exception as e:  # MLflow's and the flavors' (skops') own errors; the model cannot be loaded
        raise ModelError(f"cannot load model {model.uri!r}: {first_line(str(e))}") from e


def onnx_dtype(features: Sequence[Feature], requested: str = "auto") -> str:
    """The precision of the export: ``double`` when a feature is 64-bit (double or long) under ``auto``."""
    if requested != "auto":
        return requested
    return "double" if any(f.type in ("double", "long") for f in features) else "float"


def initial_types(features: Sequence[Feature], dtype: str) -> list[tuple[str, Any]]:
    """skl2onnx's input types for the features.

    Numeric features (booleans and integers included) become one ``[N, F]`` matrix named ``features``,
    in signature order, of ``dtype``: what a scikit-learn estimator or pipeline takes. With a text
    feature, each feature is its own ``[N, 1]`` input named after its column, as a pipeline that
    starts with a ``ColumnTransformer`` selecting columns by name takes them.
    """
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    number = DoubleTensorType if dtype == "double" else FloatTensorType
    if all(f.type in _NUMERIC for f in features):
        return [("features", number([None, len(features)]))]
    return [
        (f.name, StringTensorType([None, 1]) if f.type == "string" else number([None, 1])) for f in features
    ]


def to_onnx(native: object, features: Sequence[Feature], dtype: str = "auto") -> Export:
    """Convert a native model to ONNX with skl2onnx, classifiers without ZipMap.

    Under ``auto``, a model whose double-precision graph ONNX Runtime cannot run (scikit-learn's tree
    ensembles, which compute in float32 anyway) is exported in float32, with a note saying so.

    Args:
        native: A scikit-learn estimator or pipeline (XGBoost and LightGBM estimators need onnxmltools).
        features: The model's features, in signature order.
        dtype: ``auto``, ``float`` or ``double`` (see ``onnx_dtype``).

    Raises:
        ModelError: skl2onnx cannot convert the model, or ONNX Runtime cannot load the result.
    """
    _register_booster_converters(native)
    chosen = onnx_dtype(features, dtype)
    try:
        graph, inputs = _convert(native, features, chosen)
        return Export(graph, chosen, inputs)
    except ModelError as e:
        if dtype != "auto" or chosen == "float":
            raise
        graph, inputs = _convert(native, features, "float")
        ops = {node.op_type for node in graph.graph.node}
        why = (
            "its tree ensemble ops compute in float32, as scikit-learn's trees do"
            if any(op.startswith("TreeEnsemble") for op in ops)
            else str(e)
        )
        note = (
            f"exported in float32: ONNX Runtime cannot run {type(native).__name__} in double precision "
            f"({why}); the job feeds it float32"
        )
        return Export(graph, "float", inputs, note)


def _convert(native: object, features: Sequence[Feature], dtype: str) -> tuple[Any, tuple[str, ...]]:
    import onnxruntime as ort
    from skl2onnx import convert_sklearn

    options = {id(native): {"zipmap": False}} if _is_classifier(native) else None
    try:
        graph = convert_sklearn(
            native, initial_types=initial_types(features, dtype), options=options, target_opset=TARGET_OPSET
        )
    except Exception as e:  # skl2onnx raises many types (RuntimeError, MissingShapeCalculator, ...)
        raise ModelError(
            f"cannot convert {type(native).__name__} to ONNX with skl2onnx: {first_line(str(e))}"
        ) from e
    try:
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own untyped errors
        raise ModelError(
            f"ONNX Runtime cannot run the {dtype}-precision export of {type(native).__name__}: "
            f"{first_line(str(e))}"
        ) from e
    inputs = tuple(
        f"{i.name}: {i.type.removeprefix('tensor(').rstrip(')')}{list(i.shape)}" for i in session.get_inputs()
    )
    return graph, inputs


def _is_classifier(native: object) -> bool:
    return callable(getattr(native, "predict_proba", None)) and hasattr(native, "classes_")


def _register_booster_converters(native: object) -> None:
    """Teach skl2onnx onnxmltools' XGBoost and LightGBM converters, where the model holds one.

    Raises:
        ModelError: The model holds an XGBoost or LightGBM estimator and onnxmltools is not installed.
    """
    libraries = {type(part).__module__.split(".")[0] for part in _parts(native)} & {"xgboost", "lightgbm"}
    if not libraries:
        return
    names = " and ".join(sorted({"xgboost": "XGBoost", "lightgbm": "LightGBM"}[lib] for lib in libraries))
    try:
        import onnxmltools  # noqa: F401
    except ImportError as e:
        raise ModelError(
            f"converting a {names} model needs onnxmltools' converters: pip install onnxmltools"
        ) from e
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if "xgboost" in libraries:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(
            XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
            convert_xgboost, options=classifier_options,
        )  # fmt: skip
        update_registered_converter(
            XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
        )
    if "lightgbm" in libraries:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
            convert_lightgbm, options=classifier_options,
        )  # fmt: skip
        update_registered_converter(
            LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
            convert_lightgbm, options={"split": None},
        )  # fmt: skip


def _parts(native: object) -> Iterator[object]:
    """The model and the estimators nested in it (pipeline steps, column transformers' parts)."""
    yield native
    get_params = getattr(native, "get_params", None)
    if callable(get_params):
        try:
            params = get_params(deep=True)
        except Exception:  # a foreign estimator's get_params: nothing nested that we can see
            return
        yield from (value for value in params.values() if hasattr(value, "fit"))


def read_sample(input_path: str, features: Sequence[Feature], rows: int) -> Sample:
    """The first ``rows`` rows of a parquet file or directory, the features' columns only.

    Raises:
        InputError: The input cannot be read, lacks a feature, has a type the job would refuse, or
            holds no scorable row.
    """
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(input_path, format="parquet", partitioning="hive")
        check_columns(arrow_column_types(dataset.schema), features, (), input_path)
        table = dataset.head(rows, columns=[f.name for f in features])
    except (OSError, ValueError) as e:  # not found, or not parquet
        raise InputError(f"input {input_path}: cannot read parquet: {first_line(str(e))}") from e
    return _sample(table.to_pandas(), features, input_path)


def example_sample(model: ResolvedModel) -> Sample:
    """The model's logged input example as a sample.

    Raises:
        InputError: The model has no input example that holds its features: ``--input`` is needed.
    """
    from mlflow.models import Model

    ask = f"model {model.uri!r} has no logged input example with its features: pass --input PARQUET"
    try:
        example = Model.load(model.local_path).load_input_example(model.local_path)
    except Exception as e:  # MLflow's own errors for an unreadable example
        raise InputError(ask) from e
    if isinstance(example, np.ndarray) and example.ndim == 2 and example.shape[1] == len(model.features):
        example = pd.DataFrame(example, columns=model.feature_names)
    if not isinstance(example, pd.DataFrame) or not set(model.feature_names) <= set(example.columns):
        raise InputError(ask)
    return _sample(example[model.feature_names], model.features, None)


def _sample(frame: pd.DataFrame, features: Sequence[Feature], source: str | None) -> Sample:
    typed, read = scorable_rows(frame, features), len(frame)
    if typed.empty:
        where = "the model's logged input example" if source is None else source
        raise InputError(f"none of the {read:,} rows read from {where} is scorable")
    return Sample(typed, source, read)


def onnx_predictor(onnx_file: str | Path, features: Sequence[Feature]) -> Predictor:
    """The job's ONNX predictor for a graph file, on the CPU with one thread, as one Spark task runs."""
    spec = ScorerSpec(str(onnx_file), "", "onnx", "cpu", 1, tuple(features))
    return load_predictor(spec, str(onnx_file))


def written_columns(predictor: Predictor, frame: pd.DataFrame) -> tuple[OutputSpec, pd.DataFrame]:
    """The ``prediction`` (and ``probability``) columns the job writes for ``frame``, and their shape."""
    scores = predictor.predict(frame)
    output = OutputSpec.of(scores)
    return output, scores_frame(scores, output)


def measure_parity(source: Predictor, candidate: Predictor, frame: pd.DataFrame) -> Parity:
    """Compare the columns the job would write with ``candidate`` to those it writes with ``source``.

    Raises:
        ModelError: The two write different columns or types (a label type, probabilities or none).
    """
    expected_spec, expected = written_columns(source, frame)
    actual_spec, actual = written_columns(candidate, frame)
    return compare_columns(expected_spec, expected, actual_spec, actual)


def compare_columns(
    expected_spec: OutputSpec, expected: pd.DataFrame, actual_spec: OutputSpec, actual: pd.DataFrame
) -> Parity:
    """Parity of two models' written columns (see ``Parity``).

    Raises:
        ModelError: The two write different columns or types.
    """
    for what in ("prediction_type", "probability"):
        want, got = getattr(expected_spec, what), getattr(actual_spec, what)
        if want != got:
            raise ModelError(
                f"the ONNX export writes {what.replace('_', ' ')} {got}, the source model {want}: "
                "the job's output would change shape"
            )
    rows = len(expected)
    if expected_spec.probability is None and expected_spec.prediction_type == "double":
        diff = np.abs(actual["prediction"].to_numpy() - expected["prediction"].to_numpy())
        return Parity(rows, "prediction", float(diff.max(initial=0.0)))
    agreement = float((actual["prediction"].to_numpy() == expected["prediction"].to_numpy()).mean())
    if expected_spec.probability is None:
        return Parity(rows, "label", 1.0 - agreement, agreement)
    want = np.stack(expected["probability"].to_numpy()).astype(np.float64)
    got = np.stack(actual["probability"].to_numpy()).astype(np.float64)
    return Parity(rows, "probability", float(np.abs(got - want).max(initial=0.0)), agreement)


def measured_rows_per_second(
    predictor: Predictor, frame: pd.DataFrame, repeats: int = SPEED_REPEATS, min_seconds: float = 0.2
) -> float:
    """Rows per second of ``predictor.predict`` on ``frame``: the best of at least ``repeats`` runs.

    Runs go on, up to 100, until they took ``min_seconds`` in all, so that a small sample's figure is
    not one scheduler hiccup.
    """
    best, spent, runs = float("inf"), 0.0, 0
    while runs < repeats or (spent < min_seconds and runs < 100):
        start = time.perf_counter()
        predictor.predict(frame)
        took = time.perf_counter() - start
        best, spent, runs = min(best, took), spent + took, runs + 1
    return len(frame) / max(best, 1e-9)


def quantize_dynamic(graph: Any, dtype: str = "float") -> Quantization:
    """ONNX Runtime's dynamic quantization of a graph: int8 weights, activations quantized per batch.

    It quantizes the float32 weights of MatMul, Gemm and similar ops. Tree ensembles (TreeEnsemble
    ops) and double-precision graphs have none, and come back unchanged, with the reason.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="scoring-quantize-") as work:
        source, target = Path(work, "model.onnx"), Path(work, "quantized.onnx")
        onnx.save_model(graph, source)
        with _quiet_logging():  # ORT logs a pre-processing hint at WARNING on the root logger
            ort_quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        quantized = onnx.load_model(target)
    before = Counter(node.op_type for node in graph.graph.node)
    after = Counter(node.op_type for node in quantized.graph.node)
    if before == after:
        trees = sorted(op for op in before if op.startswith("TreeEnsemble"))
        if trees:
            why = f"tree ensembles ({', '.join(trees)} ops) have no weights to quantize"
        elif dtype == "double":
            why = "the export is double precision and only float32 weights quantize (try --dtype float)"
        else:
            why = "no float32 MatMul/Gemm weights to quantize"
        return Quantization(
            graph, False, f"the quantized graph is unchanged: {why}; the export is used as is"
        )
    replaced = ", ".join(f"{n} {op}" for op, n in sorted((before - after).items()))
    added = ", ".join(f"{n} {op}" for op, n in sorted((after - before).items()))
    size = f"{graph.ByteSize():,} -> {quantized.ByteSize():,} bytes"
    return Quantization(quantized, True, f"int8 weights: replaced {replaced} by {added} ({size})")


@contextmanager
def _quiet_logging() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def save_onnx(graph: Any, path: str | Path) -> Path:
    """Write an ONNX graph to ``path`` and return it."""
    import onnx

    onnx.save_model(graph, str(path))
    return Path(path)


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


def _check_tolerance(parity: Parity, tolerance: float, what: str, source: str) -> None:
    """Refuse a candidate whose difference is above the tolerance, before anything is kept."""
    if parity.within(tolerance):
        return
    figure = "share of differing labels" if parity.measure == "label" else f"max |diff| of {parity.measure}"
    raise ModelError(
        f"{what} of {source} is off by {parity.difference:.3g} ({figure} on {parity.rows:,} rows), "
        f"above --tolerance {tolerance:g}: nothing registered or written"
    )


def _quantization_change(export: Parity, quantized: Parity, speeds: Mapping[str, float]) -> str:
    """One line: the speed and accuracy of the quantized export against the unquantized one."""
    line = (
        f"quantized vs export: speed {speeds['quantized']:,.0f} vs {speeds['onnx']:,.0f} rows/s "
        f"({speeds['quantized'] / speeds['onnx']:.2f}x), "
        f"max |diff| {quantized.difference:.3g} vs {export.difference:.3g}"
    )
    if export.label_agreement is not None and quantized.label_agreement is not None:
        line += f", labels agree on {quantized.label_agreement:.4%} vs {export.label_agreement:.4%}"
    return line
