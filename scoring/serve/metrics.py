"""The service's Prometheus metrics and its access log.

The metrics live in a registry of their own (``GET /metrics`` renders it); the access log is one JSON
line per request, HTTP and gRPC alike, that never holds a feature value.

Under ``scoring serve --workers N`` every worker counts into files of prometheus-client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor before the workers start), and whichever worker
answers ``GET /metrics`` renders the sum of them all: counters and histograms add up over the workers,
dead ones included, and the model gauges keep one sample per live worker (a ``pid`` label).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

# prometheus-client's switch to its multiprocess mode: a directory every process of the server writes.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# Request latency buckets, in seconds: the service aims at single milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

access_log = logging.getLogger("scoring.serve.access")


class Metrics:
    """Requests by protocol, route and status, their latency, model-call batch sizes and the models."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Read once: prometheus-client itself chose its mode when it was imported, from the same variable.
        self._multiprocess_dir = os.environ.get(MULTIPROC_DIR_VARIABLE) or None
        self.requests = Counter(
            "scoring_requests",
            "Requests answered, by protocol, route and status",
            ["protocol", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "scoring_request_seconds",
            "Time to answer a request, by protocol and route",
            ["protocol", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.records = Counter(
            "scoring_records_scored", "Records scored, by protocol", ["protocol"], registry=self.registry
        )
        self.batch_rows = Histogram(
            "scoring_batch_rows", "Rows per model call (dynamic batching)", buckets=BATCH_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.model = ModelGauge(
            "scoring_model_info", "The model version being served", self.registry, self._multiprocess_dir
        )
        self.lineup_model = ModelGauge(
            "scoring_lineup_model_info", "Each model of the lineup being served, by its name in the lineup",
            self.registry, self._multiprocess_dir, ["model"],
        )  # fmt: skip
        self.reloads = Counter(
            "scoring_reloads", "Model reloads, by outcome", ["outcome"], registry=self.registry
        )

    def observe(
        self,
        protocol: str,
        route: str,
        status: str | int,
        seconds: float,
        records: int | None = None,
        model_version: str | None = None,
    ) -> None:
        """Count one answered request and write its access-log line.

        Args:
            protocol: ``http`` or ``grpc``.
            route: The route template (``/v2/models/{name}/infer``) or the gRPC method.
            status: The HTTP status or the gRPC status code's name.
            seconds: Time to answer.
            records: Records scored, when the request scored any.
            model_version: The version that scored them.
        """
        self.requests.labels(protocol, route, str(status)).inc()
        self.latency.labels(protocol, route).observe(seconds)
        if access_log.isEnabledFor(logging.INFO):
            line = {"protocol": protocol, "route": route, "status": status, "ms": round(seconds * 1000, 3)}
            if records is not None:
                line |= {"records": records, "model_version": model_version}
            access_log.info(json.dumps(line))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type: of every worker's files in multiprocess mode."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        registry.register(WorkersCollector(self._multiprocess_dir))
        return generate_latest(registry), CONTENT_TYPE_LATEST


class ModelGauge:
    """Which model each process serves: a gauge of 1 labelled with its name, version and backend.

    It stands where a Prometheus ``Info`` stood (same sample name, same labels, value 1), because
    prometheus-client's multiprocess mode has no ``Info``. Under ``--workers N`` each live worker has its
    own sample (``multiprocess_mode="liveall"`` adds a ``pid`` label), so ``/metrics`` shows which version
    every worker serves, for instance in the middle of a reload.

    Args:
        name: The metric's name (``..._info``, as the ``Info`` it replaces exposed it).
        documentation: Its help text.
        registry: The registry it belongs to.
        multiprocess_dir: prometheus-client's multiprocess directory, or None in a single process.
        labelnames: Labels before the model's own (``model``: the name in the lineup).
    """

    FIELDS = ("name", "version", "backend")

    def __init__(
        self,
        name: str,
        documentation: str,
        registry: CollectorRegistry,
        multiprocess_dir: str | None,
        labelnames: tuple[str, ...] | list[str] = (),
    ) -> None:
        self._gauge = Gauge(
            name, documentation, [*labelnames, *self.FIELDS], registry=registry, multiprocess_mode="liveall"
        )
        self._multiprocess = multiprocess_dir is not None
        self._serving: dict[tuple[str, ...], tuple[str, ...]] = {}  # the model set to 1, by leading labels
        self._lock = threading.Lock()

    def labels(self, *values: str) -> ModelGaugeChild:
        """The gauge for these leading label values (``model``), as ``Info.labels`` gave one."""
        return ModelGaugeChild(self, tuple(str(v) for v in values))

    def info(self, fields: Mapping[str, str]) -> None:
        """Say that this process now serves the model ``fields`` name (``name``, ``version``, ``backend``)."""
        self.serve((), fields)

    def serve(self, leading: tuple[str, ...], fields: Mapping[str, str]) -> None:
        """Set the model served under the leading label values ``leading`` to 1, the one before to 0."""
        model = tuple(str(fields[f]) for f in self.FIELDS)
        with self._lock:
            previous = self._serving.get(leading)
            if previous == model:
                return
            if previous is not None:
                # In multiprocess mode the previous sample stays in this worker's file (prometheus-client
                # cannot remove one there): 0 marks it, and ``WorkersCollector`` leaves it out.
                self._gauge.labels(*leading, *previous).set(0)
                if not self._multiprocess:
                    self._gauge.remove(*leading, *previous)
            self._gauge.labels(*leading, *model).set(1)
            self._serving[leading] = model


class ModelGaugeChild:
    """``ModelGauge`` for one set of leading label values: ``info(fields)`` as ``Info``'s child had."""

    def __init__(self, parent: ModelGauge, leading: tuple[str, ...]) -> None:
        self._parent = parent
        self._leading = leading

    def info(self, fields: Mapping[str, str]) -> None:
        """Say that this process now serves the model ``fields`` names, under these label values."""
        self._parent.serve(self._leading, fields)


# The gauges whose 0 samples are models a worker served before a reload, not models it serves.
MODEL_GAUGES = frozenset({"scoring_model_info", "scoring_lineup_model_info"})


class WorkersCollector:
    """Every worker's metrics, from prometheus-client's multiprocess files, without stale model samples.

    Args:
        path: The multiprocess directory.
    """

    def __init__(self, path: str) -> None:
        self._files = MultiProcessCollector(None, path)

    def collect(self) -> Iterator[Metric]:
        """The merged metrics; a model gauge keeps only the models served now (value 1)."""
        for metric in self._files.collect():
            if metric.name in MODEL_GAUGES:
                metric.samples = [sample for sample in metric.samples if sample.value != 0]
            yield metric
