"""The original API's and MLflow's request and response shapes, as pure functions.

Each parser turns a decoded JSON body into what ``ScoringService`` scores (records, or columns) and
raises ``BadRequest`` naming what is malformed; each formatter turns ``Scored`` into the dialect's
answer. The HTTP app and the gRPC servicers only wire these to their transport.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from scoring.model.signature import Feature
from scoring.model.variants import variant_key
from scoring.serve.errors import BadRequest
from scoring.serve.served_model import ServedModel
from scoring.serve.service import Blended, Routed, Scored

# MLflow's scoring protocol (``mlflow models serve``): the keys a JSON body may use.
MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def original_record(body: object, where: str = "body") -> tuple[object, Mapping[str, object]]:
    """``{"id": ..., "features": {name: value}}`` -> the id (None when absent) and the features."""
    if not isinstance(body, Mapping):
        raise BadRequest(f'{where}: expected an object with "features"')
    features = body.get("features")
    if not isinstance(features, Mapping):
        raise BadRequest(f'{where}: "features" must be an object of feature name to value')
    record_id = body.get("id")
    if not _repeatable(record_id):
        raise BadRequest(f'{where}: "id" must be a string, a finite number, a boolean or null')
    return record_id, features


def _repeatable(value: object) -> bool:
    """Whether an answer can repeat ``value`` as JSON: a scalar, and no NaN or infinity."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int)


def original_batch(body: object) -> tuple[list[object], list[Mapping[str, object]]]:
    """A list of ``original_record`` bodies -> their ids and their features."""
    pairs = [original_record(item, f"record {i}") for i, item in enumerate(batch_items(body))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def batch_items(body: object) -> list:
    """The records of a batch body: a list of them, or ``{"records": [...]}``."""
    if isinstance(body, Mapping) and isinstance(body.get("records"), list):
        body = body["records"]
    if not isinstance(body, list):
        raise BadRequest('body: expected a list of {"id": ..., "features": {...}} objects')
    return body


def variant_keys(
    items: Sequence[Mapping[str, object]],
    features: Sequence[Mapping[str, object]],
    id_columns: Sequence[str],
    where: str = "record",
) -> tuple[list[str], list[dict[str, object]]]:
    """Each record's A/B key (``scoring.model.variants.variant_key``) from its id columns' values.

    An id column is read from the record itself (``{"customer_id": 7, "features": {...}}``; the default
    ``id`` is the original API's own id field), else from its features: the same value hashes as the
    batch job hashes that column's value, so a record lands in the variant its row got there.

    Args:
        items: The records as sent (their top-level fields).
        features: Their features.
        id_columns: The server's ``--id-column`` names, in order.
        where: How an error names a record: ``record`` (``record 3``), or ``body`` for a lone record.

    Returns:
        The keys, and each record's id values by column (the answer repeats them).

    Raises:
        BadRequest: A record lacks an id column (or it is null), or holds an object or a list there.
    """
    keys, ids = [], []
    for i, (item, values) in enumerate(zip(items, features, strict=True)):
        named = where if where == "body" else f"{where} {i}"
        found = {}
        for column in id_columns:
            value = item.get(column)
            if value is None:
                value = values.get(column)
            if value is None:
                raise BadRequest(
                    f'{named}: no "{column}": an A/B request needs each record\'s id, which decides its '
                    f"variant (--id-column {','.join(id_columns)})"
                )
            if not _repeatable(value):
                raise BadRequest(f'{named}: "{column}" must be a string or a finite number (its id)')
            found[column] = value
        keys.append(variant_key(list(found.values())))
        ids.append(found)
    return keys, ids


def ensemble_predictions(ids: Sequence[object], blended: Blended) -> list[dict]:
    """One ``{"id", "ensemble_probability"}`` (``ensemble_prediction``, regressors) object per record."""
    return [{"id": i, blended.column: v} for i, v in zip(ids, blended.values(), strict=True)]


def ensemble_fields(blended: Blended) -> dict:
    """The weights and the members' models, as every ensemble answer gives them."""
    models = {name: model_fields(scored.served) for name, scored in blended.members.items()}
    return {"weights": blended.weights, "models": models}


def ab_predictions(
    ids: Sequence[object], routed: Routed, id_values: Sequence[Mapping[str, object]] | None = None
) -> list[dict]:
    """One answer per record: its ids, its variant, and the scores and name of the variant's model.

    Args:
        ids: Each record's ``id`` field, as ``/predict`` repeats it.
        routed: The records' scores.
        id_values: Each record's id columns' values (``variant_keys``), repeated by name.
    """
    prediction, probability = routed.values()
    answers = []
    for row, record_id in enumerate(ids):
        answer = {"id": record_id, **(id_values[row] if id_values else {})}
        answer |= {"variant": routed.variants[row], "prediction": prediction[row]}
        if probability is not None:
            answer["probability"] = probability[row]
        answers.append({**answer, **model_fields(routed.served(row))})
    return answers


def original_predictions(ids: Sequence[object], scored: Scored) -> list[dict]:
    """One ``{"id", "prediction", "probability"}`` object per record (no probability for regressors)."""
    prediction, probability = scored.values()
    if probability is None:
        return [{"id": i, "prediction": p} for i, p in zip(ids, prediction, strict=True)]
    return [
        {"id": i, "prediction": p, "probability": q}
        for i, p, q in zip(ids, prediction, probability, strict=True)
    ]


def model_fields(served: ServedModel) -> dict:
    """The model, as every answer of the original API names it."""
    return {"model_name": served.model.name, "model_version": served.model.version}


def mlflow_request(
    body: object, features: Sequence[Feature]
) -> tuple[list[Mapping[str, object]] | None, dict[str, list] | None, int]:
    """An ``/invocations`` JSON body -> (records, None, rows) or (None, columns, rows).

    Accepts what ``mlflow models serve`` accepts as JSON: ``dataframe_split`` (columns and rows),
    ``dataframe_records`` (a list of objects), ``instances`` and ``inputs`` (a list of objects, a
    list of rows in the signature's column order, an object of columns, or one object of scalars).
    """
    if not isinstance(body, Mapping):
        raise BadRequest(f"body: expected a JSON object with one of {', '.join(MLFLOW_FORMATS)}")
    given = [key for key in MLFLOW_FORMATS if key in body]
    if len(given) != 1:
        raise BadRequest(f"body: expected exactly one of {', '.join(MLFLOW_FORMATS)}")
    key, value = given[0], body[given[0]]
    if key == "dataframe_split":
        return _split_frame(value, features)
    if key == "dataframe_records":
        return _records(value, key), None, len(value)
    return _instances(value, key, features)


def mlflow_response(scored: Scored) -> dict:
    """``{"predictions": [...]}`` as MLflow answers, with the probabilities and the model beside it."""
    prediction, probability = scored.values()
    answer: dict = {"predictions": prediction}
    if probability is not None:
        answer["probabilities"] = probability
    return {**answer, **model_fields(scored.served)}


def _split_frame(value: object, features: Sequence[Feature]) -> tuple[None, dict[str, list], int]:
    if not isinstance(value, Mapping) or not isinstance(value.get("data"), list):
        raise BadRequest('dataframe_split: expected {"columns": [...], "data": [[...], ...]}')
    data = value["data"]
    columns = value.get("columns") or [f.name for f in features]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest('dataframe_split: "columns" must be a list of column names')
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRequest(f"dataframe_split: row {i} has not one value per column ({len(columns)})")
    return None, {name: [row[j] for row in data] for j, name in enumerate(columns)}, len(data)


def _records(value: object, key: str) -> list[Mapping[str, object]]:
    if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
        raise BadRequest(f"{key}: expected a list of objects of feature name to value")
    return value


def _instances(
    value: object, key: str, features: Sequence[Feature]
) -> tuple[list[Mapping[str, object]] | None, dict[str, list] | None, int]:
    if isinstance(value, Mapping) and not any(isinstance(v, list | Mapping) for v in value.values()):
        return [value], None, 1  # one record of scalars, as MLflow reads it
    if isinstance(value, Mapping):  # columns: {name: [values]}
        lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise BadRequest(f"{key}: columns must be lists of the same length")
        return None, {name: list(v) for name, v in value.items()}, lengths.pop()
    if isinstance(value, list) and all(isinstance(r, Mapping) for r in value):
        return value, None, len(value)
    if isinstance(value, list) and all(isinstance(r, list) for r in value):
        names = [f.name for f in features]
        for i, row in enumerate(value):
            if len(row) != len(names):
                raise BadRequest(f"{key}: row {i} has {len(row)} values; the model has {len(names)} features")
        return None, {name: [row[j] for row in value] for j, name in enumerate(names)}, len(value)
    raise BadRequest(f"{key}: expected a list of objects, a list of rows, or an object of columns")
