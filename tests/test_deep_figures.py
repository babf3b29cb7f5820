"""Heatmaps and bars of deep networks stay readable: every one of a ResNet-56's layers keeps a
label, the figure grows with the layers, and no two labels (nor the legend) overlap once drawn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from orchestrator.report import figures, plots
from trainables.models import registry
from trainables.models.architectures import BuildOptions


def layer_names(model: str, widths: tuple[int, ...], input_shape: tuple[int, ...]) -> tuple[str, ...]:
    with torch.device("meta"):
        network = registry.build_network(model, input_shape, widths, 10, BuildOptions(norm="batch"))
    return tuple(layer.name for layer in registry.family(model).layers(network))


RESNET56 = layer_names("resnet56", (16, 32, 64), (3, 32, 32))
RESNET20 = layer_names("resnet20", (16, 32, 64), (3, 32, 32))
MLP = ("fc1", "fc2", "fc3")


def heatmap(layers: tuple[str, ...]) -> figures.Heatmap:
    rows = layers + (figures.FULL_MODEL,)
    columns = ("rerandomize", "epoch 0", "epoch 1", "epoch 5", "epoch 160 (trained)")
    error = np.random.default_rng(0).uniform(0, 1, (len(rows), len(columns)))
    return figures.Heatmap(rows, columns, (0, 1, 5, 160), error)


def bars(layers: tuple[str, ...]) -> figures.Bars:
    mean = np.random.default_rng(1).uniform(0.1, 0.9, (2, len(layers)))
    clipped = np.zeros_like(mean, dtype=bool)
    return figures.Bars(layers, figures.BAR_KINDS, mean, mean - 0.05, mean + 0.05, clipped, 0.92, 0.1)


def drawn(figure: Figure):
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def extents(labels, renderer) -> list[Bbox]:
    return [label.get_window_extent(renderer) for label in labels]


def overlapping(boxes: list[Bbox]) -> list[tuple[int, int]]:
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]


def test_assumed_names_are_those_of_a_resnet56() -> None:
    # the stem, 27 blocks of two convs, the two 1x1 shortcuts, the head
    assert len(RESNET56) == 1 + 54 + 2 + 1 and RESNET56[0] == "conv1" and RESNET56[-1] == "fc"
    assert "layer3.8.conv2" in RESNET56 and "layer2.0.downsample" in RESNET56


def test_a_resnet56_heatmap_is_taller_and_labels_every_layer_without_overlap() -> None:
    sizes = [plots.plot_heatmap(heatmap(layers), "t").get_size_inches() for layers in (MLP, RESNET20)]
    figure = plots.plot_heatmap(heatmap(RESNET56), "resnet56")
    height = figure.get_size_inches()[1]
    assert sizes[0][1] < sizes[1][1] < height
    assert height > 59 * 0.25  # at least a quarter inch per row
    renderer = drawn(figure)
    axes = figure.axes[0]
    labels = axes.get_yticklabels()
    assert [label.get_text() for label in labels] == [*RESNET56, figures.FULL_MODEL]
    assert overlapping(extents(labels, renderer)) == []
    # every cell's number stays inside its own row
    texts = [text for text in axes.texts if text.get_text()]
    assert len(texts) == 59 * 5
    row_pitch = abs(axes.transData.transform((0, 1))[1] - axes.transData.transform((0, 0))[1])
    assert max(box.height for box in extents(texts, renderer)) < row_pitch


@pytest.mark.parametrize("layers", [RESNET20, RESNET56], ids=["resnet20", "resnet56"])
def test_bars_of_a_deep_net_grow_and_keep_every_label_apart(layers: tuple[str, ...]) -> None:
    figure = plots.plot_bars(bars(layers), "deep")
    renderer = drawn(figure)
    axes = figure.axes[0]
    labels = axes.get_yticklabels()  # many layers: horizontal bars, one row per layer, first on top
    assert [label.get_text() for label in labels] == list(layers)
    boxes = extents(labels, renderer)
    assert overlapping(boxes) == []
    (legend,) = figure.legends
    legend_box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(legend_box) for box in boxes)
    assert all(figure.bbox.contains(box.x0, box.y0) and figure.bbox.contains(box.x1, box.y1) for box in boxes)


def test_more_layers_give_a_larger_bar_chart() -> None:
    few = [plots.plot_bars(bars(RESNET56[:n]), "t").get_size_inches()[0] for n in (3, 8, 13)]
    many = [plots.plot_bars(bars(RESNET56[:n]), "t").get_size_inches()[1] for n in (22, 40, 58)]
    assert few == sorted(few) and len(set(few)) == 3  # vertical bars: wider with every layer
    assert many == sorted(many) and len(set(many)) == 3  # horizontal bars: taller with every layer
    short = plots.plot_bars(bars(MLP), "mlp")
    drawn(short)
    assert {label.get_rotation() for label in short.axes[0].get_xticklabels()} == {0.0}  # few: horizontal


def test_criticality_of_a_resnet56_keeps_every_label_apart() -> None:
    values = np.geomspace(1.0, 100.0, len(RESNET56))
    points = figures.LogPoints(RESNET56, values, values / 2, values * 2, ("",) * len(RESNET56))
    figure = plots.plot_log_points(points, "criticality", "layer", "criticality")
    small = figures.LogPoints(MLP, values[:3], values[:3] / 2, values[:3] * 2, ("",) * 3)
    assert figure.get_size_inches()[1] > plots.plot_log_points(small, "t", "l", "c").get_size_inches()[1]
    renderer = drawn(figure)
    labels = figure.axes[0].get_yticklabels()
    assert [label.get_text() for label in labels] == list(RESNET56)
    assert overlapping(extents(labels, renderer)) == []
