"""The published dataset's contract: storage, staging and the journaled swap, the manifest, validation.

Reads and writes with pyarrow only, never pyspark nor Airflow (checked by ``lint-imports``, see
``.importlinter``), so that the DAG and analysts' tools check a partition without Spark.

Modules: ``storage`` (local disk or S3 through ``pyarrow.fs``), ``publish`` (the layout, staging, swap
and recovery), ``manifest`` (what scored a partition), ``validate`` (``scoring validate``).
"""
