"""Benchmarks of batch scoring ways, each measured as a whole process (``python -m bench``).

- ``bench.run``: the command: data, model, rounds of measurements, ``results.json`` and the tables.
- ``bench.data``: the synthetic dataset (cached per size) and counting the rows a way wrote.
- ``bench.model``: training, ONNX export and registration of the benchmark's models.
- ``bench.measure``: one way as a subprocess: wall time and peak memory of its process tree.
- ``bench.stats``: medians and what is derived from them (B, fixed and per-row cost).
- ``bench.report``: the Markdown tables.
- ``bench.ways``: what each way runs; ``python -m bench.ways WAY ...`` is one way's process.
  ``ours_table`` is the job publishing to an Iceberg table (a fresh SQLite catalog per run) instead of
  a directory, its rows verified from the table. The peers (issue 33): ``raw2`` (``raw`` in one process
  per core), ``daft`` and ``daft_sklearn`` (``bench.ways.daft_ways``), ``ray_data``
  (``bench.ways.ray_ways``); Daft and Ray come from setup.py's ``bench`` extra.
- ``bench.publish_s3``: ``python -m bench.publish_s3``, the publish step alone on S3 (moto, in
  process): a directory's journaled swap against a table's commit, on the same staged files; seconds,
  objects and bytes copied, requests.

Not part of the ``scoring`` package: it imports ``scoring`` only as its users do.
"""
