"""The ``raw`` way: pyarrow and ONNX Runtime in one process, no Spark.

Reads the date's files batch by batch, scores each batch and writes one parquet file per input file
with the id, the prediction and the probability: the least a process can do for the same output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import data
from bench.ways import ort

BATCH_ROWS = 10_000


def run(input_root: Path, output: Path, model_path: str, provider: str = "cpu") -> None:
    """Score the date's partition of ``input_root`` into ``output``.

    Args:
        input_root: Root of the hive-partitioned input.
        output: A directory to create.
        model_path: The ONNX model.
        provider: ``cpu`` (one intra-op thread) or ``cuda``.
    """
    model = ort.session(model_path, provider, threads=1)
    output.mkdir(parents=True)
    schema = pa.schema(
        [(data.ID_COLUMN, pa.int64()), ("prediction", pa.float64()), ("probability", pa.float64())]
    )
    for k, path in enumerate(sorted(data.partition_dir(input_root).glob("*.parquet"))):
        with pq.ParquetWriter(output / f"part-{k:05d}.parquet", schema) as writer:
            columns = [data.ID_COLUMN, *data.FEATURES]
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                x = np.column_stack([batch.column(name).to_numpy() for name in data.FEATURES])
                label, probability = ort.predict(model, x)
                arrays = [batch.column(data.ID_COLUMN), pa.array(label), pa.array(probability)]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
