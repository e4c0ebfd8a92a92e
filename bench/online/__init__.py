"""The online benchmark (``python -m bench.online``): ours with 1 and 2 workers, and ``mlflow models serve``.

- ``bench.online.run``: the command: the models, the servers one at a time, the loads, ``results.json``.
- ``bench.online.servers``: each server as a subprocess on 127.0.0.1: started, waited for, its CPU
  time read, stopped with SIGTERM.
- ``bench.online.load``: the Python load generator: open loop at a fixed rate (the latency loads),
  closed loop at N clients (the warm-up, and the fallback), over HTTP (aiohttp) or gRPC (``grpc.aio``).
- ``bench.online.generators``: the C load generators: wrk (HTTP) and h2load (gRPC, and the burst).
- ``bench.online.bodies``: the request bodies, encoded once, and the files the C generators read.
- ``bench.online.pipeline``: the scikit-learn pipeline logged the ordinary way, the second model.
- ``bench.online.report``: the Markdown section of BENCHMARKS.md, the goals of issue 32 judged in it.

The first model is the batch benchmark's (``bench.model``). Not part of the ``scoring`` package: it
starts ``scoring serve`` as its users do.
"""
