"""The scoring UDF's per-worker model cache."""

from __future__ import annotations

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
