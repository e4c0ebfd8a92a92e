"""Publishing to an Iceberg table under faults: SIGKILLs at random moments, concurrent runs.

The runs are real processes driving ``TablePublisher`` as the job does (prepare, write parquet files
into the run's directories, publish a manifest, finish) against a SQL catalog on SQLite in
``tmp_path``, configured by the ``PYICEBERG_CATALOG__LOCAL__*`` variables they inherit. A script
(``RUNS``) written into ``tmp_path`` and run with ``sys.executable`` imports pyiceberg once, then
forks one process per run: a run costs its work, not pyiceberg's imports (3 s on a busy machine), so
that 20 kills fit in seconds. The last tests SIGKILL the real job (``scoring score --table``): once
between its commits, then 20 times at random moments of its write and commit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import DATE, OTHER_DATE
from pyiceberg.exceptions import NoSuchTableError

from scoring import demo, faults
from scoring.cli import main
from scoring.dataset import table as tables
from scoring.dataset.catalog import open_catalog

BIN = Path(sys.executable).parent
TABLE = "analytics.scores"
REJECTS = tables.rejects_identifier(TABLE)
CATALOG = "local"
CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
SKLEARN = f"models:/{demo.MODEL_NAME}@sklearn"
KILLS = 20  # SIGKILLs that land in a live run, at least
BUDGET_S = 60  # the kill loop's bound (it takes 10-20 s on 2 busy cores)
ROUNDS = 4  # rounds of two concurrent runs of one date

# Runs of dates, forked by a server that reads one JSON list of runs a line, forks them together,
# SIGKILLs a run that names a ``kill`` (``delay`` seconds after the run printed ``step``), reaps them and
# answers one JSON line of exit codes. A run prints "<unix time> <step>" at each step, the publisher's
# fault points included, into its ``out`` file and onto a pipe the server watches.
RUNS = r'''
import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import sys
import time
import traceback

import pyarrow as pa
import pyarrow.parquet as pq

from scoring import faults
from scoring.config import JobConfig
from scoring.dataset.manifest import Manifest
from scoring.dataset.publisher import TablePublisher
from scoring.dataset.storage import filesystem

SCORES = pa.schema(
    [("customer_id", pa.int64()), ("probability", pa.float64()), ("model_version", pa.string()),
     ("date", pa.date32())]
)
REJECTS = pa.schema([("customer_id", pa.int64()), ("reject_reason", pa.string()), ("date", pa.date32())])
fault_point = faults.at


MARKS = None  # the pipe the server watches a run's steps on


def mark(step):
    line = f"{time.time():.6f} {step}\n"
    sys.stdout.write(line)
    sys.stdout.flush()
    os.write(MARKS, line.encode())


def at(point):
    mark(point)
    fault_point(point)


def touch(path):
    with open(path, "w"):
        pass


def wait_for(*paths):
    deadline = time.time() + 120  # a test that failed never touches them: give up, do not linger
    while not all(os.path.exists(p) for p in paths):
        if time.time() > deadline:
            raise TimeoutError(f"never appeared: {paths}")
        time.sleep(0.002)


def write(directory, schema, columns, rows, parts, date, tag):
    fs, path = filesystem(directory)
    fs.create_dir(path, recursive=True)
    files, start = [], 0
    for k in range(parts):
        n = rows * (k + 1) // parts - start
        chunk = {name: values[start : start + n] for name, values in columns.items()}
        name = f"part-{k:05d}-{tag}.parquet"
        pq.write_table(pa.table({**chunk, "date": [date] * n}, schema), f"{path}/{name}", filesystem=fs)
        files.append({"name": name, "rows": n})
        start += n
    return files


def publish(spec):
    faults.at = at
    if spec.get("start_after"):
        wait_for(spec["start_after"])
    mark("started")
    date = dt.date.fromisoformat(spec["date"])
    config = JobConfig(
        model_uri="models:/churn@champion", input="unused", table=spec["table"], catalog=spec["catalog"],
        date=date,
    )
    publisher = TablePublisher(config, SCORES, REJECTS)
    run = publisher.location
    mark("opened " + run.run_id)
    publisher.prepare()
    mark("prepared")
    if spec.get("prepared"):  # every run of the round has loaded the tables and cleaned the date
        touch(spec["prepared"])
        wait_for(*spec["all_prepared"])
    published = False
    try:
        rows, rejected, first, tag = spec["rows"], spec["rejected"], spec["first_id"], spec["tag"]
        ids = list(range(first, first + rows))
        scores = {
            "customer_id": ids,
            "probability": [(i % 97) / 97 for i in ids],
            "model_version": [spec["model_version"]] * rows,
        }
        files = write(run.staged, SCORES, scores, rows, spec["files"], date, tag)
        rejects = {
            "customer_id": list(range(first + rows, first + rows + rejected)),
            "reject_reason": ["null_feature"] * rejected,
        }
        reject_files = write(run.staged_rejects, REJECTS, rejects, rejected, 2, date, tag)
        mark("written")
        if spec.get("ready"):  # publish when the test says so: every run of the round at once
            touch(spec["ready"])
            wait_for(spec["go"])
        manifest = {
            "run_id": run.run_id,
            "counts": {"input": rows + rejected, "scored": rows, "rejected": rejected},
            "model": {"name": "churn", "version": spec["model_version"], "run_id": tag},
            "rejects": {"by_reason": {"null_feature": rejected}, "rows": rejected, "files": reject_files},
            "output": {"table": spec["table"], "path": run.staged, "rows": rows, "files": files},
            "resources": {"cores": 1, "engine": "arrow"},
        }
        publisher.publish(Manifest.from_json(manifest))
        published = True
        mark("published")
    finally:
        publisher.finish(published)
    mark("finished")


def child(spec, marks):
    global MARKS
    MARKS = marks
    sys.stdout = open(spec["out"], "w", buffering=1)
    sys.stderr = open(spec["err"], "w", buffering=1)
    if spec.get("fault"):
        os.environ[faults.ENV] = spec["fault"]
    code = 0
    try:
        publish(spec)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def step_seen(marks, step, occurrence):
    """When the run printed ``step`` for the ``occurrence``th time; None: it ended before."""
    buffer, seen = b"", 0
    while chunk := os.read(marks, 4096):
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            when, name = line.decode().split(" ")[:2]
            seen += name == step
            if name == step and seen == occurrence:
                return float(when)
    return None


def serve():
    import pyiceberg.catalog.sql, pyiceberg.expressions, pyiceberg.io.pyarrow, pyiceberg.table  # noqa

    print("ready", flush=True)
    for line in sys.stdin:
        specs = json.loads(line)
        forked = []
        for spec in specs:
            marks, into = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(marks)
                child(spec, into)
            os.close(into)
            forked.append((pid, time.time(), marks, spec.get("kill")))
        print(json.dumps([[pid, at] for pid, at, _, _ in forked]), flush=True)
        for pid, at, marks, kill in forked:
            if kill is None:
                continue
            # SIGKILLed ``delay`` seconds after its step (after its fork without one). A run that
            # finished first is a zombie until reaped below: it ignores the signal, its pid is its own.
            anchor = at if kill["step"] is None else step_seen(marks, kill["step"], kill["occurrence"])
            if anchor is not None:
                time.sleep(max(0.0, anchor + kill["delay"] - time.time()))
                os.kill(pid, signal.SIGKILL)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid, _, _, _ in forked]
        for _, _, marks, _ in forked:
            os.close(marks)
        print(json.dumps(codes), flush=True)


if __name__ == "__main__":
    serve()
'''

# Where a SIGKILL landed, by the last step the run printed.
LANDINGS = {
    None: "opening",
    "started": "opening",
    "opened": "cleaning",
    "prepared": "writing",
    "written": "before the commits",
    "before-publish": "before the commits",
    "mid-commit 1": "committing the rejects",
    "between-commits": "between the commits",
    "mid-commit 2": "committing the scores",
    "published": "after the commits",
    "finished": "after the commits",
}


@pytest.fixture
def catalog(tmp_path, monkeypatch) -> str:
    """A SQL catalog on SQLite in ``tmp_path``: its variables are in the environment the runs inherit."""
    root = tmp_path / "catalog"
    root.mkdir()
    monkeypatch.setenv("PYICEBERG_CATALOG__LOCAL__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__LOCAL__URI", f"sqlite:///{root}/catalog.db")
    monkeypatch.setenv("PYICEBERG_CATALOG__LOCAL__WAREHOUSE", f"file://{root}/warehouse")
    monkeypatch.delenv(faults.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return CATALOG


@dataclass(frozen=True)
class Version:
    """One version of a date a run publishes: its rows tell it from every other version."""

    tag: str
    model_version: str
    rows: int
    rejected: int
    first_id: int
    date: dt.date = DATE
    files: int = 3

    @property
    def ids(self) -> set[int]:
        return set(range(self.first_id, self.first_id + self.rows))

    @property
    def reject_ids(self) -> set[int]:
        return set(range(self.first_id + self.rows, self.first_id + self.rows + self.rejected))


class Versions(dict):
    """The versions the runs of a test publish, by tag: model versions alternate, row counts differ."""

    def new(self, date: dt.date = DATE) -> Version:
        number = len(self)
        v = Version(
            tag=f"v{number}",
            model_version=str(1 + number % 2),
            rows=150 + 7 * number,
            rejected=3 + number % 5,
            first_id=100_000 * (number + 1),
            date=date,
        )
        self[v.tag] = v
        return v


@dataclass
class Run:
    """One forked run: its version, when it was forked, what it printed, how it ended."""

    version: Version
    started_at: float
    out: Path
    err: Path
    code: int | None = None

    def steps(self) -> list[tuple[float, str]]:
        """The steps it printed, in seconds since it was forked; its two mid-commits numbered."""
        steps, commits = [], 0
        for line in self.out.read_text().splitlines():
            when, _, step = line.partition(" ")
            step = step.split(" ")[0]
            if step == "mid-commit":
                commits += 1
                step = f"mid-commit {commits}"
            steps.append((float(when) - self.started_at, step))
        return steps

    @property
    def run_id(self) -> str:
        return next(line.split(" ")[2] for line in self.out.read_text().splitlines() if " opened " in line)

    @property
    def last_step(self) -> str | None:
        steps = self.steps()
        return steps[-1][1] if steps else None

    def assert_succeeded(self) -> Run:
        assert self.code == 0, self.err.read_text()[-3000:]
        return self


class Runs:
    """The fork server: runs of dates, one round at a time."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "runs"
        self.root.mkdir()
        script = tmp_path / "publish_runs.py"
        script.write_text(RUNS)
        env = {k: v for k, v in os.environ.items() if k != faults.ENV}
        self.server = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.server.stdout.readline().strip() == "ready"
        self.count = 0

    def spec(self, v: Version, **extra) -> dict:
        self.count += 1
        return {
            "table": TABLE,
            "catalog": CATALOG,
            "date": v.date.isoformat(),
            "tag": v.tag,
            "model_version": v.model_version,
            "rows": v.rows,
            "rejected": v.rejected,
            "first_id": v.first_id,
            "files": v.files,
            "out": str(self.root / f"{self.count}-{v.tag}.out"),
            "err": str(self.root / f"{self.count}-{v.tag}.err"),
            **extra,
        }

    def start(self, specs: list[tuple[Version, dict]]) -> list[Run]:
        """Fork the runs together (each a version and its spec); returns as soon as they are forked."""
        self.server.stdin.write(json.dumps([spec for _, spec in specs]) + "\n")
        self.server.stdin.flush()
        forked = json.loads(self.server.stdout.readline())
        return [
            Run(v, at, Path(spec["out"]), Path(spec["err"]))
            for (v, spec), (_, at) in zip(specs, forked, strict=True)
        ]

    def wait(self, runs: list[Run]) -> list[Run]:
        line = self.server.stdout.readline()
        assert line, "the fork server died"
        for run, code in zip(runs, json.loads(line), strict=True):
            run.code = code
        return runs

    def run(self, v: Version, **extra) -> Run:
        """One run of ``v``, waited for."""
        return self.wait(self.start([(v, self.spec(v, **extra))]))[0]

    def close(self) -> None:
        self.server.stdin.close()
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a failed test left runs waiting: the server's group, ours
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()


@pytest.fixture
def runs(tmp_path, catalog):
    server = Runs(tmp_path)
    yield server
    server.close()


def load(name: str = TABLE):
    return open_catalog(CATALOG).load_table(name)


def scan(table, date: dt.date, snapshot_id: int | None = None) -> pa.Table:
    from pyiceberg.expressions import EqualTo

    return table.scan(row_filter=EqualTo("date", date.isoformat()), snapshot_id=snapshot_id).to_arrow()


def assert_one_whole_version(
    versions: dict[str, Version], date: dt.date = DATE, snapshot_id: int | None = None
) -> tuple[Version, dict]:
    """The date as a reader sees it (at the current snapshot by default) is one version, whole.

    Its scores are one version's rows, once each, of one model version, from one run's directory; the
    rejects at the snapshot the scores' summary names are that version's: never another's, never part.

    Returns:
        The version, and the summary of the snapshot that published it.
    """
    scores, rejects = load(), load(REJECTS)
    if snapshot_id is None:
        day = tables.table_day(scores, rejects, "date", date)
        summary, snapshot_id = dict(day.summary), day.snapshot_id
    else:
        summary = scores.metadata.snapshot_by_id(snapshot_id).summary.additional_properties
    v = versions[summary[tables.MODEL_RUN]]
    scored = scan(scores, date, snapshot_id)
    ids = scored["customer_id"].to_pylist()
    assert len(ids) == len(set(ids)) == v.rows == int(summary[tables.ROWS_SCORED])
    assert set(ids) == v.ids
    assert set(scored["model_version"].to_pylist()) == {v.model_version} == {summary[tables.MODEL_VERSION]}
    named = int(summary[tables.REJECTS_SNAPSHOT])
    rejected = scan(rejects, date, named)["customer_id"].to_pylist()
    assert len(rejected) == len(set(rejected)) == v.rejected == int(summary[tables.ROWS_REJECTED])
    assert set(rejected) == v.reject_ids
    files = [f.file_path for f in tables.date_files(scores, "date", date, snapshot_id)]
    files += [f.file_path for f in tables.date_files(rejects, "date", date, named)]
    assert len({os.path.basename(os.path.dirname(path)) for path in files}) == 1  # one run's
    return v, summary


def run_directories(date: dt.date = DATE) -> tuple[set[str], set[str]]:
    """The date's run directories in both tables: (referenced by a snapshot, referenced by none)."""
    referenced, unreferenced = set(), set()
    for table in (load(), load(REJECTS)):
        files = {os.path.dirname(path.removeprefix("file://")) for path in tables.referenced_files(table)}
        root = Path(table.location().removeprefix("file://")) / "data" / f"date={date}"
        for directory in root.glob(f"{tables.RUN_PREFIX}*"):
            (referenced if str(directory) in files else unreferenced).add(str(directory))
    return referenced, unreferenced


def rejects_run() -> str:
    """The version whose rejects the rejects table's current snapshot committed."""
    return load(REJECTS).current_snapshot().summary.additional_properties[tables.MODEL_RUN]


# The windows of a run's life a kill is drawn in, each from the step that opens it to the next one.
WINDOWS = [
    (None, "opened"),  # opening the catalog and the tables (from the fork)
    ("opened", "prepared"),  # cleaning the date, taking the lease
    ("prepared", "written"),  # writing the files
    ("written", "mid-commit 1"),  # the manifest, planning the rejects' commit
    ("mid-commit 1", "between-commits"),  # committing the rejects
    ("between-commits", "mid-commit 2"),  # planning the scores' commit
    ("mid-commit 2", "published"),  # committing the scores
    ("published", "finished"),  # after the commits
]


def kill_at(step: str | None, delay: float) -> dict:
    """A run's ``kill``: ``delay`` seconds after it printed ``step`` (a mid-commit numbered)."""
    name, occurrence = (step, 1) if step is None or not step[-1].isdigit() else step.rsplit(" ", 1)
    return {"step": name, "occurrence": int(occurrence), "delay": delay}


def test_publisher_sigkilled_at_random_moments_leaves_one_whole_version(runs, report):
    """At least 20 SIGKILLs, each at a random moment of a run: the date is always one version, whole.

    A run's life is cut into windows by its steps (opening the tables, cleaning the date, writing, the
    manifest, the rejects' commit, planning the scores', the scores' commit, after); each kill takes
    the next window and a delay in it drawn (seeded) over that window's length as a finished run
    measured it. A kill before the scores' commit keeps the old version; after it, the new one is
    published, whole; the rejects the scores name are always that version's. The next run removes
    what a killed run left (its lease names a dead process).
    """
    began = time.monotonic()
    rng = random.Random(20261101)
    versions = Versions()
    runs.run(versions.new()).assert_succeeded()  # creates the tables
    calibration = runs.run(versions.new()).assert_succeeded()
    current, _ = assert_one_whole_version(versions)
    assert current == calibration.version
    at = {step: t for t, step in reversed(calibration.steps())}  # the first time of each step
    at[None] = 0.0
    lengths = [at[end] - at[step] + (0.002 if end == "finished" else 0.0) for step, end in WINDOWS]

    landed: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    leftovers: set[str] = set()
    rejects_ahead = finished_first = 0
    while landed.total() < KILLS:
        assert time.monotonic() - began < BUDGET_S, f"{landed.total()} kills in {BUDGET_S} s: {landed}"
        window = (landed.total() + finished_first) % len(WINDOWS)
        delay = rng.uniform(0.0, lengths[window])
        run = runs.run(v := versions.new(), kill=kill_at(WINDOWS[window][0], delay))
        if run.code == 0:
            finished_first += 1  # it finished before its moment came
        else:
            assert run.code == -signal.SIGKILL, run.err.read_text()[-3000:]
            landed[LANDINGS[run.last_step]] += 1

        now, _ = assert_one_whole_version(versions)
        steps = {step for _, step in run.steps()}
        assert now in (current, v)
        if "mid-commit 2" not in steps:  # the scores' commit was never tried
            assert now == current
        if "published" in steps:
            assert now == v
        outcomes["new published" if now == v else "old kept"] += 1
        if now == current and rejects_run() == v.tag:
            rejects_ahead += 1  # its rejects committed, its scores not: readers still pair the old ones
        current = now
        leftovers |= run_directories()[1]

    # One more killed with its files written, then a run that finishes: it removes every leftover.
    killed = runs.run(versions.new(), fault="kill-driver:before-publish")
    assert killed.code == -signal.SIGKILL
    assert assert_one_whole_version(versions)[0] == current
    left = run_directories()[1]
    assert tables.RUN_PREFIX + killed.run_id.rsplit("--", 1)[1] in {Path(d).name for d in left}
    leftovers |= left
    final = runs.run(versions.new()).assert_succeeded()
    assert assert_one_whole_version(versions)[0] == final.version
    assert run_directories()[1] == set()
    assert not [d for d in leftovers if Path(d).exists()]
    seconds = time.monotonic() - began

    where = ", ".join(f"{n} {landing}" for landing, n in landed.most_common())
    report(
        f"table faults | {landed.total()} publisher runs SIGKILLed in {seconds:.0f} s ({where}; "
        f"{finished_first} finished first): {outcomes['old kept']} kept the old version, "
        f"{outcomes['new published']} published the new one, never a mix ({rejects_ahead} had "
        f"committed their rejects alone); {len(leftovers)} leftover run directories removed by later runs"
    )


def round_specs(runs: Runs, barrier: Path, round_versions: list[Version]) -> list[tuple[Version, dict]]:
    """Runs that start together, each publishing its version when the test touches ``barrier/go``.

    Each loads the tables and cleans the date before any writes (the ``prepared`` barrier), then
    writes its files and waits: every run of the round commits at the same moment.
    """
    barrier.mkdir()
    prepared = [str(barrier / f"{v.tag}.prepared") for v in round_versions]
    return [
        (v, runs.spec(v, prepared=mine, all_prepared=prepared, ready=str(barrier / f"{v.tag}.ready"),
                      go=str(barrier / "go")))
        for v, mine in zip(round_versions, prepared, strict=True)
    ]  # fmt: skip


def release(barrier: Path, round_versions: list[Version], timeout: float = 180) -> None:
    """Touch ``barrier/go`` once every run of the round has written its files.

    The bound is generous: two runs starting at once on 2 cores shared with the rest of the suite took
    over 60 s once.
    """
    deadline = time.monotonic() + timeout
    while not all((barrier / f"{v.tag}.ready").exists() for v in round_versions):
        assert time.monotonic() < deadline, "a run of the round never got ready"
        time.sleep(0.005)
    (barrier / "go").touch()


def test_two_runs_of_one_date_at_once_the_later_commit_wins_whole(runs, tmp_path, report):
    """Two runs of a date started together and committing at the same moment, four times.

    Outcome: the later commit wins, whole. Both runs loaded the tables before either committed, so the
    catalog refuses the later commit of each table (its base moved); it re-reads the table, replaces
    the winner's files of the date with its own and records the run it replaced
    (``scoring.replaced-run``). The history lists both versions, each whole at its own snapshot, the
    later one current. The two tables' commits may interleave in either order (one run's rejects
    committed last, the other's scores): readers take the rejects the scores name, the same run's.
    """
    versions = Versions()
    runs.run(versions.new()).assert_succeeded()
    crossed = 0
    for number in range(ROUNDS):
        pair = [versions.new(), versions.new()]
        barrier = tmp_path / f"round-{number}"
        started = runs.start(round_specs(runs, barrier, pair))
        release(barrier, pair)
        for run in runs.wait(started):
            run.assert_succeeded()

        now, summary = assert_one_whole_version(versions)
        by_id = {run.run_id: run.version for run in started}
        earlier, later = tables.history(load(), DATE)[-2:]
        assert {earlier.run_id, later.run_id} == set(by_id)
        assert later.current and not earlier.current
        assert now == by_id[later.run_id] and summary[tables.RUN_ID] == later.run_id
        assert summary[tables.REPLACED_RUN] == earlier.run_id  # it conflicted, and replaced it whole
        assert assert_one_whole_version(versions, DATE, earlier.snapshot_id)[0] == by_id[earlier.run_id]
        # The rejects' commits: also one after the other, the later recording the earlier.
        rejects = [s.summary.additional_properties for s in load(REJECTS).metadata.snapshots[-2:]]
        assert {r[tables.RUN_ID] for r in rejects} == set(by_id)
        assert rejects[1][tables.REPLACED_RUN] == rejects[0][tables.RUN_ID]
        crossed += rejects[1][tables.RUN_ID] != later.run_id
    report(
        f"table faults | {ROUNDS} rounds of two runs of one date committing at once: the later commit "
        f"won whole each time, recording the one it replaced ({crossed} with the tables' commits crossed)"
    )


def test_runs_of_two_dates_at_once_both_publish(runs, tmp_path):
    """Runs of two dates committing at the same moment: both succeed; neither replaces the other.

    The later commit of each table finds it moved by the other date's and re-applies its own over it;
    the catalog's conflict is about the date: none is recorded, and both dates stay whole.
    """
    versions = Versions()
    runs.run(versions.new(DATE)).assert_succeeded()
    for number in range(2):
        pair = [versions.new(DATE), versions.new(OTHER_DATE)]
        barrier = tmp_path / f"round-{number}"
        started = runs.start(round_specs(runs, barrier, pair))
        release(barrier, pair)
        for run in runs.wait(started):
            run.assert_succeeded()
            assert "replacing its version" not in run.err.read_text()
        for v in pair:
            now, summary = assert_one_whole_version(versions, v.date)
            assert now == v and tables.REPLACED_RUN not in summary
        snapshots = load().metadata.snapshots
        assert snapshots[-1].parent_snapshot_id == snapshots[-2].snapshot_id  # one after the other


def test_a_run_starting_while_another_of_the_date_writes_leaves_its_files(runs, tmp_path):
    """A run of the date starting while another (live, on this host) has written its files.

    The later run's ``prepare`` cleans the date: it must leave the live run's directories alone,
    in the scores' table (its lease is there) and in the rejects' table alike; the live run then
    publishes its version, whole, over the later run's.
    """
    versions = Versions()
    runs.run(versions.new()).assert_succeeded()
    first, second = versions.new(), versions.new()
    ready, go, later = tmp_path / "first.ready", tmp_path / "go", tmp_path / "second.start"
    started = runs.start(
        [
            (first, runs.spec(first, ready=str(ready), go=str(go))),
            (second, runs.spec(second, start_after=str(later))),
        ]
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    later.touch()  # the second run starts, cleans the date, publishes; the first waits, written
    while not (started[1].out.exists() and " finished" in started[1].out.read_text()):
        assert time.monotonic() < deadline, started[1].err.read_text()[-3000:]
        time.sleep(0.005)
    go.touch()
    first_run, second_run = runs.wait(started)
    second_run.assert_succeeded()
    first_run.assert_succeeded()
    now, summary = assert_one_whole_version(versions)
    assert now == first and summary[tables.REPLACED_RUN] == second_run.run_id
    assert run_directories()[1] == set()


def test_a_run_that_found_no_table_gets_the_one_a_concurrent_run_created(catalog):
    """Two first runs of a new table: the later one looked before the first created it.

    With real processes (two runs of two dates, both finding no table) one of them fails in most
    tries; here the interleaving is made certain: the later run's first look finds no table.
    """
    schema = pa.schema([("customer_id", pa.int64()), ("date", pa.date32())])
    late = open_catalog(CATALOG)
    load_table, looked = late.load_table, []

    def look_before_it_was_created(identifier):
        if not looked:
            looked.append(identifier)
            raise NoSuchTableError(identifier)
        return load_table(identifier)

    late.load_table = look_before_it_was_created
    first = tables.ensure_table(open_catalog(CATALOG), TABLE, schema, "date")
    assert tables.ensure_table(late, TABLE, schema, "date").metadata.table_uuid == first.metadata.table_uuid


def test_a_lease_cut_short_by_a_kill_is_a_dead_run(runs):
    """A run SIGKILLed between creating its lease and writing it leaves an empty ``_run.json``.

    The next run's cleaning must take it for a dead run's (no process can be named in it), not fail.
    """
    versions = Versions()
    runs.run(versions.new()).assert_succeeded()
    leftover = Path(load().location().removeprefix("file://")) / "data" / f"date={DATE}" / "run-0123456789ab"
    leftover.mkdir()
    (leftover / tables.LEASE_FILE).write_text("")
    removed = tables.clean_date(load(), load(REJECTS), f"date={DATE}")
    assert [Path(d) for d in removed] == [leftover] and not leftover.exists()


def run_cli(args: list[str], fault: str | None = None, trace: Path | None = None) -> subprocess.Popen:
    """The real job in a process of its own (``tests/batch/test_faults.py``'s way).

    Args:
        args: The command line, less ``scoring``.
        fault: A ``faults.ENV`` value, if any.
        trace: Where the job notes each fault point it passes (``faults.TRACE_ENV``), if anywhere.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_GATEWAY_PORT")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    if fault:
        env[faults.ENV] = fault
    if trace:
        env[faults.TRACE_ENV] = str(trace)
    return subprocess.Popen(
        [str(BIN / "scoring"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a SIGKILL reaches Spark's JVM too
    )


def score_args(input_dir: Path, model_uri: str) -> list[str]:
    return [
        "score", "--model-uri", model_uri, "--input", str(input_dir), "--table", TABLE,
        "--catalog", CATALOG, "--date", DATE.isoformat(), "--id-column", "customer_id",
        "--keep-columns", "region",
    ]  # fmt: skip


def assert_job_version_whole(customers: dict, model_version: str) -> dict:
    """The date now: the real job's version of ``model_version``, every input id once, 3 of them rejected."""
    scores, rejects = load(), load(REJECTS)
    summary = tables.table_day(scores, rejects, "date", DATE).summary
    scored = scan(scores, DATE)
    rejected = scan(rejects, DATE, int(summary[tables.REJECTS_SNAPSHOT]))
    ids = scored["customer_id"].to_pylist() + rejected["customer_id"].to_pylist()
    assert len(ids) == len(set(ids)) == int(summary[tables.ROWS_INPUT])
    assert set(ids) == set(customers[DATE]["customer_id"])
    assert rejected.num_rows == int(summary[tables.ROWS_REJECTED]) == 3
    assert scored.num_rows == int(summary[tables.ROWS_SCORED])
    assert set(scored["model_version"].to_pylist()) == {model_version} == {summary[tables.MODEL_VERSION]}
    return summary


def test_real_job_killed_between_its_commits_keeps_the_old_version_a_rerun_publishes(
    spark, registry, customers, catalog, tmp_path, report
):
    """The job (Spark, ``scoring score --table``) SIGKILLed between its rejects' and scores' commits.

    Its rejects' commit landed alone: readers still read the old version whole (the scores name the
    old rejects' snapshot). The rerun removes the killed run's scores directory (files, manifest, lease
    of a dead process) and publishes the new version.
    """
    frame = customers[DATE].copy()
    frame.loc[frame.index[:3], "income"] = None  # rejected, under the 1% the job tolerates
    input_dir = tmp_path / "input"
    demo.write_partitioned(frame, input_dir, DATE, files=2)
    assert main(score_args(input_dir, CHAMPION)) == 0
    before = assert_job_version_whole(customers, registry["onnx"])

    job = run_cli(score_args(input_dir, SKLEARN), fault="kill-driver:between-commits")
    _, stderr = job.communicate(timeout=300)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGKILL)  # Spark's JVM, if it outlived its driver
    assert job.returncode == -signal.SIGKILL, stderr[-3000:]

    assert assert_job_version_whole(customers, registry["onnx"]) == before
    killed = load(REJECTS).current_snapshot().summary.additional_properties
    assert killed[tables.RUN_ID] != before[tables.RUN_ID]  # its rejects were committed, alone
    assert killed[tables.MODEL_VERSION] == registry["sklearn"] and killed[tables.ROWS_REJECTED] == "3"
    referenced, unreferenced = run_directories()
    name = tables.RUN_PREFIX + killed[tables.RUN_ID].rsplit("--", 1)[1]
    assert {Path(d).name for d in unreferenced} == {name}  # its scores: files, manifest, lease
    assert name in {Path(d).name for d in referenced}  # its rejects, which a snapshot references
    leftover = next(iter(unreferenced))
    assert json.loads((Path(leftover) / tables.LEASE_FILE).read_text())["pid"] == job.pid

    assert main(score_args(input_dir, SKLEARN)) == 0
    after = assert_job_version_whole(customers, registry["sklearn"])
    assert after[tables.RUN_ID] not in (before[tables.RUN_ID], killed[tables.RUN_ID])
    assert run_directories()[1] == set() and not Path(leftover).exists()
    report(
        "table faults | real job SIGKILLed between its commits: the old version read whole, its "
        "rejects' commit unpaired; the rerun published the new version and removed its leftovers"
    )


# The real job's life from its first write, cut at the points it passes (``faults.at``), in order.
JOB_POINTS = ["writing", "before-publish", "mid-commit 1", "between-commits", "mid-commit 2"]
JOB_KILLS = 20  # SIGKILLs of the real job that land in its write or commit, at least
JOB_BUDGET_S = 600  # the loop's bound: a run costs 3-6 s here, most of it before its first write


def traced_points(trace: Path) -> list[tuple[float, str]]:
    """The points a traced job passed, with their times; its two mid-commits numbered."""
    points, commits = [], 0
    for line in trace.read_text().splitlines() if trace.exists() else []:
        when, point = line.split(" ", 1)
        if point == "mid-commit":
            commits += 1
            point = f"mid-commit {commits}"
        points.append((float(when), point))
    return points


def kill_job(args: list[str], trace: Path, point: str, delay: float | None) -> tuple[int, list[str], str]:
    """Start the job; SIGKILL its process group ``delay`` seconds after it passed ``point`` (None: never).

    Returns:
        Its exit code (``-SIGKILL`` if the kill came first), the points it passed and its stderr.
    """
    job = run_cli(args, trace=trace)
    deadline = time.monotonic() + 120
    while job.poll() is None and point not in (passed := dict((p, t) for t, p in traced_points(trace))):
        assert time.monotonic() < deadline, f"the job never passed {point}"
        time.sleep(0.001)
    if job.poll() is None and delay is not None:
        time.sleep(max(0.0, passed[point] + delay - time.time()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)  # the driver and its local workers
    _, stderr = job.communicate(timeout=120)
    return job.returncode, [p for _, p in traced_points(trace)], stderr


def test_real_job_sigkilled_at_random_moments_of_its_write_and_commit(
    registry, customers, catalog, tmp_path, report
):
    """At least 20 SIGKILLs of the job (``scoring score --table``) at random moments of its write and
    commit: the date is always exactly the old version or the new, whole; the next run cleans up.

    A finished run's trace cuts its life from its first write to its exit into windows at the points
    it passes (``JOB_POINTS``); each kill takes the next window and a moment in it drawn (seeded) over
    that window's length, and the killed run's trace says where it landed. Runs alternate between two
    model versions, so that the date's version tells which run published it.
    """
    began = time.monotonic()
    rng = random.Random(20261208)
    frame = customers[DATE].copy()
    frame.loc[frame.index[:3], "income"] = None  # rejected, under the 1% the job tolerates
    input_dir = tmp_path / "input"
    demo.write_partitioned(frame, input_dir, DATE, files=2)
    uris = {registry["onnx"]: CHAMPION, registry["sklearn"]: SKLEARN}
    other = {registry["onnx"]: registry["sklearn"], registry["sklearn"]: registry["onnx"]}

    calibration = tmp_path / "calibration.trace"
    code, points, stderr = kill_job(score_args(input_dir, CHAMPION), calibration, "writing", None)
    exited = time.time()
    assert code == 0 and points == JOB_POINTS, stderr[-3000:]
    current = assert_job_version_whole(customers, registry["onnx"])[tables.MODEL_VERSION]
    times = [t for t, _ in traced_points(calibration)] + [exited]
    lengths = [end - start for start, end in itertools.pairwise(times)]

    landed: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    finished_first = 0
    while landed.total() < JOB_KILLS:
        assert time.monotonic() - began < JOB_BUDGET_S, (
            f"{landed.total()} kills in {JOB_BUDGET_S} s: {landed}"
        )
        window = (landed.total() + finished_first) % len(JOB_POINTS)
        target = other[current]
        trace = tmp_path / f"run-{landed.total() + finished_first}.trace"
        delay = rng.uniform(0, lengths[window])
        code, points, stderr = kill_job(score_args(input_dir, uris[target]), trace, JOB_POINTS[window], delay)
        if code == 0:
            finished_first += 1  # it finished before its moment came
        else:
            assert code == -signal.SIGKILL, stderr[-3000:]
            landed[points[-1]] += 1

        now = load().current_snapshot().summary.additional_properties[tables.MODEL_VERSION]
        assert now in (current, target)
        assert_job_version_whole(customers, now)
        if "mid-commit 2" not in points:  # the scores' commit was never tried: the old version stands
            assert now == current
        if code == 0:
            assert now == target
        outcomes["new published" if now == target else "old kept"] += 1
        current = now

    assert main(score_args(input_dir, uris[other[current]])) == 0
    assert_job_version_whole(customers, other[current])
    assert run_directories()[1] == set()  # every killed run's files, manifest and lease removed
    where = ", ".join(f"{landed[point]} after {point}" for point in JOB_POINTS if landed[point])
    report(
        f"table faults | real job SIGKILLed {landed.total()} times at random moments of its write and "
        f"commit in {time.monotonic() - began:.0f} s ({where}; {finished_first} finished first): "
        f"{outcomes['old kept']} kept the old version, {outcomes['new published']} published the new "
        "one, never a mix; the next run removed every leftover"
    )
