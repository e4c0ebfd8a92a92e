"""The per-worker cache of loaded models.

Spark reuses Python workers across tasks (``spark.python.worker.reuse``, on by default), so a model
loaded by the first task of a worker serves every later task of that worker. The cache lives in its own
module because Spark pickles functions defined in local scope along with their closures: module-level
state survives only in an importable module.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

# One run scores its champion and every challenger in the same pass, so the cache holds several models;
# a reused worker can also serve several jobs of one long-lived SparkContext (a notebook, the demo, a
# backfill): keep the most recent few rather than every model it ever loaded. A lineup of more models
# than this still scores correctly, each task reloading what was evicted.
CAPACITY = 8

_models: OrderedDict[Hashable, object] = OrderedDict()
_lock = threading.Lock()


def get_or_load(key: Hashable, load: Callable[[], T]) -> T:
    """Return the model cached under ``key``, loading it with ``load()`` on first use.

    Args:
        key: Identity of the model and of how it is loaded.
        load: Loads the model; called at most once per key while the key stays cached.
    """
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]  # type: ignore[return-value]
        model = load()
        _models[key] = model
        while len(_models) > CAPACITY:
            _models.popitem(last=False)
        return model


def clear() -> None:
    """Forget every cached model."""
    with _lock:
        _models.clear()
