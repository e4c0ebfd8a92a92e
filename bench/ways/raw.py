"""The ``raw`` and ``raw2`` ways: pyarrow and ONNX Runtime, no engine.

``raw`` reads the date's files in one process, batch by batch, scores each batch and writes one parquet
file per input file with the id, the prediction and the probability: the least a process can do for the
same output. ``raw2`` is the same code in as many processes as cores (``os.cpu_count()``), each process
taking its share of the files (every N-th, so half each on 2 cores): the floor that any engine on this
machine is measured against.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import data
from bench.ways import ort

BATCH_ROWS = 10_000


def _schema() -> pa.Schema:
    return pa.schema(
        [(data.ID_COLUMN, pa.int64()), ("prediction", pa.float64()), ("probability", pa.float64())]
    )


def _files(input_root: Path) -> list[Path]:
    return sorted(data.partition_dir(input_root).glob("*.parquet"))


def score_file(model, path: Path, destination: Path) -> int:
    """Score one input file batch by batch into ``destination``; the rows written."""
    schema = _schema()
    rows = 0
    with pq.ParquetWriter(destination, schema) as writer:
        columns = [data.ID_COLUMN, *data.FEATURES]
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
            x = np.column_stack([batch.column(name).to_numpy() for name in data.FEATURES])
            label, probability = ort.predict(model, x)
            arrays = [batch.column(data.ID_COLUMN), pa.array(label), pa.array(probability)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            rows += batch.num_rows
    return rows


def run(input_root: Path, output: Path, model_path: str, provider: str = "cpu") -> None:
    """Score the date's partition of ``input_root`` into ``output``, in this process.

    Args:
        input_root: Root of the hive-partitioned input.
        output: A directory to create.
        model_path: The ONNX model.
        provider: ``cpu`` (one intra-op thread) or ``cuda``.
    """
    model = ort.session(model_path, provider, threads=1)
    output.mkdir(parents=True)
    for k, path in enumerate(_files(input_root)):
        score_file(model, path, output / f"part-{k:05d}.parquet")


def _share(files: list[tuple[int, Path]], output: Path, model_path: str) -> int:
    """One ``raw2`` process: its own session (one thread), its files scored one after the other."""
    model = ort.session(model_path, "cpu", threads=1)
    return sum(score_file(model, path, output / f"part-{k:05d}.parquet") for k, path in files)


def run_split(input_root: Path, output: Path, model_path: str, processes: int | None = None) -> int:
    """``raw2``: ``run``'s code in ``processes`` processes (default: one per core), every N-th file each.

    The processes are forked before any session exists (each makes its own), so they start without
    importing anything again. Returns the rows written.

    Args:
        input_root: Root of the hive-partitioned input.
        output: A directory to create.
        model_path: The ONNX model.
        processes: How many processes; ``os.cpu_count()`` when None, never more than the files.
    """
    files = list(enumerate(_files(input_root)))
    n = max(1, min(processes or os.cpu_count() or 1, len(files)))
    output.mkdir(parents=True)
    shares = [files[i::n] for i in range(n)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=n, mp_context=context) as pool:
        return sum(pool.map(_share, shares, [output] * n, [model_path] * n))
