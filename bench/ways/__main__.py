"""``python -m bench.ways WAY --input ROOT --output DIR ...``: one way's whole process.

Exit codes: 0 when the way wrote its output, 3 when the ONNX Runtime provider asked for is missing,
anything else when it failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the way named on the command line and return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.ways")
    parser.add_argument(
        "way",
        choices=(
            "floor",
            "raw",
            "raw2",
            "zeros",
            "plain",
            "predict_batch_udf",
            "spark_udf",
            "row_udf",
            "daft",
            "daft_sklearn",
            "ray_data",
        ),
    )
    parser.add_argument("--input", required=True, type=Path, help="root of the hive-partitioned input")
    parser.add_argument("--output", required=True, type=Path, help="a directory to create")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    parser.add_argument("--model", help="ONNX model file")
    parser.add_argument("--model-uri", help="MLflow model URI (spark_udf, daft_sklearn)")
    parser.add_argument(
        "--provider", default="cpu", choices=("cpu", "cuda"), help="ONNX Runtime provider (raw)"
    )
    args = parser.parse_args(argv)

    if args.way == "raw":
        from bench.ways import ort, raw

        try:
            raw.run(args.input, args.output, args.model, args.provider)
        except ort.ProviderMissing as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        return 0
    if args.way == "raw2":
        from bench.ways import raw

        raw.run_split(args.input, args.output, args.model)
        return 0
    if args.way in ("daft", "daft_sklearn"):
        from bench.ways import daft_ways

        if args.way == "daft":
            daft_ways.daft_onnx(args.input, args.output, args.model)
        else:
            daft_ways.daft_sklearn(args.input, args.output, args.model_uri)
        return 0
    if args.way == "ray_data":
        from bench.ways import ray_ways

        ray_ways.ray_data(args.input, args.output, args.model)
        return 0
    from bench.ways import spark_ways

    run = getattr(spark_ways, args.way)
    if args.way in ("floor", "zeros"):
        run(args.input, args.output, args.master)
    elif args.way == "spark_udf":
        run(args.input, args.output, args.master, args.model_uri)
    else:
        run(args.input, args.output, args.master, args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
