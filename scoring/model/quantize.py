"""``--quantize``: ONNX Runtime's dynamic quantization of an export (int8 weights), and what it changed."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoring.model.parity import Parity


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


def quantization_change(export: Parity, quantized: Parity, speeds: Mapping[str, float]) -> str:
    """One line: the speed and accuracy of the quantized export against the unquantized one."""
    line = (
        f"quantized vs export: speed {speeds['quantized']:,.0f} vs {speeds['onnx']:,.0f} rows/s "
        f"({speeds['quantized'] / speeds['onnx']:.2f}x), "
        f"max |diff| {quantized.difference:.3g} vs {export.difference:.3g}"
    )
    if export.label_agreement is not None and quantized.label_agreement is not None:
        line += f", labels agree on {quantized.label_agreement:.4%} vs {export.label_agreement:.4%}"
    return line
