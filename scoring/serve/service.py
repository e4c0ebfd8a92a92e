"""The one scoring path of every dialect: records or columns in, the batch job's checks, the model.

A dialect (``scoring.serve.dialects``) turns its request into records (JSON objects of feature values)
or columns (tensors); ``ScoringService`` checks them with the batch quarantine's row checks
(``scoring.model.rows``), queues the typed features on the dynamic batcher of the model being served,
and hands back the scores. A reload swaps the model atomically: a request takes the live model once,
when it starts, and finishes on it.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from scoring.model.output import Scores
from scoring.model.rows import typed_columns, typed_records
from scoring.serve.batching import Batcher
from scoring.serve.errors import BadRequest, InvalidRecords, ModelFailed, NotReady, TooLarge, Unauthorized
from scoring.serve.metrics import Metrics
from scoring.serve.served_model import ServedModel, ServeSettings, load_served_model, scores_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """The scores of one request's records, and the model that gave them."""

    served: ServedModel
    scores: Scores

    @property
    def rows(self) -> int:
        """How many records were scored."""
        return len(self.scores.prediction)

    def values(self) -> tuple[list, list | None]:
        """Predictions and probabilities as JSON values (probabilities None for regressors)."""
        return scores_json(self.scores, self.served.output)


@dataclass(frozen=True)
class Live:
    """The model serving new requests and its batcher; a request takes it once (``ScoringService.live``)."""

    served: ServedModel
    batcher: Batcher


class Pending:
    """Scores on their way: ``result()`` blocks (gRPC threads), ``await pending.wait()`` does not."""

    def __init__(self, served: ServedModel, future: Future) -> None:
        self._served = served
        self._future = future

    def result(self) -> Scored:
        """The scores, once the batch that holds them is scored.

        Raises:
            ModelFailed: The model raised; the error is logged here, without the input.
        """
        return self._scored(self._future.exception() or self._future.result())

    async def wait(self) -> Scored:
        """Like ``result``, without blocking the event loop."""
        try:
            scores = await asyncio.wrap_future(self._future)
        except Exception as e:
            return self._scored(e)
        return self._scored(scores)

    def _scored(self, outcome: Scores | BaseException) -> Scored:
        if isinstance(outcome, BaseException):
            log.error(
                "model %s failed to score a batch: %s", self._served.model.pinned_uri, type(outcome).__name__
            )
            raise ModelFailed(
                f"the model failed to score the records ({type(outcome).__name__})"
            ) from outcome
        return Scored(self._served, outcome)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request presents: ``x-api-key: KEY`` or ``authorization: Bearer KEY``.

    Args:
        headers: HTTP headers or gRPC metadata, by lower-case name.
    """
    key = headers.get("x-api-key")
    if key is None:
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    return key if isinstance(key, str) else None


class ScoringService:
    """The model being served, its batcher, its metrics, and the checks every request goes through.

    Args:
        settings: What to serve and the request limits.
        metrics: Where requests and batches are counted (a fresh registry by default).
        loader: Resolves and loads the model (``load_served_model``; tests may wrap it).
        freeze_gc: After each load, move every object alive to the collector's permanent generation
            (``gc.freeze``), as a server process should: MLflow, pandas and the model are hundreds
            of thousands of objects that never die, and a full collection over them (about 125 ms
            here) stalls every request in flight.
    """

    def __init__(
        self,
        settings: ServeSettings,
        metrics: Metrics | None = None,
        loader: Callable[[ServeSettings], ServedModel] = load_served_model,
        freeze_gc: bool = False,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._loader = loader
        self._freeze_gc = freeze_gc
        self._live: Live | None = None
        self._closed = False
        self._draining = False
        self._reload_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether a model is loaded and the service is not shutting down (readiness probes)."""
        return self._live is not None and not self._draining

    def drain(self) -> None:
        """Report not ready from now on (shutting down), while still answering what comes."""
        self._draining = True

    @property
    def served(self) -> ServedModel:
        """The model serving new requests (``live().served``)."""
        return self.live().served

    def live(self) -> Live:
        """The model serving new requests, with its batcher.

        A request that reads the model (its features, to parse its body; its name, to check it) takes
        this once and hands it to ``submit_*``, so that a reload in between cannot parse it for one
        model and score it with another.

        Raises:
            NotReady: No model is loaded yet.
        """
        live = self._live
        if live is None:
            raise NotReady("no model is loaded yet")
        return live

    def load(self) -> dict:
        """Resolve the model reference again and serve what it points at now.

        The first call loads the model; later calls (``POST /admin/reload``, SIGHUP) swap to the new
        version atomically when the reference moved: requests already started finish on the old one.

        Returns:
            ``{"reloaded": bool, "from": version or None, "to": version}``.

        Raises:
            ScoringError: The reference cannot be resolved or the model cannot be loaded; the model
                served until now stays.
        """
        with self._reload_lock:
            old = self._live
            if self._closed:
                raise NotReady("the service is shutting down")
            try:
                served = self._loader(self.settings)
            except Exception:
                self.metrics.reloads.labels("failed").inc()
                raise
            if old is not None and served.model.fingerprint == old.served.model.fingerprint:
                served.discard()
                self.metrics.reloads.labels("unchanged").inc()
                return {"reloaded": False, "from": old.served.model.version, "to": old.served.model.version}
            batcher = Batcher(
                served.predictor.predict,
                self.settings.batch_rows,
                self.settings.batch_wait_s,
                self.metrics.batch_rows.observe,
            )
            self._live = Live(served, batcher)
            self.metrics.model.info(
                {"name": served.model.name, "version": served.model.version, "backend": served.backend}
            )
            self.metrics.reloads.labels("loaded" if old is None else "swapped").inc()
        previous = None
        if old is not None:
            previous = old.served.model.version
            old.batcher.close()
            old.served.discard()
        if self._freeze_gc:
            # Unfrozen first, so that what only the old model held (in reference cycles) is freed.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        if old is not None:
            log.info(
                "model %s swapped from version %s to %s", served.model.name, previous, served.model.version
            )
        return {"reloaded": True, "from": previous, "to": served.model.version}

    def close(self) -> None:
        """Score what is queued and stop; a reload still loading is discarded when it is done."""
        with self._reload_lock:
            self._closed = True
            live, self._live = self._live, None
        if live is not None:
            live.batcher.close()
            live.served.discard()

    def authorize(self, presented: str | None) -> None:
        """Check the API key, in constant time; no key configured means every request passes.

        Raises:
            Unauthorized: A key is configured and ``presented`` is not it.
        """
        expected = self.settings.api_key
        if not expected:
            return
        if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
            raise Unauthorized("missing or wrong API key")

    def submit_records(self, records: Sequence[Mapping[str, object]], live: Live | None = None) -> Pending:
        """Check JSON-like records (feature name -> value) and queue them to be scored.

        Args:
            records: The records.
            live: The model the request took (``live()``); by default the one serving now.

        Raises:
            TooLarge: More records than ``max_records``.
            InvalidRecords: A record fails the batch job's row checks; nothing is scored.
        """
        live = self._take(len(records), live)
        columns, problems = typed_records(records, live.served.features)
        return self._submit(live, columns, problems)

    def submit_columns(
        self, columns: Mapping[str, Sequence[object] | np.ndarray], rows: int, live: Live | None = None
    ) -> Pending:
        """Like ``submit_records``, for values given feature by feature (tensors, column-split frames)."""
        live = self._take(rows, live)
        typed, problems = typed_columns(columns, live.served.features, rows)
        return self._submit(live, typed, problems)

    def _take(self, rows: int, live: Live | None) -> Live:
        if rows == 0:
            raise BadRequest("no records to score")
        if rows > self.settings.max_records:
            raise TooLarge(f"{rows} records in one request; at most {self.settings.max_records}")
        return live or self.live()

    def _submit(self, live: Live, columns: dict[str, np.ndarray], problems: list) -> Pending:
        if problems:
            raise InvalidRecords(problems)
        return Pending(live.served, live.batcher.submit(columns))
