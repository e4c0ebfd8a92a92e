"""The online path needs no Spark and no Airflow: it serves in a process where neither can be imported.

``lint-imports`` proves that no module of ``scoring.serve`` imports them, directly or through other
modules of ``scoring``; this proves it at run time, through MLflow and ONNX Runtime too. MLflow's
``mlflow.types.schema`` probes for pyspark when it is installed (and carries on without it), so the
check hides pyspark rather than looking for it in ``sys.modules``.
"""

from __future__ import annotations

import subprocess
import sys

# Load both backends through the service, score a record, build both servers' apps: then look.
_SCRIPT = """
import importlib.abc
import sys


class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyspark", "py4j", "airflow"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None


sys.meta_path.insert(0, Hidden())
from scoring import demo
from scoring.serve import grpc_api, server
from scoring.serve.http import create_app
from scoring.serve.served_model import ServeSettings
from scoring.serve.service import ScoringService

record = demo.make_customers(1, demo.DATES[0])[list(demo.FEATURE_TYPES)].to_dict("records")[0]
for alias in ("champion", "sklearn"):
    service = ScoringService(ServeSettings(model_uri=f"models:/credit-risk@{alias}"))
    service.load()
    assert service.submit_records([record]).result().rows == 1
    create_app(service)
    grpc_server, _ = grpc_api.start_grpc_server(service, "127.0.0.1", 0)
    grpc_server.stop(None)
    service.close()
heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j", "airflow")})
print(",".join(heavy) or "none")
"""


def test_serving_imports_neither_spark_nor_airflow(registry):
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
