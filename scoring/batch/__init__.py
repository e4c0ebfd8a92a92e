"""The Spark side: the session, reading and checking the input, quarantine, the scoring UDF, the job.

May import pyspark (lazily, inside the functions that build plans), ``scoring.model`` and
``scoring.dataset``; never Airflow nor boto3 (checked by ``lint-imports``, see ``.importlinter``).

Modules: ``session``, ``inputs`` (read the partition, count its rows), ``quarantine`` (per-row checks
and rejects), ``udf`` (the pandas UDF) and ``model_cache`` (its per-worker cache), ``arrow_pass``
(the scoring pass whose tasks read, check, score and write the parquet themselves), ``job`` (one
date), ``backfill`` (a range of dates).
"""
