"""Benchmarks of batch scoring ways, each measured as a whole process (``python -m bench``).

- ``bench.run``: the command: data, model, rounds of measurements, ``results.json`` and the tables.
- ``bench.data``: the synthetic dataset (cached per size) and counting the rows a way wrote.
- ``bench.model``: training, ONNX export and registration of the benchmark's models.
- ``bench.measure``: one way as a subprocess: wall time and peak memory of its process tree.
- ``bench.stats``: medians and what is derived from them (B, fixed and per-row cost).
- ``bench.report``: the Markdown tables.
- ``bench.ways``: what each way runs; ``python -m bench.ways WAY ...`` is one way's process.

Not part of the ``scoring`` package: it imports ``scoring`` only as its users do.
"""
