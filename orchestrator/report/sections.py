"""The sections of the report as document blocks: what was run, baselines, one section per
configuration, configurations compared, how to read it. Pure functions of the stats tables."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from orchestrator.catalog.contents import StoreContents, with_config_ids
from orchestrator.catalog.naming import (
    TRIAL_COLUMNS,
    distinguishing_fields,
    names_of_trials,
    row_training_spec,
)
from orchestrator.report import figures, plots
from orchestrator.report.document import (
    CLIPPED_MARK,
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    TableBlock,
    compact_ints,
    format_ci,
)
from orchestrator.report.layer_sections import (
    config_rows,
    criticality_settings,
    last_movement,
    layer_blocks,
    per_layer_criticality,
)
from orchestrator.report.layer_sections import reading_notes as layer_reading_notes
from orchestrator.report.stats import ConfigView, widths_label
from orchestrator.report.verdicts import (
    LayerVerdict,
    Thresholds,
    layer_notes,
    layer_verdicts,
    points,
    rerandomize_verdicts,
    summarize,
)


def _acc_cell(row: pd.Series | None) -> str:
    if row is None:
        return "–"
    n = int(row["n"])
    text = format_ci(row["mean_acc"], row["ci95_low"], row["ci95_high"], n, clipped=bool(row["ci95_clipped"]))
    return text if n < 2 else f"{text} (n={n})"


@dataclass(frozen=True)
class ConfigInfo:
    """What the networks of one configuration were: name, seeds, checkpoints, classes, training spec.

    ``spec`` is the training spec without the seed, flattened (``optimizer.lr``); ``name``
    what distinguishes it within its sweep (:func:`orchestrator.catalog.naming.name_configs`).
    """

    sweep: str
    config_id: str
    name: str
    seeds: tuple[int, ...]
    epochs: int
    checkpoints: tuple[int, ...]
    chance: float | None
    spec: dict[str, object]


def config_infos(trials: pa.Table) -> dict[tuple[str, str], ConfigInfo]:
    """One ``ConfigInfo`` per (sweep, config_id) of the complete trials, in the one order of
    configurations."""
    records = with_config_ids(trials).select(
        [*TRIAL_COLUMNS, "seed", "checkpoints", "n_classes"]
    ).to_pylist()
    grouped: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        grouped.setdefault((r["sweep"], r["config_id"]), []).append(r)
    infos = {}
    for (sweep, config_id), name in names_of_trials(records).items():
        rs = grouped[(sweep, config_id)]
        classes = [r["n_classes"] for r in rs if r["n_classes"]]
        infos[(sweep, config_id)] = ConfigInfo(
            sweep,
            config_id,
            name,
            tuple(sorted({r["seed"] for r in rs})),
            rs[0]["epochs"],
            tuple(rs[0]["checkpoints"] or ()),
            1 / classes[0] if classes else None,
            row_training_spec(rs[0]),
        )
    return infos


SLUG_CHARS = 80
"""How much of sweep, dataset, model and widths a figure's file name keeps (its config id follows)."""


def _slug(view: ConfigView) -> str:
    """The part of a configuration's figure file names after the figure's kind: short enough for any
    filesystem, unique by its config id."""
    key = view.key
    described = f"{key.sweep}-{key.dataset}-{key.model}-{widths_label(key.widths)}"[:SLUG_CHARS]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{described}-{key.config_id[:8]}")


def run_section(contents: StoreContents, infos: dict[tuple[str, str], ConfigInfo]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "What was run")]
    rows = []
    for status in contents.sweeps:
        expected = "?" if status.expected is None else str(status.expected)
        rows.append((status.sweep, f"{status.complete} / {expected}"))
    blocks.append(TableBlock(("sweep", "networks complete / expected"), tuple(rows)))
    config_rows = []
    for info in infos.values():
        spec = info.spec
        settings = [
            f"{name.removeprefix('optimizer.')} {value}" for name, value in spec.items()
            if name.startswith("optimizer.") and name != "optimizer.name" and value
        ]
        optimizer = " ".join([str(spec.get("optimizer.name", "?")), *settings])
        config_rows.append(
            (
                info.sweep,
                info.name,
                info.config_id,
                str(spec.get("dataset", "?")),
                str(spec.get("model", "?")),
                widths_label(spec.get("widths", ())),
                str(info.epochs),
                optimizer or "?",
                str(spec.get("batch_size", "?")),
                ", ".join(str(c) for c in info.checkpoints),
                compact_ints(info.seeds),
            )
        )
    blocks.append(
        TableBlock(
            ("sweep", "configuration", "config_id", "dataset", "model", "widths", "epochs", "optimizer",
             "batch", "checkpoints", "seeds"),
            tuple(config_rows),
        )
    )
    notes = []
    for sweep in dict.fromkeys(info.sweep for info in infos.values()):
        mine = [info for info in infos.values() if info.sweep == sweep]
        if len(mine) > 1:
            fields = distinguishing_fields(info.spec for info in mine)
            notes.append(
                f"{sweep} holds {len(mine)} configurations, differing in: {', '.join(fields)}; each is "
                "named by those values, with the first 8 characters of its config_id. Statistics pool "
                "only the seeds of one configuration."
            )
    for status in contents.sweeps:
        if status.expected is None:
            notes.append(f"{status.sweep}: no sweep config stored; the expected grid is unknown.")
        elif status.missing:
            shown = ", ".join(status.missing[:8]) + (" …" if len(status.missing) > 8 else "")
            notes.append(
                f"{status.sweep}: {len(status.missing)} network(s) missing (still running, "
                f"crashed or not started): {shown}. This report covers the complete ones only."
            )
    if contents.unfinished:
        notes.append(
            f"{len(contents.unfinished)} network(s) have swap rows but no trial row (unfinished); "
            "their rows are left out."
        )
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return blocks


def baseline_section(views: list[ConfigView], infos: dict[tuple[str, str], ConfigInfo]) -> list[Block]:
    rows = []
    for view in views:
        key, last = view.key, view.last_epoch
        chance = infos[(key.sweep, key.config_id)].chance
        rows.append(
            (
                key.sweep,
                key.name,
                key.dataset,
                _acc_cell(view.row("none", None, 0)),
                f"{_acc_cell(view.row('none', None, last))} at epoch {last}",
                "–" if chance is None else f"{100 * chance:.1f}",
            )
        )
    header = (
        "sweep",
        "configuration",
        "dataset",
        "initial accuracy (epoch 0)",
        "trained accuracy",
        "chance (1/n_classes)",
    )
    return [
        Heading(2, "Baselines"),
        Paragraph("Test accuracy in percent, mean ± 95% CI half-width over seeds (n seeds)."),
        TableBlock(header, tuple(rows)),
    ]


def _notes(view: ConfigView, verdicts: list[LayerVerdict], layer_stats: pd.DataFrame) -> list[Block]:
    rows = config_rows(layer_stats, view)
    moved = {layer: float(row["mean"]) for layer, row in last_movement(rows).items()}
    settings = criticality_settings(rows)
    critical = per_layer_criticality(rows, settings[0]) if settings else {}
    scores = {layer: (float(row["geo_mean"]), str(row["censoring"])) for layer, row in critical.items()}
    notes = layer_notes(verdicts, moved, scores)
    return [Bullets(notes)] if notes else []


def config_section(
    view: ConfigView, info: ConfigInfo, thresholds: Thresholds, layer_stats: pd.DataFrame
) -> list[Block]:
    last = view.last_epoch
    verdicts = {v.layer: v for v in layer_verdicts(view, info.chance, thresholds)}
    rerandomized = rerandomize_verdicts(view, info.chance, thresholds)
    table = []
    for layer in view.layers:
        v = verdicts.get(layer)
        table.append(
            (
                layer,
                _acc_cell(view.row("reinit", layer, 0)),
                _acc_cell(view.row("transplant", layer, last)),
                _acc_cell(view.row("rerandomize", layer, None)),
                "–" if v is None else points(v) + ("" if v.swap == "reinit" else f" [{v.swap}]"),
                "–" if v is None else v.label,
            )
        )
    header = (
        "layer",
        "reinit to epoch 0 (%)",
        f"transplant from epoch {last} (%)",
        "rerandomize (%)",
        "drop of reinit@0 vs trained (points)",
        "verdict",
    )
    label, slug = view.key.label, _slug(view)
    heatmap = plots.plot_heatmap(figures.heatmap_matrix(view), label)
    bars = plots.plot_bars(figures.bar_data(view, info.chance), label)
    summary = summarize(list(verdicts.values()), view.layers, info.chance, thresholds, rerandomized)
    return [
        Heading(2, label),
        Paragraph(summary),
        *_notes(view, list(verdicts.values()), layer_stats),
        TableBlock(header, tuple(table)),
        Paragraph(
            "The heatmap shows test ERROR (100 − accuracy, lower is better), as Zhang et al. do; the "
            "tables and the bars show accuracy."
        ),
        Image(f"heatmap-{slug}.png", f"heatmap of mean test error, {label}", plots.to_png(heatmap)),
        Image(f"bars-{slug}.png", f"per-layer accuracy, {label}", plots.to_png(bars)),
        *layer_blocks(view, layer_stats, slug, info.chance),
    ]


def compare_section(views: list[ConfigView]) -> list[Block]:
    one_sweep = len({v.key.sweep for v in views}) == 1
    labels = [v.key.name if one_sweep else v.key.label for v in views]
    panels = []
    for kind, epoch, title in (
        ("reinit", 0, "layer reset to its initial weights (reinit@0)"),
        ("rerandomize", None, "layer re-randomized"),
    ):
        if not any(view.has(kind) for view in views):
            continue
        profiles = [
            figures.drop_profile(view, kind, epoch, label) for view, label in zip(views, labels, strict=True)
        ]
        panels.append((title, profiles))
    if not panels:
        return []
    png = plots.to_png(plots.plot_drop_profiles(panels, "Accuracy drop per layer, by configuration"))
    return [
        Heading(2, "Configurations compared"),
        Paragraph(
            "Layers are placed by relative depth (0 = first layer, 1 = output layer), so "
            "configurations of different depth line up."
        ),
        Image("compare.png", "accuracy drop per layer for each configuration", png),
    ]


def reading_notes(thresholds: Thresholds, has_single_seed: bool, layer_stats: pd.DataFrame) -> list[Block]:
    items = [
        "Accuracies are in percent; a ± value is the half-width of the 95% Student-t interval "
        "over seeds; n is the number of seeds (rerandomize draws are first averaged per seed). "
        "Only seeds of one configuration (the same training spec but for the seed) are pooled.",
        f"An interval written [low, high]{CLIPPED_MARK} reached past what the quantity can be and is cut "
        "there: accuracy to 0–100%, a drop to between (trained − 100) and the trained accuracy. A cut "
        "interval still holds the true mean whenever the uncut one did; its width says the seeds "
        "disagree a lot (more seeds narrow it). In bar charts, a cut whisker ends in a triangle.",
        "Drop = that seed's trained accuracy minus the swapped network's accuracy, paired by "
        "seed; positive = worse than trained.",
        f"Verdicts, judged on reinit to epoch 0 (rerandomize when reinit was not measured): "
        f"critical = the accuracy's 95% CI upper bound lies within {100 * thresholds.chance_margin:g} "
        f"points of chance (1/n_classes); robust = the drop's 95% CI lies below "
        f"{100 * thresholds.robust_drop:g} points; sensitive = not critical and the drop's CI lies "
        "above that; unclear = the drop's CI contains it.",
        "Heatmap: test error (100 − accuracy), not accuracy. Rows are the layer changed (last row: "
        "the whole network at that checkpoint), columns the checkpoint a layer is reset to; the last "
        "checkpoint is the trained network itself. Every heatmap uses the same colour scale, viridis "
        "from 0% (dark) to 100% error (yellow), readable without telling red from green. The full "
        "model's rerandomize cell is blank: a fresh draw of every layer is an initial network, shown "
        "in its epoch-0 cell.",
    ]
    items += layer_reading_notes(layer_stats)
    if has_single_seed:
        items.append(
            "Some groups have a single seed (n=1): no spread can be estimated from one value, so "
            "they have no interval (NaN in stats.csv) and their verdict is unclear (n=1)."
        )
    return [Heading(2, "How to read this report"), Bullets(tuple(items))]


