"""How big a per-layer figure is, so that every layer keeps its own readable label.

A ResNet-56 has 57 layers with names such as ``layer3.8.downsample``: drawn at
the size that suits a 3-layer MLP, their labels would overlap. The figures
grow with the number of layers instead, at a pitch (inches per layer) that
leaves each label room. Sizes are in inches; a label's width is estimated from
its characters at :data:`LABEL_PT` (an upper bound for the default sans-serif
font's average character width), which the figures use for their layer labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LABEL_PT = 9.0
"""Font size (points) of layer labels."""
CHAR_EM = 0.62
"""Average character width in ems of the labels' font (DejaVu Sans is about 0.55-0.6)."""
LINE_IN = 1.5 * LABEL_PT / 72
"""Room one line of label text needs across its direction (inches), with spacing."""

BAR_PITCH_IN = 1.3
"""Inches per layer on a bar chart whose labels are written horizontally."""
BAR_PITCH_ROTATED_IN = 0.3
"""Inches per layer once labels are written vertically (two bars and their CIs still fit)."""
HORIZONTAL_LAYERS = 12
"""Up to this many layers a bar chart writes labels horizontally (if they fit the pitch)."""
HEATMAP_ROW_IN = 0.55
"""Inches per heatmap row for the first :data:`HEATMAP_ROOMY_ROWS` rows, ..."""
HEATMAP_ROOMY_ROWS = 20
HEATMAP_DENSE_ROW_IN = 0.3
"""... and for every row beyond them (still room for a label and a cell's number)."""


def label_width(label: str, points: float = LABEL_PT) -> float:
    """Estimated width (inches) of ``label`` written at ``points``."""
    return len(label) * CHAR_EM * points / 72


@dataclass(frozen=True)
class BarAxis:
    """The layer axis of a bar chart: ``pitch`` inches per layer, labels rotated by ``rotation``
    degrees (0 or 90), taking ``label_depth`` inches below the axis."""

    pitch: float
    rotation: int
    label_depth: float

    def figure_size(self, n_layers: int) -> tuple[float, float]:
        """(width, height) of the figure, inches: the axis' length plus room for the y axis and
        legend, the plot's height plus the labels below it."""
        return (max(5.0, 2.5 + self.pitch * n_layers), 4.0 + self.label_depth)


def bar_axis(labels: Sequence[str]) -> BarAxis:
    """Horizontal labels at :data:`BAR_PITCH_IN` while there are few that fit; vertical labels at
    :data:`BAR_PITCH_ROTATED_IN` otherwise."""
    widest = max((label_width(label) for label in labels), default=0.0)
    if len(labels) <= HORIZONTAL_LAYERS and widest + 0.2 <= BAR_PITCH_IN:
        return BarAxis(BAR_PITCH_IN, 0, LINE_IN)
    return BarAxis(max(BAR_PITCH_ROTATED_IN, LINE_IN), 90, widest)


def heatmap_size(row_labels: Sequence[str], n_columns: int) -> tuple[float, float]:
    """(width, height) of a heatmap, inches: one inch per column plus the row labels' width;
    :data:`HEATMAP_ROW_IN` per row, :data:`HEATMAP_DENSE_ROW_IN` per row past the first
    :data:`HEATMAP_ROOMY_ROWS` (the height grows with every row)."""
    n_rows = len(row_labels)
    roomy = min(n_rows, HEATMAP_ROOMY_ROWS)
    height = 1.6 + HEATMAP_ROW_IN * roomy + HEATMAP_DENSE_ROW_IN * (n_rows - roomy)
    widest = max((label_width(label) for label in row_labels), default=0.0)
    return (2.5 + 1.0 * n_columns + widest, height)
