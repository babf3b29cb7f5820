"""Verdicts as Zhang et al. mean them, their thresholds, and figures that compare honestly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.report import figures, plots
from orchestrator.report.verdicts import CRITICAL, ROBUST, SENSITIVE, UNCLEAR, Thresholds, judge

DEFAULT = Thresholds()


@pytest.mark.parametrize(
    "drop_low, drop_high, acc_high, n, expected",
    [
        (0.70, 0.80, 0.15, 5, CRITICAL),  # accuracy CI reaches no higher than chance + 10 points
        (0.70, 0.80, 0.21, 5, SENSITIVE),  # far from chance, drop clearly above 5 points
        (0.06, 0.09, 0.90, 5, SENSITIVE),
        (0.00, 0.04, 0.95, 5, ROBUST),  # drop's CI below 5 points
        (-0.01, 0.049, 0.95, 3, ROBUST),
        (0.02, 0.08, 0.93, 5, UNCLEAR),  # the drop's CI straddles 5 points
        (0.70, 0.80, 0.11, 1, UNCLEAR),  # one seed: no interval, no verdict
        (math.nan, math.nan, math.nan, 1, UNCLEAR),
    ],
)
def test_judge(drop_low, drop_high, acc_high, n, expected) -> None:
    assert judge(drop_low, drop_high, acc_high, n, chance=0.1, thresholds=DEFAULT) == expected


def test_thresholds_move_the_verdicts() -> None:
    assert judge(0.06, 0.09, 0.90, 5, 0.1, Thresholds(robust_drop=0.10)) == ROBUST
    assert judge(0.70, 0.80, 0.21, 5, 0.1, Thresholds(chance_margin=0.12)) == CRITICAL
    assert judge(0.70, 0.80, 0.15, 5, None, DEFAULT) == SENSITIVE  # chance unknown: never critical


@pytest.mark.parametrize("option", ["--robust-drop", "--chance-margin"])
@pytest.mark.parametrize("value", ["0", "1", "5", "-0.1", "nan", "inf", "five"])
def test_threshold_options_are_fractions(tmp_path, capsys, option: str, value: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", str(tmp_path), option, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}: {value!r} is not a fraction in (0, 1)" in err
    assert "fractions of accuracy, not points" in err


def test_heatmaps_share_one_colour_scale() -> None:
    error = np.array([[0.05, 0.10], [0.07, np.nan]])
    heatmap = figures.Heatmap(("fc1", figures.FULL_MODEL), ("epoch 0", "epoch 1"), (0, 1), error)
    figure = plots.plot_heatmap(heatmap, "t")
    image = figure.axes[0].images[0]
    assert image.get_clim() == (0, 100)
    assert image.get_cmap().name.startswith("viridis")  # perceptual, colour-blind safe


def test_an_unmeasured_bar_is_absent_and_chance_is_labelled() -> None:
    nan = np.nan
    bars = figures.Bars(
        ("fc1", "fc2"), figures.BAR_KINDS,
        mean=np.array([[0.5, 0.9], [nan, 0.2]]), low=np.array([[0.4, 0.8], [nan, 0.1]]),
        high=np.array([[0.6, 1.0], [nan, 0.3]]), clipped=np.array([[False, True], [False, False]]),
        trained=0.95, chance=0.1,
    )
    axes = plots.plot_bars(bars, "t").axes[0]
    heights = sorted(round(patch.get_height(), 6) for patch in axes.patches)
    assert heights == [20.0, 50.0, 90.0]  # three measured bars; the unmeasured one is not drawn at 0
    labels = [line.get_label() for line in axes.get_lines()]
    assert "chance (1/n_classes)" in labels
