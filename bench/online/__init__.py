"""The online benchmark (``python -m bench.online``): our server and ``mlflow models serve`` under load.

- ``bench.online.run``: the command: the model, the servers one at a time, the loads, ``results.json``.
- ``bench.online.servers``: each server as a subprocess on 127.0.0.1: started, waited for, its CPU
  time read, stopped with SIGTERM.
- ``bench.online.load``: the load generator: open loop at a fixed rate, closed loop at N clients, over
  HTTP (aiohttp) or gRPC (the sync stub or ``grpc.aio``), bounded in requests and in time.
- ``bench.online.bodies``: the request bodies, encoded once.
- ``bench.online.report``: the Markdown section of BENCHMARKS.md.

The model is the batch benchmark's (``bench.model``). Not part of the ``scoring`` package: it starts
``scoring serve`` as its users do.
"""
