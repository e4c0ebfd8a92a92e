"""The job's configuration: one place for each default, and flags derived from its fields."""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.cli import build_parser, config_from_args
from scoring.config import DUPLICATE_ID_ACTIONS, ENGINES, EXECUTORS, SCORES, JobConfig, flag
from scoring.lineup import Lineup
from scoring.model.predictors import BACKENDS, DEVICES

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
COLUMNS = st.lists(NAMES, min_size=1, max_size=3).map(tuple)
PATHS = st.from_regex(r"(s3://bucket/)?[a-z][a-z0-9_/=.-]{0,30}", fullmatch=True)


@st.composite
def configs(draw: st.DrawFn) -> JobConfig:
    """Any configuration a user can start a job with (``--master`` aside: ``to_cli_args`` drops it)."""
    table = draw(st.booleans())
    return JobConfig(
        model_uri=draw(st.sampled_from(["models:/credit@champion", "models:/credit/3", "model.onnx"])),
        input=draw(PATHS),
        output=None if table else draw(PATHS),
        table=draw(st.builds("{}.{}".format, NAMES, NAMES)) if table else None,
        catalog=draw(st.none() | NAMES) if table else None,
        date=draw(st.dates()),
        id_columns=draw(COLUMNS),
        partition_column=draw(NAMES),
        keep_columns=draw(st.just(()) | COLUMNS),
        batch_size=draw(st.integers(1, 10**7)),
        backend=draw(st.sampled_from(BACKENDS)),
        device=draw(st.sampled_from(DEVICES)),
        scores=draw(st.sampled_from(SCORES)),
        features=draw(st.none() | COLUMNS),
        threads=draw(st.none() | st.integers(1, 64)),
        max_reject_fraction=draw(st.floats(0.0, 1.0)),
        on_duplicate_id=draw(st.sampled_from(DUPLICATE_ID_ACTIONS)),
        skip_corrupt_files=draw(st.booleans()),
        lineup=draw(st.just(Lineup()) | st.builds(lambda t: Lineup(decision_threshold=t), st.floats(0, 1))),
        progress_seconds=draw(st.floats(0.0, 3600.0)),
        report=draw(st.booleans()),
        engine=draw(st.sampled_from(ENGINES)),
        executor=draw(st.sampled_from(EXECUTORS)),
        cost_estimate=draw(st.none() | st.dictionaries(NAMES, st.floats(0, 1e6), max_size=3)),
    )


@settings(max_examples=200, deadline=None)
@given(configs())
def test_the_flags_a_job_is_started_with_give_back_its_configuration(config):
    parsed = build_parser().parse_args(["score", *config.to_cli_args()])
    assert config_from_args(parsed) == config


def test_every_field_is_a_flag_of_the_job_with_the_fields_default():
    parser = build_parser().parse_args(["score", "--model-uri", "m", "--input", "i", "--output", "o",
                                        "--date", "2026-11-01"])  # fmt: skip
    for field in dataclasses.fields(JobConfig):
        if field.name == "lineup":  # its own flags (``Lineup.to_cli_args``)
            continue
        assert hasattr(parser, field.name), f"no flag gives JobConfig.{field.name}"
        if field.default is not dataclasses.MISSING and field.name != "output":
            assert getattr(parser, field.name) == field.default, f"{flag(field.name)}'s default differs"


def test_a_default_configuration_is_started_with_the_flags_that_name_the_run_only():
    config = JobConfig(model_uri="models:/m@a", input="in", output="out", date=dt.date(2026, 11, 1))
    assert config.to_cli_args() == ["--model-uri", "models:/m@a", "--input", "in", "--output", "out",
                                    "--date", "2026-11-01"]  # fmt: skip
