"""The one scoring path of every dialect: records or columns in, the batch job's checks, the models.

A dialect (``scoring.serve.dialects``) turns its request into records (JSON objects of feature values)
or columns (tensors); ``ScoringService`` checks them with the batch quarantine's row checks
(``scoring.model.rows``), queues the typed features on the dynamic batcher of the model asked for, and
hands back the scores. The server holds every model of its lineup (``scoring.lineup``), each with its
own batcher: the champion, its challengers, and through ``scoring.model.combine`` and
``scoring.model.variants`` (the batch job's very functions) the ensemble and the A/B split. A reload
swaps the whole lineup atomically: a request takes it once (``Roster``), when it starts, and finishes
on it.
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
from typing import Generic, TypeVar

import numpy as np

from scoring.errors import ModelError
from scoring.lineup import CHAMPION, Lineup
from scoring.model.combine import blend, check_lineup, ensemble_column, join_variants, union_features
from scoring.model.output import OutputSpec, Scores
from scoring.model.rows import typed_columns, typed_records
from scoring.model.signature import Feature
from scoring.model.variants import assign_variants
from scoring.serve.batching import Batcher
from scoring.serve.errors import (
    BadRequest,
    InvalidRecords,
    ModelFailed,
    NotConfigured,
    NotFound,
    NotReady,
    TooLarge,
    Unauthorized,
)
from scoring.serve.metrics import Metrics
from scoring.serve.served_model import (
    ServedModel,
    ServeSettings,
    load_served_model,
    member_settings,
    scores_json,
)

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
    """One model serving new requests and its batcher; a request takes it once (``ScoringService.live``).

    Attributes:
        served: The pinned, loaded model.
        batcher: Its dynamic batcher (each model of a lineup has its own).
        name: Its name in the lineup: ``champion`` or the challenger's.
    """

    served: ServedModel
    batcher: Batcher
    name: str = CHAMPION


# The longest model name an error repeats back.
MAX_NAME = 64


@dataclass(frozen=True)
class Roster:
    """Every model of the lineup serving new requests; a request takes it once (``ScoringService.roster``).

    Attributes:
        lineup: The challengers, ensemble weights and A/B split.
        models: Each model by its name in the lineup, the champion first.
        ensemble_features: What an ensemble request's records are checked against: every member's
            features, ranges intersected (``union_features``), as the batch job checks a row.
        ab_features: The same for the A/B split's variants: a record any variant would refuse is refused
            whichever variant its id falls in, so whether it is scored never depends on its id.
    """

    lineup: Lineup
    models: Mapping[str, Live]
    ensemble_features: tuple[Feature, ...] = ()
    ab_features: tuple[Feature, ...] = ()

    @property
    def champion(self) -> Live:
        """The champion and its batcher."""
        return self.models[CHAMPION]

    @property
    def outputs(self) -> dict[str, OutputSpec]:
        """Each model's output shape, by name (what ``scoring.model.combine`` takes)."""
        return {name: live.served.output for name, live in self.models.items()}

    def model(self, name: str) -> Live:
        """The model called ``name`` in the lineup.

        Raises:
            NotFound: No model of the lineup is called ``name``.
        """
        live = self.models.get(name)
        if live is None:
            raise NotFound(f"no model named {name[:MAX_NAME]!r} here (models: {', '.join(self.models)})")
        return live

    def info(self) -> dict:
        """What ``GET /models`` answers: each model pinned, the ensemble's weights and the split."""
        lineup = self.lineup
        column = ensemble_column(self.outputs, lineup)
        return {
            "models": [{"model": name, **live.served.info()} for name, live in self.models.items()],
            "ensemble": {"weights": dict(lineup.ensemble), "column": column.name} if column else None,
            "ab": {"split": dict(lineup.ab), "salt": lineup.ab_salt} if lineup.ab else None,
            "decision_threshold": lineup.decision_threshold,
        }

    def versions(self, names: Sequence[str]) -> str:
        """``name=version,...`` of these models: the access log's model version of a combined answer."""
        return ",".join(f"{name}={self.models[name].served.model.version}" for name in names)


@dataclass(frozen=True)
class Blended:
    """The ensemble's scores of one request's records, and the members' scores it was made of.

    Attributes:
        roster: The lineup that scored them.
        members: Each member's scores, by name.
        blended: ``combine.blend`` of them: one value per record (a row of probabilities, multiclass).
    """

    roster: Roster
    members: Mapping[str, Scored]
    blended: np.ndarray

    @property
    def rows(self) -> int:
        """How many records were scored."""
        return len(self.blended)

    @property
    def column(self) -> str:
        """``ensemble_probability`` (classifiers) or ``ensemble_prediction`` (regressors), as in the batch."""
        return ensemble_column(self.roster.outputs, self.roster.lineup).name

    @property
    def weights(self) -> dict[str, float]:
        """The members' normalised weights."""
        return dict(self.roster.lineup.ensemble)

    def values(self) -> list:
        """The ensemble's values as JSON values."""
        return self.blended.tolist()


@dataclass(frozen=True)
class Routed:
    """The A/B split's scores of one request's records: each scored by its variant's model alone.

    Attributes:
        roster: The lineup that scored them.
        variants: Each record's variant (``scoring.model.variants.assign_variants``).
        scores: Each record's scores from its variant's model (``combine.join_variants``).
    """

    roster: Roster
    variants: np.ndarray
    scores: Scores

    @property
    def rows(self) -> int:
        """How many records were scored."""
        return len(self.variants)

    def values(self) -> tuple[list, list | None]:
        """Predictions and probabilities as JSON values (``check_lineup``: every variant's are alike)."""
        return scores_json(self.scores, self.roster.models[self.variants[0]].served.output)

    def served(self, row: int) -> ServedModel:
        """The model that scored record ``row``."""
        return self.roster.models[self.variants[row]].served


T = TypeVar("T")


class Gathering(Generic[T]):
    """Several models' scores on their way, combined once all are in (the ensemble, the A/B split)."""

    def __init__(self, parts: Mapping[str, Pending], combine: Callable[[dict[str, Scored]], T]) -> None:
        self._parts = parts
        self._combine = combine

    def result(self) -> T:
        """The combined scores, once every model scored its part (blocks: gRPC threads)."""
        return self._combine({name: pending.result() for name, pending in self._parts.items()})

    async def wait(self) -> T:
        """Like ``result``, without blocking the event loop; the models score their parts at once."""
        scored = await asyncio.gather(*(pending.wait() for pending in self._parts.values()))
        return self._combine(dict(zip(self._parts, scored, strict=True)))


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
    """The models being served, their batchers, the metrics, and the checks every request goes through.

    Args:
        settings: What to serve (the champion and its lineup) and the request limits.
        metrics: Where requests and batches are counted (a fresh registry by default).
        loader: Resolves and loads one model, the one ``settings.model_uri`` names (``load_served_model``;
            tests may wrap it); called once per model of the lineup.
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
        self._roster: Roster | None = None
        self._closed = False
        self._draining = False
        self._reload_lock = threading.Lock()
        # Set by a worker of ``scoring serve --workers N``: has the supervisor reload the other workers
        # after ``POST /admin/reload`` reloaded this one.
        self.reload_peers: Callable[[], None] | None = None

    @property
    def ready(self) -> bool:
        """Whether the models are loaded and the service is not shutting down (readiness probes)."""
        return self._roster is not None and not self._draining

    def drain(self) -> None:
        """Report not ready from now on (shutting down), while still answering what comes."""
        self._draining = True

    @property
    def served(self) -> ServedModel:
        """The champion serving new requests (``live().served``)."""
        return self.live().served

    def roster(self) -> Roster:
        """Every model serving new requests, with their batchers.

        A request that combines models (the ensemble, the A/B split) takes this once, so that all its
        models are of one load: a reload in between cannot mix a new champion with an old challenger.

        Raises:
            NotReady: No model is loaded yet.
        """
        roster = self._roster
        if roster is None:
            raise NotReady("no model is loaded yet")
        return roster

    def live(self, name: str = CHAMPION) -> Live:
        """The model ``name`` of the lineup (the champion by default) serving new requests, with its batcher.

        A request that reads the model (its features, to parse its body; its name, to check it) takes
        this once and hands it to ``submit_*``, so that a reload in between cannot parse it for one
        model and score it with another.

        Raises:
            NotReady: No model is loaded yet.
            NotFound: No model of the lineup is called ``name``.
        """
        return self.roster().model(name)

    def load(self) -> dict:
        """Resolve every model reference of the lineup again and serve what they point at now.

        The first call loads the models; later calls (``POST /admin/reload``, SIGHUP) swap to the new
        versions atomically, the lineup as a whole: requests already started finish on the old set. A
        model whose reference did not move keeps its loaded copy and its batcher.

        Returns:
            ``{"reloaded": bool, "from": champion version or None, "to": champion version, "models":
            {name: {"reloaded": bool, "from": version or None, "to": version}}}``; ``reloaded`` is
            whether any model moved.

        Raises:
            ScoringError: A reference cannot be resolved, a model cannot be loaded, or the models loaded
                cannot be combined as the lineup says (``check_lineup``); the models served until now stay.
        """
        with self._reload_lock:
            old = self._roster
            if self._closed:
                raise NotReady("the service is shutting down")
            try:
                roster, fresh = self._load_roster(old)
            except Exception:
                self.metrics.reloads.labels("failed").inc()
                raise
            champion = roster.champion.served
            if old is not None and not fresh:
                self.metrics.reloads.labels("unchanged").inc()
                return _outcome(old, roster, fresh)
            self._roster = roster
            self.metrics.model.info(
                {"name": champion.model.name, "version": champion.model.version, "backend": champion.backend}
            )
            for name, live in roster.models.items():
                model = live.served.model
                self.metrics.lineup_model.labels(name).info(
                    {"name": model.name, "version": model.version, "backend": live.served.backend}
                )
            self.metrics.reloads.labels("loaded" if old is None else "swapped").inc()
        replaced = [old.models[name] for name in fresh] if old is not None else []
        for live in replaced:
            live.batcher.close()
            live.served.discard()
        if self._freeze_gc:
            # Unfrozen first, so that what only the old models held (in reference cycles) is freed.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        for live in replaced:
            log.info(
                "%s %s swapped from version %s to %s",
                live.name,
                live.served.model.name,
                live.served.model.version,
                roster.models[live.name].served.model.version,
            )
        return _outcome(old, roster, fresh)

    def _load_roster(self, old: Roster | None) -> tuple[Roster, list[str]]:
        """Load every model of the lineup; those whose reference did not move stay as they are.

        Returns:
            The new roster and the names of the models loaded afresh (each with a new batcher).
        """
        lineup = self.settings.lineup
        loaded: dict[str, ServedModel] = {}
        fresh: list[str] = []
        try:
            for name in lineup.names:
                served = self._load_one(name)
                previous = old.models[name].served if old is not None else None
                if previous is not None and served.model.fingerprint == previous.model.fingerprint:
                    served.discard()
                    served = previous
                else:
                    fresh.append(name)
                loaded[name] = served
            features = {name: served.features for name, served in loaded.items()}
            union_features(features)  # two models declaring a column with two types: refused, as in the job
            check_lineup(lineup, {name: served.output for name, served in loaded.items()})
            ensemble = union_features({name: features[name] for name, _ in lineup.ensemble})
            ab = union_features({name: features[name] for name, _ in lineup.ab})
        except BaseException:
            for name in fresh:
                loaded[name].discard()
            raise
        models = {}
        for name, served in loaded.items():
            if name in fresh:
                batcher = Batcher(
                    served.predictor.predict,
                    self.settings.batch_rows,
                    self.settings.batch_wait_s,
                    self.metrics.batch_rows.observe,
                )
                models[name] = Live(served, batcher, name)
            else:
                models[name] = old.models[name]
        return Roster(lineup, models, ensemble, ab), fresh

    def _load_one(self, name: str) -> ServedModel:
        try:
            return self._loader(member_settings(self.settings, name))
        except ModelError as e:
            # Named as the batch job names it, so that the one line says which model of the lineup.
            raise (e if name == CHAMPION else ModelError(f"challenger {name!r}: {e}")) from e

    def close(self) -> None:
        """Score what is queued and stop; a reload still loading is discarded when it is done."""
        with self._reload_lock:
            self._closed = True
            roster, self._roster = self._roster, None
        if roster is not None:
            for live in roster.models.values():
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

    def submit_ensemble(
        self, records: Sequence[Mapping[str, object]], roster: Roster | None = None
    ) -> Gathering[Blended]:
        """Check records once against every member's features and queue them on each member's batcher.

        The answer is ``combine.blend`` of the members' scores: the batch job's ensemble column.

        Raises:
            NotConfigured: The server has no ensemble.
            TooLarge: More records than ``max_records``.
            InvalidRecords: A record fails a member's row checks; nothing is scored.
        """
        roster = self._combining_roster(
            roster,
            lambda lineup: lineup.ensemble,
            "this server has no ensemble: start it with --ensemble NAME=WEIGHT,... (or a models file's)",
            len(records),
        )
        lineup = roster.lineup
        columns = _checked_records(records, roster.ensemble_features)
        parts = {name: _queue(roster.models[name], columns) for name, _ in lineup.ensemble}

        def combine(scored: dict[str, Scored]) -> Blended:
            scores = {name: part.scores for name, part in scored.items()}
            return Blended(roster, scored, blend(lineup, roster.outputs, scores))

        return Gathering(parts, combine)

    def submit_ab(
        self, records: Sequence[Mapping[str, object]], keys: Sequence[str], roster: Roster | None = None
    ) -> Gathering[Routed]:
        """Assign each record its A/B variant from its id and queue it on that variant's model alone.

        Args:
            records: The records' features.
            keys: Each record's ``scoring.model.variants.variant_key`` (its id columns' values).
            roster: The lineup the request took (``roster()``); by default the one serving now.

        Raises:
            NotConfigured: The server has no A/B split.
            TooLarge: More records than ``max_records``.
            InvalidRecords: A record fails a variant's row checks; nothing is scored.
        """
        roster = self._combining_roster(
            roster,
            lambda lineup: lineup.ab,
            "this server has no A/B split: start it with --ab NAME=SHARE,... --ab-salt SALT "
            "(or a models file's ab)",
            len(records),
        )
        lineup = roster.lineup
        if len(keys) != len(records):
            raise ValueError(f"{len(keys)} id keys for {len(records)} records")
        columns = _checked_records(records, roster.ab_features)
        variants = assign_variants(keys, lineup.ab, str(lineup.ab_salt))
        parts = {}
        for name in dict.fromkeys(variants.tolist()):
            parts[name] = _queue(roster.models[name], columns, np.flatnonzero(variants == name))

        def combine(scored: dict[str, Scored]) -> Routed:
            return Routed(roster, variants, join_variants(variants, {n: s.scores for n, s in scored.items()}))

        return Gathering(parts, combine)

    def _combining_roster(
        self,
        roster: Roster | None,
        combined: Callable[[Lineup], Sequence[tuple[str, float]]],
        refusal: str,
        rows: int,
    ) -> Roster:
        """The lineup a request that combines models takes, once it has that combination and the rows fit.

        Args:
            roster: The lineup the request took (``roster()``); by default the one serving now.
            combined: The lineup's pairs the request combines (its ensemble's or its A/B split's).
            refusal: The message when the lineup has none of them.
            rows: How many records the request holds.

        Raises:
            NotConfigured: The lineup has no such combination.
            BadRequest: No records.
            TooLarge: More records than ``max_records``.
        """
        roster = roster or self.roster()
        if not combined(roster.lineup):
            raise NotConfigured(refusal)
        self._count_rows(rows)
        return roster

    def _count_rows(self, rows: int) -> None:
        if rows == 0:
            raise BadRequest("no records to score")
        if rows > self.settings.max_records:
            raise TooLarge(f"{rows} records in one request; at most {self.settings.max_records}")

    def _take(self, rows: int, live: Live | None) -> Live:
        self._count_rows(rows)
        return live or self.live()

    def _submit(self, live: Live, columns: dict[str, np.ndarray], problems: list) -> Pending:
        if problems:
            raise InvalidRecords(problems)
        return Pending(live.served, live.batcher.submit(columns))


def _checked_records(
    records: Sequence[Mapping[str, object]], features: Sequence[Feature]
) -> dict[str, np.ndarray]:
    """Records as typed columns of ``features``, checked as the batch job checks a row.

    Raises:
        InvalidRecords: A record fails the row checks; nothing is scored.
    """
    columns, problems = typed_records(records, features)
    if problems:
        raise InvalidRecords(problems)
    return columns


def _queue(live: Live, columns: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> Pending:
    """Queue one model's features (in its order) of checked columns, or of the records ``rows``."""
    own = {f.name: columns[f.name] if rows is None else columns[f.name][rows] for f in live.served.features}
    return Pending(live.served, live.batcher.submit(own))


def _outcome(old: Roster | None, new: Roster, fresh: Sequence[str]) -> dict:
    def version(roster: Roster | None, name: str) -> str | None:
        return None if roster is None else roster.models[name].served.model.version

    return {
        "reloaded": bool(fresh),
        "from": version(old, CHAMPION),
        "to": version(new, CHAMPION),
        "models": {
            name: {"reloaded": name in fresh, "from": version(old, name), "to": version(new, name)}
            for name in new.models
        },
    }
