"""``scoring demo``: the whole path on one machine, offline.

It makes a synthetic credit-risk dataset (two dates, hive-partitioned parquet), trains a gradient
boosting classifier, registers it in a local SQLite MLflow registry twice (as an sklearn pyfunc model,
alias ``sklearn``, and exported to ONNX, alias ``champion``), scores both dates with the real job (0.2% of the
rows lack their income and land in the rejects) into a directory and into an Apache Iceberg table
(``demo.scores``, in a SQL catalog on SQLite that ``demo-workdir/.pyiceberg.yaml`` configures as ``demo``),
and prints where the output is, what it looks like and a query on the table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.errors import OutputError
from scoring.model.signature import FEATURE_RANGES_KEY

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MODEL_NAME = "credit-risk"
DATES = (dt.date(2026, 11, 1), dt.date(2026, 11, 2))
FEATURE_TYPES = {
    "age": "int32",
    "income": "float64",
    "debt_ratio": "float64",
    "credit_lines": "int64",
    "utilization": "float32",
    "late_payments": "int32",
    "tenure_months": "int32",
    "inquiries": "int32",
}
# What the model declares valid (in its MLflow metadata); rows outside are rejected, not scored.
FEATURE_RANGES = {
    "age": {"min": 18, "max": 120},
    "income": {"min": 0},
    "debt_ratio": {"min": 0, "max": 1},
    "utilization": {"min": 0, "max": 1},
}
_MARKER = ".scoring-demo"
# The demo's Iceberg catalog and table: `--catalog demo --table demo.scores`, configured by the
# .pyiceberg.yaml the demo writes into its workdir (PYICEBERG_HOME points pyiceberg at it).
CATALOG = "demo"
TABLE = "demo.scores"
PER_DAY = (
    "SELECT date, count(*) AS scored, round(avg(probability), 4) AS mean_probability "
    "FROM scores GROUP BY date ORDER BY date"
)


def make_customers(rows: int, date: dt.date, seed: int = 0) -> pd.DataFrame:
    """Synthetic customers for one date: an id, features, two descriptive columns and a label.

    Args:
        rows: Number of rows.
        date: The snapshot date; ids are unique across dates.
        seed: Random seed (combined with the date).
    """
    rng = np.random.default_rng([seed, date.toordinal()])
    age = rng.integers(18, 90, rows)
    income = rng.lognormal(10.8, 0.6, rows)
    debt_ratio = rng.beta(2, 5, rows)
    credit_lines = rng.poisson(4, rows)
    utilization = rng.beta(2, 3, rows)
    late = rng.poisson(0.4, rows)
    tenure = rng.integers(1, 360, rows)
    inquiries = rng.poisson(1.2, rows)
    logit = (
        -2.2
        + 2.5 * debt_ratio
        + 1.8 * utilization
        + 0.7 * late
        + 0.25 * inquiries
        - 0.015 * (age - 18)
        - 0.3 * np.log(income / 50_000)
        - 0.002 * tenure
    )
    label = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "customer_id": date.toordinal() * 10_000_000 + np.arange(rows, dtype=np.int64),
            "age": age,
            "income": income.round(2),
            "debt_ratio": debt_ratio,
            "credit_lines": credit_lines,
            "utilization": utilization,
            "late_payments": late,
            "tenure_months": tenure,
            "inquiries": inquiries,
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "segment": rng.choice(["retail", "premium", "business"], rows, p=[0.7, 0.2, 0.1]),
            "defaulted": label.astype(np.int32),
        }
    )
    return frame.astype(FEATURE_TYPES)


def spoil(frame: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """A copy of ``frame`` where ``fraction`` of the rows miss their income, as real feeds do."""
    rng = np.random.default_rng(seed)
    spoiled = frame.copy()
    spoiled.loc[rng.random(len(frame)) < fraction, "income"] = np.nan  # written as null
    return spoiled


def write_partitioned(frame: pd.DataFrame, root: str | Path, date: dt.date, files: int = 1) -> None:
    """Write ``frame`` as ``root/date=YYYY-MM-DD/part-N.parquet`` in ``files`` files."""
    directory = Path(root, f"date={date.isoformat()}")
    directory.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), files)):
        table = pa.Table.from_pandas(frame.iloc[chunk], preserve_index=False)
        pq.write_table(table, directory / f"part-{i:05d}.parquet")


def train_classifier(frame: pd.DataFrame, trees: int = 60):
    """A gradient boosting classifier of ``defaulted`` on the demo features."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=trees, max_depth=3, random_state=0)
    return model.fit(frame[list(FEATURE_TYPES)], frame["defaulted"])


def to_onnx(model, n_features: int):
    """The classifier as an ONNX graph with one float matrix input and a plain probability output."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )


def register_models(model, sample: pd.DataFrame, name: str = MODEL_NAME) -> tuple[str, str]:
    """Log the classifier as sklearn and as ONNX, register both, and point aliases at them.

    The registry is the one ``MLFLOW_TRACKING_URI`` names. Aliases: ``sklearn`` for the sklearn
    version, ``champion`` for the ONNX version.

    Returns:
        The versions registered for the sklearn and the ONNX model.
    """
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    features = sample[list(FEATURE_TYPES)]
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: the job refuses such rows
        # before they reach the model, so integer features are what we mean.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(features, model.predict_proba(features))
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name=f"{name}-training"):
        # We trust the types of a model we just trained; MLflow's skops loader wants them named.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        sklearn_info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=trusted,
            registered_model_name=name,
            metadata={FEATURE_RANGES_KEY: FEATURE_RANGES},
        )
        onnx_info = mlflow.onnx.log_model(
            to_onnx(model, features.shape[1]),
            name="onnx-model",
            signature=signature,
            registered_model_name=name,
            metadata={FEATURE_RANGES_KEY: FEATURE_RANGES},
        )
    sklearn_version = str(sklearn_info.registered_model_version)
    onnx_version = str(onnx_info.registered_model_version)
    client.set_registered_model_alias(name, "sklearn", sklearn_version)
    client.set_registered_model_alias(name, "champion", onnx_version)
    return sklearn_version, onnx_version


def use_local_registry(workdir: Path) -> None:
    """Point MLflow at a SQLite registry in ``workdir``, with artifacts beside it."""
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    if mlflow.get_experiment_by_name("scoring-demo") is None:
        # Without an artifact location MLflow writes artifacts to ./mlruns of the current directory.
        mlflow.create_experiment("scoring-demo", artifact_location=(workdir / "mlartifacts").as_uri())
    mlflow.set_experiment("scoring-demo")


def use_local_catalog(workdir: Path) -> Path:
    """Configure the Iceberg catalog ``demo`` for this process: SQLite and a warehouse in ``workdir``.

    Writes ``workdir/.pyiceberg.yaml`` and points ``PYICEBERG_HOME`` at ``workdir``, as a user would
    (``export PYICEBERG_HOME=...``) to reach the same catalog from a shell.

    Returns:
        The configuration file.
    """
    config = workdir / ".pyiceberg.yaml"
    config.write_text(
        "catalog:\n"
        f"  {CATALOG}:\n"
        "    type: sql\n"
        f"    uri: sqlite:///{workdir / 'catalog.db'}\n"
        f"    warehouse: {(workdir / 'warehouse').as_uri()}\n"
    )
    os.environ["PYICEBERG_HOME"] = str(workdir)
    return config


def table_per_day(catalog: str = CATALOG, table: str = TABLE):
    """The table's scored rows and mean probability per day, through pyiceberg and DuckDB."""
    from scoring.dataset.catalog import open_catalog  # reads the configuration afresh, as the job does

    scan = open_catalog(catalog).load_table(table).scan(selected_fields=("date", "probability"))
    return scan.to_duckdb(table_name="scores").sql(PER_DAY)


def run_demo(workdir: str, rows: int = 300_000, master: str | None = None) -> None:
    """Run the demo end to end and print what it did.

    Args:
        workdir: Directory for the data, the registry and the output; replaced when it holds an
            earlier demo, refused when it holds anything else.
        rows: Rows per date.
        master: Spark master; None for ``local[*]``.
    """
    from scoring.batch.session import get_session

    root = _fresh_workdir(Path(workdir).resolve())
    print(f"demo: writing {rows:,} rows x {len(DATES)} dates to {root / 'input'}")
    frames = {date: make_customers(rows, date) for date in DATES}
    for date, frame in frames.items():
        write_partitioned(spoil(frame, 0.002, seed=date.toordinal()), root / "input", date, files=4)

    use_local_registry(root)
    train = frames[DATES[0]].sample(n=min(rows, 20_000), random_state=0)
    model = train_classifier(train)
    sklearn_version, onnx_version = register_models(model, train.head(100))
    print(
        f"demo: registered {MODEL_NAME} v{sklearn_version} (sklearn, alias sklearn) and "
        f"v{onnx_version} (ONNX, alias champion) in {os.environ['MLFLOW_TRACKING_URI']}"
    )

    spark = get_session(master, app_name="scoring-demo")
    spark.sparkContext.setLogLevel("WARN")
    output = _score_the_dates(root, spark)
    _show(output)
    print(_try_it(root, output))


def _score_the_dates(root: Path, spark: SparkSession) -> Path:
    """Every date to the output directory, then to the Iceberg table, then the first with a lineup."""
    from scoring.batch.job import run_job
    from scoring.config import JobConfig
    from scoring.dataset.manifest import summary
    from scoring.lineup import CHAMPION, Lineup

    output = root / "output"
    for date in DATES:
        config = JobConfig(
            model_uri=f"models:/{MODEL_NAME}@champion",
            input=str(root / "input"),
            output=str(output),
            date=date,
            id_columns=("customer_id",),
            keep_columns=("region", "segment"),
        )
        print(summary(run_job(config, spark)))

    # The same dates published to an Iceberg table instead: one catalog commit per date.
    use_local_catalog(root)
    for date in DATES:
        table_config = dataclasses.replace(config, date=date, output=None, table=TABLE, catalog=CATALOG)
        manifest = run_job(table_config, spark)
        snapshot = manifest.output.snapshot_id
        print(f"{summary(manifest).split(' -> ')[0]} -> table {TABLE}, snapshot {snapshot}")

    # The same first date again, with the scikit-learn version as a challenger, an ensemble of both and
    # a 90/10 A/B split, in one pass, to a dataset of its own.
    lineup = Lineup(
        challengers=(("sklearn", f"models:/{MODEL_NAME}@sklearn"),),
        ensemble=((CHAMPION, 0.5), ("sklearn", 0.5)),
        ab=((CHAMPION, 0.9), ("sklearn", 0.1)),
        ab_salt="demo-experiment",
    )
    config = dataclasses.replace(config, date=DATES[0], output=str(root / "lineup"), lineup=lineup)
    print(summary(run_job(config, spark)))
    return output


def _show(output: Path) -> None:
    """A few scored rows read back with pyarrow, and the table per day through pyiceberg and DuckDB."""
    scored = pq.read_table(output, partitioning="hive").to_pandas()
    print(f"\ndemo: {len(scored):,} scored rows under {output}; a few of them (read back with pyarrow):")
    print(scored.sample(5, random_state=1).to_string(index=False))
    print(f"\ndemo: the table {TABLE} per day, read through pyiceberg and DuckDB:")
    print(table_per_day())


def _try_it(root: Path, output: Path) -> str:
    """What to try next, as commands to paste."""
    query = (
        "from pyiceberg.catalog import load_catalog; "
        f"table = load_catalog('{CATALOG}').load_table('{TABLE}'); "
        f"print(table.scan().to_duckdb('scores').sql('{PER_DAY}'))"
    )
    return (
        "\nTry it:\n"
        f"  export MLFLOW_TRACKING_URI={os.environ['MLFLOW_TRACKING_URI']}\n"
        f"  .venv/bin/scoring validate --output {output} --date {DATES[1]}\n"
        f"  file://{output}/date={DATES[1]}/_report.html    # the run report, in a browser\n"
        f"  .venv/bin/scoring score --model-uri models:/{MODEL_NAME}@sklearn --input {root / 'input'} "
        f"--output {output} --date {DATES[0]} --id-column customer_id\n"
        f'  .venv/bin/python -c "import duckdb; duckdb.sql(\\"SELECT date, count(*), avg(probability) FROM '
        f"read_parquet('{output}/*/*.parquet', hive_partitioning = true) GROUP BY date\\\").show()\"\n"
        f"  .venv/bin/python -c \"import pandas as pd; print(pd.read_parquet('{root / 'lineup'}').head())\""
        "    # champion, challenger, ensemble, variant\n"
        f"  export PYICEBERG_HOME={root}    # its .pyiceberg.yaml configures the catalog {CATALOG!r}\n"
        f'  .venv/bin/python -c "{query}"\n'
        f"  .venv/bin/scoring score --model-uri models:/{MODEL_NAME}@sklearn --input {root / 'input'} "
        f"--table {TABLE} --catalog {CATALOG} --date {DATES[0]} --id-column customer_id "
        "--keep-columns region,segment\n"
        f"  .venv/bin/scoring history --table {TABLE} --catalog {CATALOG} --date {DATES[0]}"
        "    # the day's versions: the demo's, then the line above's\n"
        "  make dag-demo    # the daily Airflow DAG scores 2026-11-01 on this machine"
    )


def _fresh_workdir(root: Path) -> Path:
    if root.exists() and any(root.iterdir()):
        if not (root / _MARKER).exists():
            raise OutputError(f"{root} is not empty and is not an earlier demo's workdir")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / _MARKER).touch()
    return root
