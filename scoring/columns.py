"""The names of the columns the job writes: one place for each, for every module that writes or reads them.

A scored row carries its id and kept columns, then:

- ``prediction``, and ``probability`` for a classifier: the champion's scores (``SCORE_COLUMNS``);
- ``challenger_<NAME>_prediction`` and ``..._probability`` for each challenger (``challenger_prefix``),
  ``ensemble_probability`` (or ``ensemble_prediction``) and ``variant`` with a lineup
  (``scoring.model.combine``);
- ``model_name`` and ``model_version``: the model that scored the row (``MODEL_COLUMNS``; its variant's
  under an A/B split);
- the partition column (``date`` by default, ``scoring.config.JobConfig.partition_column``).

A rejected row carries its id, kept and feature columns and ``reject_reason``, in the rejects dataset.
"""

from __future__ import annotations

PREDICTION = "prediction"
PROBABILITY = "probability"
SCORE_COLUMNS = (PREDICTION, PROBABILITY)

MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
MODEL_COLUMNS = (MODEL_NAME, MODEL_VERSION)

# The A/B variant that decided a row's prediction.
VARIANT = "variant"

# Why a row was not scored; null in the scored rows' pass, never null among the rejects.
REJECT_REASON = "reject_reason"

CHALLENGER_PREFIX = "challenger_"
ENSEMBLE_PREFIX = "ensemble_"


def challenger_prefix(name: str) -> str:
    """Where a challenger's columns start: ``challenger_<name>_``."""
    return f"{CHALLENGER_PREFIX}{name}_"
