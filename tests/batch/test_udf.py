"""The scoring UDF's per-worker model cache."""

from __future__ import annotations

import numpy as np

from scoring import demo
from scoring.batch import model_cache, udf
from scoring.model.predictors import ScorerSpec
from scoring.model.resolve import resolve_model


def test_model_cache_loads_once_per_key():
    model_cache.clear()
    loads = []

    def load():
        loads.append(1)
        return object()

    first = model_cache.get_or_load(("model", "onnx"), load)
    assert model_cache.get_or_load(("model", "onnx"), load) is first
    assert len(loads) == 1
    for i in range(model_cache.CAPACITY):
        model_cache.get_or_load(("other", i), load)
    assert model_cache.get_or_load(("model", "onnx"), load) is not first  # evicted, least recent
    model_cache.clear()


def test_worker_predictor_loads_the_model_once(registry, tmp_path, monkeypatch):
    model = resolve_model(f"models:/{demo.MODEL_NAME}@champion", tmp_path)
    spec = ScorerSpec(model.local_path, model.fingerprint, "onnx", "cpu", 1, model.features, "model.onnx")
    calls = []
    real = udf.load_predictor
    monkeypatch.setattr(udf, "load_predictor", lambda *a: calls.append(a) or real(*a))
    model_cache.clear()
    assert udf.worker_predictor(spec) is udf.worker_predictor(spec)
    assert len(calls) == 1
    model_cache.clear()


def test_workers_score_with_the_classifier_the_driver_shipped(spark, registry, tmp_path):
    model = resolve_model(f"models:/{demo.MODEL_NAME}/1", tmp_path)  # the scikit-learn version
    spec = ScorerSpec(model.local_path, model.fingerprint, "pyfunc", "cpu", 1, model.features)
    loaded = udf.load_predictor(spec, model.local_path)
    shipped = udf.ship_classifier(spark, loaded)
    assert shipped is not None

    # The model's files are not where the spec says: the worker must not need them.
    elsewhere = ScorerSpec("/nonexistent/model", model.fingerprint, "pyfunc", "cpu", 1, model.features)
    model_cache.clear()
    worker = udf.worker_predictor(elsewhere, shipped)
    rows = demo.make_customers(50, demo.DATES[0], seed=3)[list(model.feature_names)]
    got, want = worker.predict(rows), loaded.predict(rows)
    np.testing.assert_array_equal(got.prediction, want.prediction)
    np.testing.assert_allclose(got.probability, want.probability)
    model_cache.clear()
