"""Report sections on weight movement, interpolation and module criticality (one configuration each,
plus criticality against the generalisation gap across the configurations of a sweep).

Built from ``layer_stats`` rows (:mod:`orchestrator.report.layer_stats`) and the
``interpolate`` rows of the stats table; never from weights.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.report import figures, plots
from orchestrator.report.censoring import AT_LEAST, AT_MOST, bound_sign
from orchestrator.report.document import (
    Block,
    Heading,
    Image,
    Paragraph,
    TableBlock,
    format_ci,
    format_sci_ci,
    short_sci,
)
from orchestrator.report.layer_stats import settings_value
from orchestrator.report.stats import ConfigView


def config_rows(layer_stats: pd.DataFrame, view: ConfigView) -> pd.DataFrame:
    """The ``layer_stats`` rows of ``view``'s configuration."""
    key = view.key
    return layer_stats[(layer_stats["sweep"] == key.sweep) & (layer_stats["config_id"] == key.config_id)]


def last_movement(rows: pd.DataFrame, quantity: str = "rel_dist_init") -> dict[str, pd.Series]:
    """Per layer, the movement row of ``quantity`` at the last stored epoch."""
    moved = rows[rows["quantity"] == quantity]
    if moved.empty:
        return {}
    last = moved["epoch"].max()
    return {row["layer"]: row for _, row in moved[moved["epoch"] == last].iterrows()}


def criticality_settings(rows: pd.DataFrame) -> list[str]:
    """The criticality settings present for a configuration, most networks first."""
    critical = rows[rows["quantity"] == "network_criticality"].sort_values(
        "n", ascending=False, kind="stable"
    )
    return list(dict.fromkeys(critical["settings"]))


def per_layer_criticality(rows: pd.DataFrame, settings: str) -> dict[str, pd.Series]:
    chosen = rows[(rows["quantity"] == "criticality") & (rows["settings"] == settings)]
    return {row["layer"]: row for _, row in chosen.iterrows()}


def _movement_blocks(view: ConfigView, rows: pd.DataFrame, slug: str) -> list[Block]:
    moved = rows[rows["quantity"] == "rel_dist_init"]
    if moved.empty:
        return []
    curves = [
        figures.curve(layer, moved[moved["layer"] == layer], "epoch", "mean", "ci95_low", "ci95_high")
        for layer in view.by_depth  # coloured by depth: groups are in the table only
        if (moved["layer"] == layer).any()
    ]
    png = plots.to_png(
        plots.plot_curves(
            curves,
            f"Relative distance to init — {view.key.label}",
            "checkpoint (epoch)",
            "||θ_t − θ_0|| / ||θ_0|| (%), mean ± 95% CI",
            scale=100,
        )
    )
    last = last_movement(rows)
    cosine = last_movement(rows, "cos_init")
    table = tuple(
        (
            layer,
            format_ci(
                last[layer]["mean"], last[layer]["ci95_low"], last[layer]["ci95_high"], int(last[layer]["n"])
            ),
            "–" if layer not in cosine else f"{cosine[layer]['mean']:.3f}",
        )
        for layer in view.layers
        if layer in last
    )
    epoch = int(moved["epoch"].max())
    return [
        Heading(3, "How far each layer moved"),
        TableBlock(
            (
                "layer",
                f"distance to init at epoch {epoch} (% of initial norm)",
                f"cosine to init at epoch {epoch}",
            ),
            table,
        ),
        Image(f"movement-{slug}.png", f"relative distance to init per layer, {view.key.label}", png),
    ]


SHOWN_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Alphas the interpolation table shows when more than six were measured (the figure has all)."""


def _interpolation_blocks(view: ConfigView, slug: str, chance: float | None) -> list[Block]:
    curves = figures.interpolation_curves(view)
    if not curves:
        return []
    trained = view.row("none", None, view.last_epoch) if view.last_epoch is not None else None
    figure = plots.plot_curves(
        curves,
        f"Layer interpolated from init (α=0) to trained (α=1) — {view.key.label}",
        "α",
        "test accuracy (%), mean ± 95% CI",
        scale=100,
        chance=chance,
        trained=None if trained is None else float(trained["mean_acc"]),
        accuracy=True,
    )
    measured = sorted({float(a) for c in curves for a in c.x})
    shown = measured if len(measured) <= 6 else [a for a in measured if a in SHOWN_ALPHAS]
    table = []
    for layer in (c.label for c in curves):
        cells = []
        for alpha in shown:
            row = view.row("interpolate", layer, 0, alpha)
            cells.append(
                "–"
                if row is None
                else format_ci(row["mean_acc"], row["ci95_low"], row["ci95_high"], int(row["n"]),
                               clipped=bool(row["ci95_clipped"]))
            )
        table.append((layer, *cells))
    return [
        Heading(3, "Accuracy along the line from init to trained, per layer"),
        Paragraph(
            "Each curve sets one layer to (1−α)·θ_0 + α·θ_T in the trained network; α = 0 is "
            "reinit@0, α = 1 the trained network. Test accuracy in percent, mean ± 95% CI."
        ),
        TableBlock(("layer", *(f"α = {alpha:g}" for alpha in shown)), tuple(table)),
        Image(
            f"interpolate-{slug}.png",
            f"accuracy against alpha per layer, {view.key.label}",
            plots.to_png(figure),
        ),
    ]


_BOUND_WORDS = {AT_MOST: "upper bounds", AT_LEAST: "lower bounds or no value"}


def censored_cell(row: pd.Series) -> str:
    """``3 of 5 (upper bounds)``, or ``none``."""
    censored, measured = int(row["n_censored"]), int(row["n_measured"])
    if not censored:
        return "none"
    return f"{censored} of {measured} ({_BOUND_WORDS.get(str(row['censoring']), 'at a bound')})"


def criticality_cell(row: pd.Series) -> str:
    """The geometric mean and its CI, ``≤`` before an upper bound; ``–`` with no value; the
    arithmetic range where a score of 0 leaves no geometric mean."""
    if int(row["n"]) == 0:
        return "– (no value)"
    if not np.isfinite(row["geo_mean"]):
        return f"no geometric mean (a score of 0); arithmetic mean {short_sci(row['mean'])}"
    return format_sci_ci(row["geo_mean"], row["geo_ci95_low"], row["geo_ci95_high"], int(row["n"]),
                         bound_sign(str(row["censoring"])))


def censoring_sentence(rows: list[pd.Series], settings: str) -> str | None:
    """One sentence when half the scores (seeds × layers) or more are censored, naming the setting
    to raise."""
    measured = sum(int(r["n_measured"]) for r in rows)
    censored = sum(int(r["n_censored"]) for r in rows)
    if not measured or 2 * censored < measured:
        return None
    upper = sum(int(r["n_censored"]) for r in rows if r["censoring"] == AT_MOST)
    if 2 * upper >= censored:
        setting = "sigma_max"
        why = "are upper bounds: their best σ is the largest tried, and a larger one might pass too"
    else:
        setting, why = "rtol", "are lower bounds at best: no (α, σ) pair passed, or only the smallest σ"
    return (
        f"{'Most' if 2 * censored > measured else 'Half'} of the criticality scores here are censored "
        f"({censored} of {measured} layer scores {why}); raise criticality.{setting} in the sweep config "
        f"(now {settings_value(settings, setting)}) and run the sweep again (nothing is retrained) to "
        "resolve them."
    )


def _criticality_row(name: str, row: pd.Series) -> tuple[str, str, str, str]:
    return (name, criticality_cell(row), f"{short_sci(row['min'])} – {short_sci(row['max'])}",
            censored_cell(row))


def _criticality_blocks(view: ConfigView, rows: pd.DataFrame, slug: str) -> list[Block]:
    blocks: list[Block] = []
    for index, settings in enumerate(criticality_settings(rows)):
        layers = per_layer_criticality(rows, settings)
        network = rows[(rows["quantity"] == "network_criticality") & (rows["settings"] == settings)].iloc[0]
        ordered = [layers[name] for name in view.layers if name in layers]
        table = [_criticality_row(r["layer"], r) for r in ordered]
        table.append(_criticality_row("network (sum)", network))
        points = figures.log_points([r["layer"] for r in ordered], ordered)
        png = plots.to_png(
            plots.plot_log_points(
                points, f"Module criticality ({settings}) — {view.key.label}", "layer",
                "module criticality (log scale)",
            )
        )
        name = f"criticality-{slug}.png" if index == 0 else f"criticality-{slug}-{index}.png"
        sentence = censoring_sentence([*ordered], settings)
        blocks += [
            Heading(3, f"Module criticality ({settings})"),
            *([Paragraph(sentence)] if sentence else []),
            TableBlock(
                ("layer", "criticality, geometric mean [95% CI]", "range over seeds", "censored seeds"),
                tuple(table),
            ),
            Image(name, f"module criticality per layer, {view.key.label}", png),
        ]
    return blocks


def layer_blocks(view: ConfigView, layer_stats: pd.DataFrame, slug: str, chance: float | None) -> list[Block]:
    """Movement, interpolation and criticality sections of one configuration (those measured)."""
    rows = config_rows(layer_stats, view)
    return [
        *_movement_blocks(view, rows, slug),
        *_interpolation_blocks(view, slug, chance),
        *_criticality_blocks(view, rows, slug),
    ]


MIN_SCATTER_POINTS = 3
"""Fewer configurations than this get a table, not a scatter plot that would invite a trend."""


def gap_blocks(views: list[ConfigView], layer_stats: pd.DataFrame) -> list[Block]:
    """Network criticality against the generalisation gap, per sweep with several configurations
    that both were measured for: a table, and a scatter plot from ``MIN_SCATTER_POINTS`` on."""
    blocks: list[Block] = []
    for sweep in dict.fromkeys(view.key.sweep for view in views):
        found = []
        for view in (v for v in views if v.key.sweep == sweep):
            rows = config_rows(layer_stats, view)
            settings = criticality_settings(rows)
            gap = rows[rows["quantity"] == "gen_gap"]
            if not settings or gap.empty:
                continue
            network = rows[(rows["quantity"] == "network_criticality") & (rows["settings"] == settings[0])]
            found.append((view.key.name, gap.iloc[0], network.iloc[0]))
        if len(found) < 2:
            continue
        table = tuple(
            (name, format_ci(g["mean"], g["ci95_low"], g["ci95_high"], int(g["n"])), criticality_cell(c),
             censored_cell(c))
            for name, g, c in found
        )
        if len(found) >= MIN_SCATTER_POINTS:
            figure_block: Block = _gap_scatter(sweep, found)
        else:
            figure_block = Paragraph(
                f"With {len(found)} configurations a scatter plot would invite a trend that {len(found)} "
                f"points cannot show; it is drawn from {MIN_SCATTER_POINTS} configurations on."
            )
        blocks += [
            Heading(2, f"{sweep}: network criticality against the generalisation gap"),
            Paragraph(
                "Chatterji et al. find that networks of lower criticality generalise better. Gap = train "
                "minus test accuracy of the trained network (points); criticality as its geometric mean "
                "over seeds."
            ),
            TableBlock(
                ("configuration", "generalisation gap (points)",
                 "network criticality, geometric mean [95% CI]", "censored seeds"),
                table,
            ),
            figure_block,
        ]
    return blocks


def _gap_scatter(sweep: str, found: list[tuple[str, pd.Series, pd.Series]]) -> Image:
    """The scatter of (name, gen_gap row, network_criticality row) per configuration."""
    def column(name: str) -> np.ndarray:
        return np.array([float(gap[name]) for _, gap, _ in found])

    points = figures.log_points([name for name, _, _ in found], [network for _, _, network in found])
    png = plots.to_png(plots.plot_criticality_vs_gap(
        column("mean"), column("ci95_low"), column("ci95_high"), points,
        f"{sweep}: network criticality against the generalisation gap",
    ))
    alt = f"network criticality against generalisation gap, {sweep}"
    return Image(f"criticality-gap-{sweep}.png", alt, png)


def reading_notes(layer_stats: pd.DataFrame) -> list[str]:
    """How to read the movement and criticality sections (only for what was measured)."""
    notes = []
    if (layer_stats["quantity"] == "rel_dist_init").any():
        notes.append(
            "Movement: a layer's parameters (weight and bias) as one vector θ; distance to init = "
            "||θ_t − θ_0|| as a percentage of ||θ_0||, cosine to init = cos(θ_t, θ_0); mean ± 95% CI over "
            "seeds (layer_stats.csv also has norm, dist_init and dist_final, the distance to the trained "
            "weights)."
        )
    if (layer_stats["quantity"] == "criticality").any():
        notes.append(
            "Module criticality (Chatterji et al. 2020): the layer is set to (1−α)·θ_0 + α·θ_T plus Gaussian "
            "noise of std σ; the smallest (α/σ)²·||θ_T − θ_0||² over the (α, σ) pairs whose mean training "
            "loss stays within rtol of the trained network's. 0 = the initial weights already do. Scores "
            "span orders of magnitude, so they are summarised on the log scale: the geometric mean over "
            "seeds with the Student-t 95% CI of the mean log, back-transformed (layer_stats.csv also has "
            "the arithmetic mean). A score is censored when the best σ is the largest σ tried (a larger "
            "one might pass: the score is an upper bound, written ≤ and drawn as an open marker with an "
            "arrow towards where the true value lies) or when no pair passed (no value). At the other "
            "end, a score near 1e16 or above means only α = 1 with the grid's smallest σ (1e-16·sigma_max) "
            "passed: no tested noise level was tolerated, and a smaller sigma_max resolves it. Network "
            "criticality is the sum over layers."
        )
    return notes
