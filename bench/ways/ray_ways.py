"""The Ray Data peer (issue 33): ``read_parquet`` -> ``map_batches`` on an actor pool -> ``write_parquet``.

A local Ray (``ray.init(num_cpus=os.cpu_count())``, no dashboard) in the way's process. The callable
class holds the ONNX Runtime session (one intra-op thread), made once per actor, in a pool of as many
actors as cores (``ActorPoolStrategy(size=N)``), each asking for half a CPU: with a whole CPU each, two
actors take both CPUs of a 2-core machine and the read tasks never schedule (the run stalls).
One block per input file (Ray's V1 Parquet reader: see ``ray_data``), batches of 10,000 rows as
pyarrow tables. Writes the id, the prediction and the probability, as
``raw`` does. Ray comes from the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench import data

BATCH_ROWS = 10_000
ACTORS = os.cpu_count() or 1
# CPUs each actor asks for: fractional, so the actors leave CPUs to the read and write tasks.
ACTOR_CPUS = 0.5


class OnnxScorer:
    """The ONNX Runtime session, made once per actor; a pyarrow batch in, id and scores out."""

    def __init__(self, model_path: str):
        from bench.ways import ort

        self.model = ort.session(model_path, "cpu", threads=1)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Scores of one batch."""
        from bench.ways import ort

        x = np.column_stack([batch.column(name).to_numpy() for name in data.FEATURES])
        label, probability = ort.predict(self.model, x.astype(np.float32, copy=False))
        return pa.table(
            {data.ID_COLUMN: batch.column(data.ID_COLUMN), "prediction": label, "probability": probability}
        )


def ray_data(input_root: Path, output: Path, model_path: str) -> None:
    """Score the date's files with Ray Data into ``output``."""
    import ray
    import ray.data

    ray.init(num_cpus=ACTORS, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        # Ray 2.60's default Parquet reader (datasource V2) bin-packs row groups into read units of up
        # to 128 MiB and ignores override_num_blocks: 1M rows were one block, scored by one actor
        # while the other idled. The V1 reader honours one block per file.
        context.use_datasource_v2 = False
        files = [str(p) for p in sorted(data.partition_dir(input_root).glob("*.parquet"))]
        dataset = ray.data.read_parquet(
            files, columns=[data.ID_COLUMN, *data.FEATURES], override_num_blocks=len(files)
        )
        scored = dataset.map_batches(
            OnnxScorer,
            fn_constructor_args=(model_path,),
            batch_size=BATCH_ROWS,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=ACTORS),
            num_cpus=ACTOR_CPUS,
        )
        scored.write_parquet(str(output))
    finally:
        ray.shutdown()
