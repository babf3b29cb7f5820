"""Report sections on weight movement, interpolation and module criticality (one configuration each,
plus criticality against the generalisation gap across width configurations).

Built from ``layer_stats`` rows (:mod:`orchestrator.report.layer_stats`) and the
``interpolate`` rows of the stats table; never from weights.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.report import figures
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
from orchestrator.report.stats import ConfigView, widths_label


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
        for layer in view.layers
        if (moved["layer"] == layer).any()
    ]
    png = figures.to_png(
        figures.plot_curves(
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


def _interpolation_blocks(view: ConfigView, slug: str) -> list[Block]:
    curves = figures.interpolation_curves(view)
    if not curves:
        return []
    figure = figures.plot_curves(
        curves,
        f"Layer interpolated from init (α=0) to trained (α=1) — {view.key.label}",
        "α",
        "test accuracy (%), mean ± 95% CI",
        scale=100,
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
                else format_ci(row["mean_acc"], row["ci95_low"], row["ci95_high"], int(row["n"]))
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
            figures.to_png(figure),
        ),
    ]


def _criticality_blocks(view: ConfigView, rows: pd.DataFrame, slug: str) -> list[Block]:
    blocks: list[Block] = []
    for index, settings in enumerate(criticality_settings(rows)):
        layers = per_layer_criticality(rows, settings)
        network = rows[(rows["quantity"] == "network_criticality") & (rows["settings"] == settings)].iloc[0]
        table = [
            (
                layer,
                format_sci_ci(r["mean"], r["ci95_low"], r["ci95_high"], int(r["n"])),
                f"{short_sci(r['min'])} – {short_sci(r['max'])}",
            )
            for layer, r in ((name, layers[name]) for name in view.layers if name in layers)
        ]
        table.append(
            (
                "network (sum)",
                format_sci_ci(network["mean"], network["ci95_low"], network["ci95_high"], int(network["n"])),
                f"{short_sci(network['min'])} – {short_sci(network['max'])}",
            )
        )
        ordered = [layers[name] for name in view.layers if name in layers]
        values = {c: np.array([float(r[c]) for r in ordered]) for c in ("mean", "ci95_low", "ci95_high")}
        png = figures.to_png(
            figures.plot_log_bars(
                [r["layer"] for r in ordered],
                values["mean"],
                values["ci95_low"],
                values["ci95_high"],
                f"Module criticality ({settings}) — {view.key.label}",
                "criticality, mean ± 95% CI (log)",
            )
        )
        name = f"criticality-{slug}.png" if index == 0 else f"criticality-{slug}-{index}.png"
        blocks += [
            Heading(3, f"Module criticality ({settings})"),
            TableBlock(("layer", "criticality, mean [95% CI]", "range over seeds"), tuple(table)),
            Image(name, f"module criticality per layer, {view.key.label}", png),
        ]
    return blocks


def layer_blocks(view: ConfigView, layer_stats: pd.DataFrame, slug: str) -> list[Block]:
    """Movement, interpolation and criticality sections of one configuration (those measured)."""
    rows = config_rows(layer_stats, view)
    return [
        *_movement_blocks(view, rows, slug),
        *_interpolation_blocks(view, slug),
        *_criticality_blocks(view, rows, slug),
    ]


def gap_blocks(views: list[ConfigView], layer_stats: pd.DataFrame) -> list[Block]:
    """Network criticality against the generalisation gap, per sweep with several width
    configurations that both were measured for."""
    blocks: list[Block] = []
    for sweep in dict.fromkeys(view.key.sweep for view in views):
        points = []
        for view in (v for v in views if v.key.sweep == sweep):
            rows = config_rows(layer_stats, view)
            settings = criticality_settings(rows)
            gap = rows[rows["quantity"] == "gen_gap"]
            if not settings or gap.empty:
                continue
            crit = rows[(rows["quantity"] == "network_criticality") & (rows["settings"] == settings[0])].iloc[
                0
            ]
            g = gap.iloc[0]
            points.append(
                {
                    "label": f"widths {widths_label(view.key.widths)}",
                    "gap": g["mean"],
                    "gap_low": g["ci95_low"],
                    "gap_high": g["ci95_high"],
                    "crit": crit["mean"],
                    "crit_low": crit["ci95_low"],
                    "crit_high": crit["ci95_high"],
                    "n": int(crit["n"]),
                }
            )
        if len(points) < 2 or len({p["label"] for p in points}) < len(points):
            continue
        frame = pd.DataFrame(points)
        table = tuple(
            (
                p["label"],
                format_ci(p["gap"], p["gap_low"], p["gap_high"], p["n"]),
                format_sci_ci(p["crit"], p["crit_low"], p["crit_high"], p["n"]),
            )
            for p in points
        )
        png = figures.to_png(
            figures.plot_criticality_vs_gap(frame, f"{sweep}: criticality vs generalisation")
        )
        blocks += [
            Heading(2, f"{sweep}: network criticality against the generalisation gap"),
            Paragraph(
                "Chatterji et al. find that networks of lower criticality generalise better. Gap = train "
                "minus test accuracy of the trained network (points)."
            ),
            TableBlock(
                ("configuration", "generalisation gap (points)", "network criticality [95% CI]"), table
            ),
            Image(
                f"criticality-gap-{sweep}.png",
                f"network criticality against generalisation gap, {sweep}",
                png,
            ),
        ]
    return blocks


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
            "noise of std σ; the smallest (α/σ)²·||θ_T − θ_0||² over the (α, σ) grid points whose mean "
            "training loss stays within rtol of the trained network's. 0 = the initial weights already do; "
            "a value near 1e30 or above means only α = 1 with the grid's smallest σ (1e-16·sigma_max) "
            "passed: no tested noise level was tolerated (a smaller sigma_max resolves it). Network "
            "criticality is the sum over layers. Bars are on a log scale."
        )
    return notes
