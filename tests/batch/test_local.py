"""The local executor's parts: its pool of worker processes, the shape it takes from a master, its listing."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.batch import local
from scoring.batch.arrow_pass import Slice, SliceResult
from scoring.batch.listing import partition_files
from scoring.batch.local import available_cores, pool_shape
from scoring.batch.pool import SliceFailed, SlicePool

DATE = dt.date(2026, 11, 1)


@dataclass(frozen=True)
class ScriptedPass:
    """An Arrow pass whose slices do what their first file's name says (pickled to the workers)."""

    markers: str

    def score_slice(self, piece: Slice) -> SliceResult:
        what = piece.parts[0][0]
        if what == "fails":
            raise ValueError("slice refused")
        if what == "dies" or (what == "dies-once" and self._first(piece)):
            os.kill(os.getpid(), signal.SIGKILL)
        if what == "hangs":  # until killed
            signal.pause()
        if what == "onnx?":  # ``rejected``: whether this worker has imported onnx
            return SliceResult(piece.index, piece.rows, int("onnx" in sys.modules))
        return SliceResult(piece.index, piece.rows, os.getpid())  # ``rejected``: who ran it

    def _first(self, piece: Slice) -> bool:
        try:
            os.close(os.open(f"{self.markers}/{piece.index}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


def slices(*names: str) -> list[Slice]:
    return [Slice(i, ((name, (0,)),), 10 * (i + 1)) for i, name in enumerate(names)]


def test_every_slice_runs_once_to_success_and_a_killed_worker_is_replaced(tmp_path):
    done = []
    with SlicePool(2) as pool:
        first = {w.process.pid for w in pool._workers}
        results = pool.run(
            ScriptedPass(str(tmp_path)), slices("a", "dies-once", "b", "dies-once", "c"), done.append
        )
        now = {w.process.pid for w in pool._workers}
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert [results[i].scored for i in range(5)] == [10, 20, 30, 40, 50]
    assert sorted(r.index for r in done) == [0, 1, 2, 3, 4]
    assert sorted(os.listdir(tmp_path)) == ["1", "3"]  # each killed once, then retried on a fresh worker
    # A killed worker is replaced in its place: whichever slots the two kills hit, one at least is new.
    assert now - first


def test_a_slice_that_always_fails_fails_the_run_with_its_error_after_every_attempt(tmp_path, caplog):
    refused = pytest.raises(ValueError, match="slice refused")
    with (
        SlicePool(2, max_failures=3) as pool,
        refused,
        caplog.at_level("WARNING", logger="scoring.batch.pool"),
    ):
        pool.run(ScriptedPass(str(tmp_path)), slices("a", "fails", "b"))
    assert caplog.text.count("slice 1 failed") == 2  # attempts 1 and 2 retried; the 3rd fails the run


def test_a_failed_run_kills_the_workers_still_running_a_slice(tmp_path):
    pool = SlicePool(2, max_failures=1)
    with pool, pytest.raises(ValueError, match="slice refused"):
        pool.run(ScriptedPass(str(tmp_path)), slices("hangs", "fails"))
    # Killed before the run goes on (to delete its staging): nothing of theirs writes after.
    assert all(w.process.poll() is not None for w in pool._workers)


def test_a_worker_dead_while_idle_is_replaced(tmp_path, caplog):
    with SlicePool(2) as pool, caplog.at_level("WARNING", logger="scoring.batch.pool"):
        idle = pool._workers[0].process
        idle.kill()
        idle.wait()
        results = pool.run(ScriptedPass(str(tmp_path)), slices("a", "b", "c"))
    assert sorted(results) == [0, 1, 2]
    assert "a worker died idle (exit code -9)" in caplog.text


def test_a_slice_whose_worker_always_dies_fails_the_run_naming_it(tmp_path):
    with (
        SlicePool(1, max_failures=2) as pool,
        pytest.raises(SliceFailed, match=r"slice 0 \(dies, \.\.\.\).*-9"),
    ):
        pool.run(ScriptedPass(str(tmp_path)), slices("dies"))


def refuse() -> None:
    raise ValueError("call refused")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_once(markers: str) -> int:
    """Kills its worker on the first call; answers the pid of the worker that runs it after."""
    try:
        os.close(os.open(f"{markers}/called", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return os.getpid()
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("killed")


def test_a_call_runs_on_a_worker_and_its_error_comes_back_raised(tmp_path):
    with SlicePool(2) as pool:
        assert pool.call(os.getpid) not in (os.getpid(), None)
        with pytest.raises(ValueError, match="call refused"):
            pool.call(refuse)
        results = pool.run(ScriptedPass(str(tmp_path)), slices("a", "b"))  # the pool is whole after
    assert sorted(results) == [0, 1]


def test_a_call_whose_worker_dies_is_made_once_more_on_a_fresh_one(tmp_path):
    with SlicePool(1) as pool:
        first = pool._workers[0].process.pid
        assert pool.call(die_once, str(tmp_path)) not in (first, os.getpid())
        with pytest.raises(SliceFailed, match=r"die: its worker process died \(exit code -9\)"):
            pool.call(die)
        assert pool.run(ScriptedPass(str(tmp_path)), slices("a"))[0].scored == 10


def test_only_the_worker_that_probes_imports_onnx(tmp_path):
    # The others get an ONNX classifier's labels with the pass (``ScorerSpec.classes``): 0.5 s saved each.
    with SlicePool(2) as pool:
        results = pool.run(ScriptedPass(str(tmp_path)), slices("onnx?", "onnx?"))
    assert [results[0].rejected, results[1].rejected] == [1, 0]


@pytest.mark.parametrize(
    ("master", "shape"),
    [
        ("local", (1, 4)),
        ("local[3]", (3, 4)),
        ("local[2,2]", (2, 2)),
        ("local[*]", (None, 4)),
        (None, (None, 4)),
    ],
)
def test_the_pool_takes_its_shape_from_a_local_master(master, shape):
    assert pool_shape(master) == (shape[0] or available_cores(), shape[1])


@pytest.mark.parametrize(
    ("cpu_max", "cores"), [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None)]
)
def test_a_containers_cpu_quota_bounds_the_workers(tmp_path, monkeypatch, cpu_max, cores):
    quota = tmp_path / "cpu.max"
    quota.write_text(cpu_max)
    monkeypatch.setattr(local, "_CGROUP_CPU_MAX", str(quota))
    affinity = len(os.sched_getaffinity(0))
    assert available_cores() == min(cores or affinity, affinity)


def _file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [1]}), path)


def test_the_listing_finds_what_sparks_file_index_reads(tmp_path):
    root = tmp_path / "in"
    for name in ("part-1.parquet", "part-0.parquet", "_SUCCESS", ".part-0.crc", "x._COPYING_"):
        _file(root / f"date={DATE}" / name)
    _file(root / "date=2026-10-31" / "part-0.parquet")
    assert partition_files(str(root), "date", DATE) == [
        f"file:{root}/date={DATE}/part-0.parquet",
        f"file:{root}/date={DATE}/part-1.parquet",
    ]
    assert partition_files(str(root / f"date={DATE}" / "part-1.parquet"), "date", DATE) == [
        f"file:{root}/date={DATE}/part-1.parquet"
    ]
    flat = tmp_path / "flat"
    _file(flat / "a.parquet")
    assert partition_files(str(flat), "date", DATE) == [f"file:{flat}/a.parquet"]


def test_the_listing_leaves_to_spark_what_only_spark_can_say(tmp_path):
    assert partition_files(str(tmp_path / "missing"), "date", DATE) is None
    _file(tmp_path / "other" / "date=2026-10-31" / "part-0.parquet")
    assert partition_files(str(tmp_path / "other"), "date", DATE) is None  # no directory for the date
    _file(tmp_path / "nested" / f"date={DATE}" / "region=eu" / "part-0.parquet")
    assert partition_files(str(tmp_path / "nested"), "date", DATE) is None  # region becomes a column
    _file(tmp_path / "by-day" / "day=2026-11-01" / "part-0.parquet")
    assert partition_files(str(tmp_path / "by-day"), "date", DATE) is None  # another partition column
    assert partition_files("s3a://bucket/in", "date", DATE) is None  # Spark's connector reads s3a://


def test_a_script_without_a_main_guard_starts_its_workers_once(tmp_path):
    """The workers are plain interpreters: a caller's script is not run again in each of them."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_local import ScriptedPass, slices\n"
        "from scoring.batch.pool import SlicePool\n"
        "print('script started', flush=True)\n"
        "with SlicePool(2) as pool:\n"
        f"    print(len(pool.run(ScriptedPass({str(tmp_path)!r}), slices('a', 'b', 'c'))))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["script started", "3"]
