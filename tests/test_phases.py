"""Where a command's time went: the phases of its last line add up to its wall time."""

from __future__ import annotations

import re
import time

import pytest

from orchestrator.run.phases import Phases, command_started, split_work
from trainables.worker.work_times import WorkTimes


def test_two_workers_at_once_count_half_their_summed_seconds():
    # a 10 s lap from t=100: workers asked for at t=101, the first ready at t=103, both busy until
    # t=109 (6 s each: 4 training, 1 measuring, 0.5 writing, 0.5 of their own bookkeeping)
    times = [WorkTimes(103.0, 109.0, 4.0, 1.0, 0.5), WorkTimes(103.5, 109.5, 4.0, 1.0, 0.5)]
    split = split_work(10.0, 100.0, 101.0, times)
    assert split["workers"] == pytest.approx(2.0)
    scale = 7.0 / 12.0  # 7 s of the lap after the first was ready, over 12 s of summed spans
    assert split["training"] == pytest.approx(8.0 * scale)
    assert split["measuring"] == pytest.approx(2.0 * scale)
    assert split["writing"] == pytest.approx(1.0 * scale)
    assert sum(split.values()) < 10.0  # the rest: the lap before t=101, the bookkeeping, Tune's end


def test_one_worker_is_counted_at_its_own_seconds_and_never_more_than_the_lap():
    (one,) = [WorkTimes(102.0, 104.0, 1.5, 0.25, 0.25)]
    assert split_work(5.0, 100.0, 100.5, [one]) == pytest.approx(
        {"workers": 1.5, "training": 1.5, "measuring": 0.25, "writing": 0.25}
    )
    clocks_apart = WorkTimes(90.0, 200.0, 50.0, 30.0, 30.0)  # a worker whose clock is far off
    split = split_work(5.0, 100.0, 100.5, [clocks_apart])
    assert split["workers"] == 0.0 and sum(split.values()) <= 5.0 + 1e-9
    assert split_work(5.0, 100.0, 100.5, []) == {}


def test_laps_cut_the_wall_time_and_the_line_names_what_is_left():
    phases = Phases(time.monotonic())
    time.sleep(0.2)
    phases.lap("plan")
    time.sleep(0.1)
    phases.add("report", 0.3)
    line = phases.line()
    match = re.fullmatch(r"in (\d+\.\d) s: plan (\d+\.\d), report 0\.3(, the rest (\d+\.\d))?", line)
    assert match, line
    assert float(match[2]) == pytest.approx(0.2, abs=0.1)
    assert "ray" not in line  # a phase that took no time is left out


def test_the_command_started_before_this_test_did():
    assert command_started() <= time.monotonic()
    assert time.monotonic() - command_started() < 24 * 3600
