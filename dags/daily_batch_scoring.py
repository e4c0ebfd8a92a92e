"""Daily batch scoring: one day's partition, scored with a registry model and published.

Scores one day's partition of parquet input with a model from the MLflow registry and publishes it,
with its rejects and manifest, to a date-partitioned parquet dataset (param `output`), or to an Apache
Iceberg table (param `table`, `NAMESPACE.TABLE`, in the pyiceberg catalog named by `catalog`): each
date replaced in one catalog commit, rejects in `TABLE__rejects`. Challengers can be scored beside
it in the same pass (params `challengers`, `ensemble`, `ab_split`, `ab_salt`, `decision_threshold`).

`validate_model` (the lineup makes sense; every model's alias resolves, is recent, has a signature:
the versions are pinned here) -> `preflight` (the input's footers against every signature, a sample
scored locally with every model and their scores combined as the job would, and the run's cost
estimated: `max_cost_usd` fails an EMR run whose estimate is over it; no cluster is paid for before
both pass) -> `choose_compute`:

- **local**: `run_local` runs the very job, `spark-submit jobs/score.py`, on this worker (`local[*]`).
- **emr**: `stage_artifacts` (wheel, job, bootstrap and the pinned models to a per-run S3 path) ->
  `create_cluster` (setup; CPU or GPU flavour from `emr/`) -> `add_step` (it scores the staged models:
  nodes need no registry) -> `wait_for_step` -> `terminate_cluster` (teardown: runs whatever
  happened, and ends every live cluster tagged with the run's key: duplicates and orphans of a failed
  create included). `create_cluster` warns about live clusters of earlier runs (`terminate_stale` ends them).
  A retried or cleared task finds its run's cluster and step by their
  idempotency key instead of starting new ones; killing `wait_for_step` cancels the step.

-> `validate_output` (manifest, counts, schema, values, score drift against the previous partition;
with `table`, the table's current version of the date) -> `maintain_table` (with `table` and
`maintain_older_than_days`: expires older snapshots of the scores and rejects tables and removes files
no kept snapshot references; skipped otherwise).

Tables on EMR live in the Glue catalog: the step's environment configures pyiceberg's catalog `catalog`
(`default` when null) as Glue in the AWS connection's region, with its warehouse at `glue_warehouse`
(default `s3://<output's bucket>/iceberg`), and the tasks that read the table (`preflight`'s cost
estimate, `validate_output`, `maintain_table`) open it with the same configuration. Locally the
catalog is whatever this worker's pyiceberg configuration says (`PYICEBERG_CATALOG__<NAME>__*`,
`.pyiceberg.yaml`).

The partition scored is the run's data interval start (UTC). Params set what one run needs; their
defaults come from the `SCORING_*` environment variables (see `scoring/orchestration/tasks.py`).
Backfill with `airflow backfill create --dag-id daily_batch_scoring --from-date ... --to-date ...`:
each date replaces only its own partition.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable

from scoring.orchestration import tasks
from scoring.orchestration.operators import EmrScoringStepSensor

with DAG(
    dag_id="daily_batch_scoring",
    # A data-interval timetable: the run after midnight scores the day that just ended.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "scoring", "retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["scoring", "batch", "emr"],
    doc_md=__doc__,
    params={
        name: Param(value, **tasks.PARAM_SCHEMAS.get(name, {}))
        for name, value in tasks.default_params().items()
    },
) as dag:
    model = task(tasks.validate_model, task_id="validate_model")()
    preflight = task(tasks.preflight, task_id="preflight")(model)
    branch = task.branch(tasks.choose_compute, task_id="choose_compute")()

    # The pre-flight's XCom carries the cost estimate the job records in the manifest.
    local = task(tasks.run_local, task_id="run_local")(model, preflight)

    artifacts = task(tasks.stage, task_id="stage_artifacts")(model)
    cluster = task(tasks.create_cluster, task_id="create_cluster")(artifacts)
    step = task(tasks.add_step, task_id="add_step")(cluster, artifacts, preflight)
    wait = EmrScoringStepSensor(task_id="wait_for_step", cluster_id=cluster, step_id=step)
    terminate = task(tasks.terminate_cluster, task_id="terminate_cluster")(cluster)

    validate = task(
        tasks.validate_output, task_id="validate_output", trigger_rule="none_failed_min_one_success"
    )()
    # Only after the day validated: an invalid version may need an older snapshot restored.
    maintain = task(tasks.maintain_table, task_id="maintain_table")()

    preflight >> branch >> [local, artifacts]
    wait >> [terminate, validate]
    local >> validate
    validate >> maintain
    # stage_artifacts is a setup too: a teardown runs when one of its setups succeeded, so it ends the
    # run's cluster even when create_cluster failed after EMR created it; on the local path both are
    # skipped, and so is the teardown.
    terminate.as_teardown(setups=[artifacts, cluster])
