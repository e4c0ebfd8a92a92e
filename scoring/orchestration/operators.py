"""Airflow operators of the daily DAG (imports Airflow at the top: only the DAG file imports this module)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from scoring.orchestration import emr
from scoring.orchestration.tasks import emr_client, fail_fast, s3_client


class EmrScoringStepSensor(BaseOperator):
    """Waits for the scoring step; killing the task cancels the step.

    A failed step fails the task with EMR's reason and the tail of the step's stderr, read back from
    the cluster's log URI.

    Args:
        cluster_id: The cluster (templated).
        step_id: The step (templated).
    """

    template_fields = ("cluster_id", "step_id")

    def __init__(self, *, cluster_id: str, step_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_id = cluster_id
        self.step_id = step_id

    @fail_fast
    def execute(self, context: Any) -> None:
        """Poll the step every ``params.step_poll_seconds`` until it ends."""
        params = context["params"]
        emr.wait_for_step(
            emr_client(params),
            s3_client(params),
            self.cluster_id,
            self.step_id,
            poll_s=float(params["step_poll_seconds"]),
        )

    def on_kill(self) -> None:
        """Cancel the step this task was waiting for."""
        emr.cancel_step(emr_client(self.params), self.cluster_id, self.step_id)
