"""The service's Prometheus metrics and its access log.

The metrics live in a registry of their own (``GET /metrics`` renders it); the access log is one JSON
line per request, HTTP and gRPC alike, that never holds a feature value.
"""

from __future__ import annotations

import json
import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Request latency buckets, in seconds: the service aims at single milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

access_log = logging.getLogger("scoring.serve.access")


class Metrics:
    """Requests by protocol, route and status, their latency, model-call batch sizes and the models."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.model = Info("scoring_model", "The model version being served", registry=self.registry)
        self.lineup_model = Info(
            "scoring_lineup_model", "Each model of the lineup being served, by its name in the lineup",
            ["model"], registry=self.registry,
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
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
