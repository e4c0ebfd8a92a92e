"""Everything Airflow and EMR: the daily DAG's tasks, the step sensor, job flows, artifacts, pre-flight.

The only subpackage that imports Airflow or boto3 (checked by ``lint-imports``, see ``.importlinter``).
Airflow is imported inside the task functions, so that the scheduler's parse of the DAG file stays light.

Modules: ``tasks`` (each task of the DAG), ``operators`` (the step sensor), ``emr`` (job flows, steps,
idempotent control), ``artifacts`` (the wheel and scripts to S3), ``preflight`` (model and input checks
before any cluster is paid for).
"""
