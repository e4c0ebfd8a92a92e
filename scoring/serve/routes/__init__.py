"""The HTTP routes: one router per dialect over the one ``ScoringService``, wired by ``scoring.serve.http``.

- ``original``: the project's own API (``/health``, ``/ready``, ``/predict...``, ``/models...``);
- ``mlflow_protocol``: MLflow's scoring server (``/invocations``, ``/ping``, ``/version``);
- ``open_inference``: the Open Inference Protocol v2 (``/v2/...``), JSON and binary tensors;
- ``operations``: ``/metrics`` and ``/admin/reload``.

A route only decodes its body, calls its dialect's parser (``scoring.serve.dialects``,
``scoring.serve.oip``) and the service, and encodes the answer (``scoring.serve.routes.common``); the
request checks, the batching and the output convention live below them.
"""
