"""The gRPC side of the service: ``scoring.v1.PredictionService``, the Open Inference Protocol, health.

Three services on one ``grpc.server``, over the same ``ScoringService`` as HTTP:

* ``scoring.v1.PredictionService`` (``Predict``, ``PredictBatch``): the original API, records of
  ``FeatureValue`` (a oneof; unset is null) in, ``prediction``, ``probability`` (binary) or
  ``class_probabilities`` (multiclass) and the model out; the request's ``model`` names the lineup's
  model (the champion when empty). ``PredictEnsemble`` and ``PredictAB`` are ``POST
  /predict/ensemble/batch`` and ``POST /predict/ab/batch``.
* ``inference.GRPCInferenceService``: the Open Inference Protocol v2, as KServe and Triton define it, so
  ``tritonclient.grpc`` talks to it unchanged. Input tensors come as typed ``contents`` or as
  ``raw_input_contents``; answers are always ``raw_output_contents``, which is what tritonclient's
  ``as_numpy`` reads.
* ``grpc.health.v1.Health``: ``SERVING`` for ``""`` and both services while a model is loaded.

One server interceptor (``_Observed``) times and counts every unary RPC and turns what a servicer raises
into the RPC's status: a ``RequestError`` into its ``grpc_code`` with its message (which names fields and
reasons, never values), anything else into ``INTERNAL`` with a generic message, logged without the input.
A message over ``max_body_bytes`` is refused by grpc itself with ``RESOURCE_EXHAUSTED`` before any
servicer runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from typing import TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from scoring.serve import oip
from scoring.serve.dialects import (
    ab_predictions,
    ensemble_predictions,
    model_fields,
    original_predictions,
    variant_keys,
)
from scoring.serve.errors import BadRequest, RequestError, malformed_is_bad_request
from scoring.serve.pb import inference_pb2, inference_pb2_grpc, prediction_pb2, prediction_pb2_grpc
from scoring.serve.service import (
    Blended,
    Gathering,
    Pending,
    Roster,
    Routed,
    Scored,
    ScoringService,
    presented_key,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

PREDICTION_SERVICE = prediction_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name
INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# What the health service answers for: the server as a whole ("") and each service by name.
HEALTH_NAMES = ("", PREDICTION_SERVICE, INFERENCE_SERVICE)
PROTOCOL = "grpc"
# The generic answer to an unexpected error: its message could hold request values.
INTERNAL_MESSAGE = "internal error while scoring the request"

# The field of InferTensorContents that carries each datatype, and the numpy type that field holds.
_CONTENTS = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", np.object_),
}


def start_grpc_server(
    service: ScoringService, host: str, port: int, max_workers: int = 16, reuse_port: bool = False
) -> tuple[grpc.Server, int]:
    """Serve ``service`` over gRPC on ``host:port`` (0: any free port) and start it.

    Args:
        service: The scoring service (loaded or not: until it is, scoring answers ``UNAVAILABLE`` and
            health ``NOT_SERVING``).
        host: The address to bind.
        port: The port to bind; 0 picks a free one.
        max_workers: Threads answering RPCs; each waits on the dynamic batcher while its records are
            scored, so this bounds the requests one model call can gather over gRPC.
        reuse_port: Share the port with the other workers of ``scoring serve --workers N``
            (SO_REUSEPORT: the kernel spreads the connections); off, a port already served is an error.

    Returns:
        The started server and the port it is bound to.

    Raises:
        RuntimeError: The address cannot be bound (in use, or not an address of this machine).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="scoring-grpc"),
        interceptors=[_Observed(service)],
        # Beyond this many RPCs at once (running, or waiting for a thread), grpc answers
        # RESOURCE_EXHAUSTED at once, so that the requests accepted keep their latency. Health's
        # Watch streams count too, for as long as they watch.
        maximum_concurrent_rpcs=service.settings.max_queue,
        options=[
            ("grpc.max_receive_message_length", service.settings.max_body_bytes),
            # Without this, a second server on a port already served binds it too (SO_REUSEPORT) and
            # the kernel splits the connections between them; a taken port must be an error.
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    prediction_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(service), server)
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    health_pb2_grpc.add_HealthServicer_to_server(_Health(service), server)
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio >= 1.61 raises; older versions returned 0
        raise RuntimeError(f"cannot serve gRPC on {address}: {e}") from e
    if bound == 0:
        raise RuntimeError(f"cannot serve gRPC on {address}")
    server.start()
    log.info("gRPC serving on %s:%d", host, bound)
    return server, bound


class _Observed(grpc.ServerInterceptor):
    """Times and counts each unary RPC, and maps what its servicer raises to the RPC's status.

    Streaming RPCs (only health's ``Watch``) pass through: they last as long as the client watches and
    are not requests to count or time. Unknown methods are not counted either, so that a client cannot
    grow the route label without bound.
    """

    def __init__(self, service: ScoringService) -> None:
        self._metrics = service.metrics
        # The wrapped handler of each method, made at its first call: grpc asks for a handler at every
        # call, and making one each time costs more than a record's scoring does.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap the method's handler when it is unary."""
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, behavior: Callable, route: str) -> Callable:
        def observed(request: object, context: grpc.ServicerContext) -> object:
            start = time.perf_counter()
            status = grpc.StatusCode.OK
            try:
                response = behavior(request, context)
                # A servicer may set a status without raising (health's Check for an unknown service).
                status = context.code() or grpc.StatusCode.OK
                return response
            except RequestError as e:
                status = getattr(grpc.StatusCode, e.grpc_code)
                context.abort(status, e.message)
            except Exception as e:
                aborted = context.code()
                if aborted not in (None, grpc.StatusCode.OK):
                    # The servicer called context.abort itself (it raises a bare Exception): keep its status.
                    status = aborted
                    raise
                status = grpc.StatusCode.INTERNAL
                # The type only: an exception's message can quote the request's values.
                log.error("gRPC %s failed: %s", route, type(e).__name__)
                log.debug("gRPC %s traceback", route, exc_info=True)
                context.abort(status, INTERNAL_MESSAGE)
            finally:
                self._metrics.observe(PROTOCOL, route, status.name, time.perf_counter() - start)

        return observed


def _authorize(service: ScoringService, context: grpc.ServicerContext) -> None:
    """Check the API key a call presents as ``x-api-key: KEY`` or ``authorization: Bearer KEY``.

    Raises:
        Unauthorized: A key is configured and the call does not present it.
    """
    # gRPC metadata keys arrive lower-cased.
    service.authorize(presented_key(dict(context.invocation_metadata() or ())))


class PredictionServicer(prediction_pb2_grpc.PredictionServiceServicer):
    """``scoring.v1.PredictionService``: the original API's records, as protobuf messages."""

    def __init__(self, service: ScoringService) -> None:
        self._service = service

    def Predict(
        self, request: prediction_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.PredictResponse:
        """Score one record with the champion, or the lineup's model ``request.model``."""
        _authorize(self._service, context)
        scored = self._score([request], request.model)
        (prediction,) = _predictions([request.id], scored)
        return prediction

    def PredictBatch(
        self, request: prediction_pb2.PredictBatchRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.PredictBatchResponse:
        """Score a batch of records in one call, with the champion or the model ``request.model``."""
        _authorize(self._service, context)
        scored = self._score(request.records, request.model)
        return prediction_pb2.PredictBatchResponse(
            predictions=_predictions([r.id for r in request.records], scored), **model_fields(scored.served)
        )

    def PredictEnsemble(
        self, request: prediction_pb2.PredictBatchRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.PredictEnsembleResponse:
        """Score a batch with every ensemble member; answer their weighted mean and the weights."""
        blended = self._combined(request, context, "PredictEnsemble", self._submit_ensemble)
        predictions = []
        for item in ensemble_predictions([r.id for r in request.records], blended):
            value = item[blended.column]
            answer = prediction_pb2.EnsemblePrediction(id=item["id"])
            if isinstance(value, list):  # multiclass: one probability per class
                answer.ensemble_class_probabilities.extend(value)
            else:  # the proto's fields are named as the batch job's columns
                setattr(answer, blended.column, value)
            predictions.append(answer)
        return prediction_pb2.PredictEnsembleResponse(
            predictions=predictions, weights=_shares(blended.roster, blended.roster.lineup.ensemble)
        )

    def PredictAB(
        self, request: prediction_pb2.PredictBatchRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.PredictABResponse:
        """Score each record of a batch with its A/B variant's model, the variant decided by its id."""
        routed = self._combined(request, context, "PredictAB", self._submit_ab)
        predictions = []
        for item in ab_predictions([r.id for r in request.records], routed):
            answer = prediction_pb2.PredictResponse(
                id=item["id"],
                prediction=feature_value(item["prediction"]),
                variant=item["variant"],
                model_name=item["model_name"],
                model_version=item["model_version"],
            )
            _set_probability(answer, item.get("probability"))
            predictions.append(answer)
        return prediction_pb2.PredictABResponse(
            predictions=predictions, split=_shares(routed.roster, routed.roster.lineup.ab)
        )

    def _score(self, records: Sequence[prediction_pb2.PredictRequest], model: str = "") -> Scored:
        with malformed_is_bad_request():
            features = [feature_record(r.features) for r in records]
            if model:
                pending = self._service.submit_records(features, self._service.live(model))
            else:  # the champion, by the very call made before the lineup had other models
                pending = self._service.submit_records(features)
        return _counted(self._service, pending)

    def _combined(
        self,
        request: prediction_pb2.PredictBatchRequest,
        context: grpc.ServicerContext,
        method: str,
        submit: Callable[[Sequence[prediction_pb2.PredictRequest]], Gathering[T]],
    ) -> T:
        """Score a batch with models of the lineup combined (its ensemble, its A/B split), once authorized.

        Args:
            request: The batch; its ``model`` must be empty, the lineup deciding which models score.
            context: The call's context, for its API key.
            method: The RPC's name, for the refusal of a model named.
            submit: Queues the batch's records on the combination's models.

        Returns:
            The combined scores, their records counted.

        Raises:
            Unauthorized: A key is configured and the call does not present it.
            BadRequest: A model is named, or the records are malformed.
        """
        _authorize(self._service, context)
        _no_model(request, method)
        with malformed_is_bad_request():
            pending = submit(request.records)
        return _counted(self._service, pending)

    def _submit_ensemble(self, records: Sequence[prediction_pb2.PredictRequest]) -> Gathering[Blended]:
        """Queue the records on every member of the ensemble."""
        return self._service.submit_ensemble([feature_record(r.features) for r in records])

    def _submit_ab(self, records: Sequence[prediction_pb2.PredictRequest]) -> Gathering[Routed]:
        """Queue each record on its A/B variant's model, the variant decided by its id."""
        features = [feature_record(r.features) for r in records]
        # The id field is the record's own "id" (empty: unset, as proto3 has it); others are features.
        items = [{"id": r.id} if r.id else {} for r in records]
        keys, _ = variant_keys(items, features, self._service.settings.id_columns)
        return self._service.submit_ab(features, keys)


def _counted(service: ScoringService, pending: Pending | Gathering[T]) -> Scored | T:
    """The scores of ``pending`` once they come, their records counted in the records metric."""
    outcome = pending.result()
    service.metrics.records.labels(PROTOCOL).inc(outcome.rows)
    return outcome


def _no_model(request: prediction_pb2.PredictBatchRequest, method: str) -> None:
    """Refuse a model named where the lineup decides which models score."""
    if request.model:
        raise BadRequest(f"model: {method} scores with the lineup's models; leave model empty")


def _shares(roster: Roster, pairs: Sequence[tuple[str, float]]) -> list[prediction_pb2.LineupShare]:
    return [
        prediction_pb2.LineupShare(model=name, share=share, **model_fields(roster.models[name].served))
        for name, share in pairs
    ]


def _set_probability(answer: prediction_pb2.PredictResponse, probability: object) -> None:
    if isinstance(probability, list):
        answer.class_probabilities.extend(probability)
    elif probability is not None:
        answer.probability = probability


def feature_record(features: Mapping[str, prediction_pb2.FeatureValue]) -> dict[str, object]:
    """A ``features`` map as the JSON-like record the row checks take (an unset value is None)."""
    return {name: _plain(value) for name, value in features.items()}


def _plain(value: prediction_pb2.FeatureValue) -> object:
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def feature_value(value: object) -> prediction_pb2.FeatureValue:
    """A prediction (float, int or str, as ``Scored.values`` gives it) as a ``FeatureValue``."""
    if value is None:
        return prediction_pb2.FeatureValue()
    if isinstance(value, bool):  # before int: a bool is an int
        return prediction_pb2.FeatureValue(bool_value=value)
    if isinstance(value, int):
        return prediction_pb2.FeatureValue(int_value=value)
    if isinstance(value, float):
        return prediction_pb2.FeatureValue(number_value=value)
    return prediction_pb2.FeatureValue(string_value=str(value))


def _predictions(ids: Sequence[str], scored: Scored) -> list[prediction_pb2.PredictResponse]:
    model = model_fields(scored.served)
    answers = []
    for item in original_predictions(ids, scored):
        answer = prediction_pb2.PredictResponse(
            id=item["id"], prediction=feature_value(item["prediction"]), **model
        )
        _set_probability(answer, item.get("probability"))
        answers.append(answer)
    return answers


class InferenceServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService``: the Open Inference Protocol v2 over gRPC.

    Liveness, readiness and server metadata need no API key (Kubernetes probes and discovery); model
    metadata and inference do.
    """

    def __init__(self, service: ScoringService) -> None:
        self._service = service

    def ServerLive(self, request, context) -> inference_pb2.ServerLiveResponse:
        """Live as long as the process answers."""
        return inference_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context) -> inference_pb2.ServerReadyResponse:
        """Ready once a model is loaded."""
        return inference_pb2.ServerReadyResponse(ready=self._service.ready)

    def ModelReady(
        self, request: inference_pb2.ModelReadyRequest, context: grpc.ServicerContext
    ) -> inference_pb2.ModelReadyResponse:
        """Ready when the named model (and version, if given) is the one loaded."""
        if not self._service.ready:
            return inference_pb2.ModelReadyResponse(ready=False)
        try:
            oip.check_model_named(self._service.served, request.name, request.version)
        except RequestError:  # another model, or the model was unloaded meanwhile: not ready
            return inference_pb2.ModelReadyResponse(ready=False)
        return inference_pb2.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request, context) -> inference_pb2.ServerMetadataResponse:
        """The server's name, version and protocol extensions."""
        return inference_pb2.ServerMetadataResponse(**oip.server_metadata())

    def ModelMetadata(
        self, request: inference_pb2.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> inference_pb2.ModelMetadataResponse:
        """The model's versions, platform, and input and output tensors."""
        _authorize(self._service, context)
        served = self._service.served
        oip.check_model_named(served, request.name, request.version)
        metadata = oip.model_metadata(served)
        tensor = inference_pb2.ModelMetadataResponse.TensorMetadata
        return inference_pb2.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[tensor(**t) for t in metadata["inputs"]],
            outputs=[tensor(**t) for t in metadata["outputs"]],
        )

    def ModelInfer(
        self, request: inference_pb2.ModelInferRequest, context: grpc.ServicerContext
    ) -> inference_pb2.ModelInferResponse:
        """Score the rows of the input tensors; answer ``prediction`` (and ``probability``) as raw bytes."""
        _authorize(self._service, context)
        live = self._service.live()  # once: the model checked, parsed for and scored by is one
        # The model first: a request for another model is NOT_FOUND whatever its tensors hold.
        oip.check_model_named(live.served, request.model_name, request.model_version)
        with malformed_is_bad_request():
            oip.check_outputs(live.served, [o.name for o in request.outputs])
            tensors = input_tensors(request)
            columns, rows = oip.columns_from_tensors(tensors, live.served.features)
            pending = self._service.submit_columns(columns, rows, live)
        scored = _counted(self._service, pending)
        outputs = oip.output_tensors(scored, [o.name for o in request.outputs] or None)
        fields = model_fields(scored.served)
        response = inference_pb2.ModelInferResponse(
            model_name=fields["model_name"], model_version=fields["model_version"], id=request.id
        )
        for tensor in outputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(oip.raw_bytes(tensor))
        return response


def input_tensors(request: inference_pb2.ModelInferRequest) -> list[oip.Tensor]:
    """The request's input tensors, decoded from ``raw_input_contents`` or from their ``contents``.

    Raises:
        BadRequest: A tensor's datatype is unknown, or its data does not fit its datatype and shape.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; one per input"
        )
    return [_input_tensor(tensor, raw[i] if raw else None) for i, tensor in enumerate(request.inputs)]


def _input_tensor(tensor: inference_pb2.ModelInferRequest.InferInputTensor, raw: bytes | None) -> oip.Tensor:
    where = f"input {tensor.name[: oip.MAX_NAME]!r}"
    shape = [int(d) for d in tensor.shape]
    count = oip.check_header(tensor.datatype, shape, where)
    datatype = tensor.datatype
    if raw is not None:
        if tensor.HasField("contents"):
            raise BadRequest(f"{where}: both contents and raw_input_contents; send one of them")
        data = oip.from_raw(raw, datatype, count, where)
    else:
        data = _from_contents(tensor.contents, datatype, where)
    if data.size != count:
        raise BadRequest(f"{where}: {data.size} values for shape {shape}")
    return oip.Tensor(tensor.name, datatype, tuple(shape), data)


def _from_contents(contents: inference_pb2.InferTensorContents, datatype: str, where: str) -> np.ndarray:
    if datatype not in _CONTENTS:
        raise BadRequest(f"{where}: {datatype} can only be sent as raw_input_contents")
    field, held = _CONTENTS[datatype]
    values = getattr(contents, field)
    if datatype == "BYTES":
        return np.array([oip.text(v, where) for v in values], dtype=object)
    data = np.array(values, dtype=held)
    target = oip.DATATYPES[datatype]
    if target is not held:
        # INT8/16 and UINT8/16 travel in 32-bit fields: a value that does not fit is refused, not wrapped.
        narrowed = data.astype(target)
        if not np.array_equal(narrowed.astype(held), data):
            raise BadRequest(f"{where}: a value does not fit {datatype}")
        data = narrowed
    return data


class _Health(health.HealthServicer):
    """The standard health service, answering from the scoring service's readiness at each call.

    ``SERVING`` while a model is loaded, ``NOT_SERVING`` before the first load and after ``close``
    (graceful shutdown), for the server (``""``) and both services; other names are ``NOT_FOUND``.
    """

    def __init__(self, service: ScoringService) -> None:
        super().__init__()
        self._service = service
        self._status: int | None = None

    def _sync(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._service.ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if status != self._status:
            # set() also wakes the Watch streams of each name: only on a change, to keep Check cheap.
            for name in HEALTH_NAMES:
                self.set(name, status)
            self._status = status

    def Check(self, request, context):
        """The status of ``request.service``, as of now."""
        self._sync()
        return super().Check(request, context)

    def Watch(self, request, context, send_response_callback=None):
        """Stream the status of ``request.service`` (as of now, then as Check calls see it change)."""
        self._sync()
        return super().Watch(request, context, send_response_callback)
