"""The run report: the job's two-date run gets a ``_report.html`` that shows the manifest's counts and
the validator's PSI, fetches nothing, and renders in headless Chromium with its plots."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATE, OTHER_DATE, run_score

from scoring import demo
from scoring.cli import main
from scoring.dataset import reading
from scoring.dataset.destination import Day
from scoring.dataset.manifest import Manifest
from scoring.dataset.report import (
    HISTOGRAM_BINS,
    REPORT_FILE,
    SCATTER_POINTS,
    challenger_scores,
    drift_histogram,
)
from scoring.dataset.validate import population_stability_index, psi_bins, validate_partition

CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
SKLEARN = f"models:/{demo.MODEL_NAME}@sklearn"


@pytest.fixture(scope="module")
def output(spark, registry, tmp_path_factory) -> Path:
    """Two dates published by the real job, with a challenger; the job writes each date's report.

    3,000 rows a date: the demo data lacks a few incomes, so some rows are rejected.
    """
    input_dir = tmp_path_factory.mktemp("report-input")
    for date in (DATE, OTHER_DATE):
        frame = demo.spoil(demo.make_customers(3_000, date, seed=5), 0.003, seed=date.toordinal())
        demo.write_partitioned(frame, input_dir, date, files=2)
    root = tmp_path_factory.mktemp("reported")
    for date in (DATE, OTHER_DATE):
        code = run_score(CHAMPION, input_dir, root, "--challenger", f"sk={SKLEARN}", "--keep-columns",
                         "region,segment", date=date)  # fmt: skip
        assert code == 0
    return root


def figures(page: str) -> dict[str, str]:
    """The report's figures by their ``data-figure`` name, as the page shows them (commas removed)."""
    found = re.findall(r'data-figure="([^"]+)"(?: data-value="([^"]+)")?>([^<]*)<', page)
    return {html.unescape(name): (value or text).replace(",", "") for name, value, text in found}


def manifest_of(output: Path, date) -> dict:
    return json.loads((output / f"date={date}" / "_manifest.json").read_text())


def test_the_job_writes_a_report_with_the_manifests_counts_and_the_validators_psi(output, capsys):
    page = (output / f"date={OTHER_DATE}" / REPORT_FILE).read_text()
    manifest = manifest_of(output, OTHER_DATE)
    shown = figures(page)

    counts = manifest["counts"]
    assert counts["rejected"] > 0  # the demo data lacks some incomes: the reasons table is exercised
    assert (int(shown["input"]), int(shown["scored"]), int(shown["rejected"])) == (
        counts["input"], counts["scored"], counts["rejected"],
    )  # fmt: skip
    for reason, rows in manifest["rejects"]["by_reason"].items():
        assert int(shown[f"rejected:{reason}"]) == rows

    # The PSI is the validator's own figure, to the last digit; `scoring validate --json` says the same.
    report = validate_partition(str(output), OTHER_DATE)
    assert float(shown["psi"]) == report.drift.bins.psi
    assert main(["validate", "--output", str(output), "--date", OTHER_DATE.isoformat(), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["drift"]["psi"] == report.drift.bins.psi
    assert f"PSI {report.drift.bins.psi:.3f} against date={DATE}" in html.unescape(page)
    assert shown["rank-error"] == "0"  # the deciles are exact, and the page says so

    agreement = manifest["challengers"][0]["agreement"]
    assert float(shown["sk:pearson"]) == pytest.approx(agreement["pearson"], rel=1e-3)
    assert float(shown["sk:flip_share"]) == pytest.approx(agreement["flip_share"], rel=1e-3, abs=1e-4)
    assert int(shown["sk:rows"]) == agreement["rows"]
    assert shown["verdict"] == "VALID"
    for check in report.checks:
        assert html.escape(check.detail) in page

    # The first date has nothing to compare with, and says so instead of plotting.
    first = (output / f"date={DATE}" / REPORT_FILE).read_text()
    assert "no earlier published partition" in first and 'data-plot="histogram"' not in first


def test_the_histogram_is_each_whole_day_counted_in_its_bins(output, monkeypatch):
    """Read a few rows at a time, the plotted shares are those of each day's whole score column."""
    monkeypatch.setattr(reading, "READ_BATCH_ROWS", 101)
    drift = validate_partition(str(output), OTHER_DATE).drift
    histogram = drift_histogram(drift)
    np.testing.assert_array_equal(histogram.edges, np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1))  # probabilities
    for date, shares in ((DATE, histogram.previous), (OTHER_DATE, histogram.current)):
        paths = sorted((output / f"date={date}").glob("*.parquet"))
        scores = np.concatenate(
            [pq.read_table(p, columns=["probability"]).column(0).to_numpy() for p in paths]
        )
        np.testing.assert_array_equal(shares, np.histogram(scores, histogram.edges)[0] / len(scores))


def test_the_report_is_self_contained(output):
    page = (output / f"date={OTHER_DATE}" / REPORT_FILE).read_text()
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}", page, re.IGNORECASE), "an external URL"
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b|url\((?!#)|@import", page, re.IGNORECASE)
    plots = re.findall(r'<figure data-plot="([^"]+)"><svg', page)
    assert plots == ["histogram", "psi-bins", "scatter-sk"]


def test_scoring_report_rewrites_the_report_and_refuses_an_unscored_date(output, tmp_path, capsys):
    copy = tmp_path / "out"
    shutil.copytree(output, copy)
    report = copy / f"date={OTHER_DATE}" / REPORT_FILE
    report.unlink()
    assert main(["report", "--output", str(copy), "--date", OTHER_DATE.isoformat()]) == 0
    assert capsys.readouterr().out.strip() == str(report)
    # The same manifest and the same data give the same page (the plots are seeded, the SVG ids salted).
    assert report.read_text() == (output / f"date={OTHER_DATE}" / REPORT_FILE).read_text()

    assert main(["report", "--output", str(copy), "--date", "2026-12-25"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: partition ") and "no _manifest.json" in error and error.count("\n") == 1


def scored_partition(path: Path, rows: int, files: int) -> Path:
    """An A/B partition as the job writes it: the champion's probability is each row's number over rows,
    challenger ``inv``'s is one minus it, challenger ``multi`` predicts classes; a row in three is the
    challenger's variant."""
    path.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        p = part / rows
        table = pa.table({
            "id": part, "prediction": (p > 0.5).astype(np.int64), "probability": p,
            "challenger_inv_prediction": (p < 0.5).astype(np.int64), "challenger_inv_probability": 1 - p,
            "challenger_multi_prediction": pa.array(np.where(p > 0.3, "b", "a")),
            "variant": pa.array(np.where(part % 3 == 0, "inv", "champion")),
        })  # fmt: skip
        pq.write_table(table, path / f"part-{i:05d}.snappy.parquet", row_group_size=1_000)
    return path


def day_of(partition: Path) -> Day:
    """A published day of a directory output, whose files are those under ``partition``."""
    return Day(partition.name, str(partition), "", True, "made by the test")


def test_the_scatter_sample_is_uniform_over_the_champions_rows_and_read_a_batch_at_a_time(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(reading, "READ_BATCH_ROWS", 97)  # every sample is drawn across many batches
    challengers, split = [{"name": "inv"}, {"name": "multi"}], {"champion": 0.66, "inv": 0.34}
    manifest = Manifest.from_json({"challengers": challengers, "ab": {"split": split}})
    rows = 12_000
    partition = scored_partition(tmp_path / "big", rows, files=3)

    pairs = challenger_scores(day_of(partition), manifest)

    assert list(pairs) == ["inv"]  # a multiclass challenger has no scatter
    champion, challenger = pairs["inv"]
    assert len(champion) == SCATTER_POINTS == len(set(champion.tolist()))
    np.testing.assert_array_equal(challenger, 1 - champion)  # each pair from one row
    assert not np.any(np.rint(champion * rows) % 3 == 0)  # the champion's own rows only
    # uniform over the three files, not the first rows read: each third holds a third, within 5 sd
    thirds = np.bincount((champion * 3).astype(int), minlength=3)
    assert np.all(np.abs(thirds - SCATTER_POINTS / 3) < 5 * np.sqrt(SCATTER_POINTS * 2 / 9)), thirds
    again = challenger_scores(day_of(partition), manifest)["inv"]
    np.testing.assert_array_equal(again[0], champion)  # seeded: the same page for the same data

    # Fewer rows than points: every champion row, once.
    small = scored_partition(tmp_path / "small", 300, files=2)
    champion, _ = challenger_scores(day_of(small), manifest)["inv"]
    assert sorted(np.rint(champion * 300).astype(int).tolist()) == [i for i in range(300) if i % 3]


def test_psi_bins_add_up_to_the_index():
    rng = np.random.default_rng(3)
    reference, scores = rng.beta(2, 5, 4_000), rng.beta(2.5, 5, 3_000)
    bins = psi_bins(reference, scores)
    assert bins.psi == pytest.approx(population_stability_index(reference, scores), abs=1e-15)
    assert len(bins.contributions) == 10 and np.all(bins.contributions >= 0)
    assert sum(b["expected"] for b in bins.to_json()) == pytest.approx(1.0)
    assert bins.to_json()[0]["low"] is None and bins.to_json()[-1]["high"] is None


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    return found


def render(page: Path, workdir: Path) -> tuple[Path, str, str]:
    """Headless Chromium on ``page``: its screenshot, its DOM after loading, and its console log."""
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", f"--user-data-dir={workdir / 'profile'}", "--enable-logging=stderr",
             "--v=0", "--window-size=1200,2600"]  # fmt: skip
    shot = workdir / "report.png"
    url = page.resolve().as_uri()
    shooting = subprocess.run(
        [*flags, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120
    )
    assert shot.exists(), shooting.stderr[-2000:]
    dumped = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    return shot, dumped.stdout, shooting.stderr + dumped.stderr


def console_errors(log: str) -> list[str]:
    """Script errors Chromium logged for the page."""
    return [
        line for line in log.splitlines() if "CONSOLE" in line and re.search(r"error|uncaught", line, re.I)
    ]


def test_the_report_renders_in_headless_chromium(output, tmp_path):
    from PIL import Image

    shot, dom, log = render(output / f"date={OTHER_DATE}" / REPORT_FILE, tmp_path)
    # The browser built every plot: each figure holds an SVG with drawn paths.
    for plot in ("histogram", "psi-bins", "scatter-sk"):
        figure = re.search(rf'<figure data-plot="{plot}">(.*?)</figure>', dom, re.DOTALL)
        assert figure and "<svg" in figure.group(1) and figure.group(1).count("<path") > 5, plot
    assert console_errors(log) == []

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[1] == 1200
    dark = (pixels < 200).mean()
    assert 0.01 < dark < 0.6, f"{dark:.3%} dark pixels: blank or broken"
    assert pixels.std() > 20


def test_the_console_check_sees_a_script_error(tmp_path):
    """The check above could fail: a page whose script throws is caught by it."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction()</script></body></html>")
    _, _, log = render(page, tmp_path)
    assert console_errors(log), log[-2000:]


def test_the_report_is_written_to_s3_as_html(output, aws):
    """On S3 (moto) the report lands beside the manifest as text/html, so a browser opens it."""
    import boto3
    import pyarrow.fs as pafs

    from scoring.dataset.report import write_report

    boto3.client("s3").create_bucket(Bucket="reports")
    fs, _ = pafs.FileSystem.from_uri("s3://reports/scores")
    pafs.copy_files(str(output), "reports/scores", destination_filesystem=fs)

    uri = write_report("s3://reports/scores", OTHER_DATE)
    assert uri == f"s3://reports/scores/date={OTHER_DATE}/{REPORT_FILE}"
    answer = boto3.client("s3").get_object(Bucket="reports", Key=f"scores/date={OTHER_DATE}/{REPORT_FILE}")
    assert answer["ContentType"] == "text/html; charset=utf-8"
    shown = figures(answer["Body"].read().decode())
    assert float(shown["psi"]) == validate_partition(str(output), OTHER_DATE).drift.bins.psi
    assert int(shown["scored"]) == manifest_of(output, OTHER_DATE)["counts"]["scored"]
