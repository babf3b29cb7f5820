"""``layerswap report``: stats tables, figures, report.md and a self-contained report.html.

The report is a pure function of the store's index tables and sweep records:
``STORE/report/`` covers every sweep in the store, records the index state it
was built from in ``report.json`` and is rebuilt when that state changes
(:mod:`orchestrator.report.publish`: :func:`refresh_report` at the end of
``sweep`` and ``analyze``, :func:`write_report` for ``layerswap report``). A
one-sweep report (``sweep``) is written elsewhere (``out_dir``) only.

Reads only complete trials (``orchestrator.catalog.contents.load_contents``) and says what
is missing. Accuracies are fractions in the tables and percentage points in the
report text. The content is assembled here as blocks (``orchestrator.report.document``)
and rendered twice, to Markdown and to HTML (figures embedded as base64 PNG);
verdicts come from ``orchestrator.report.verdicts``.

Output files (in ``STORE/report/`` or ``out_dir``): ``stats.parquet``
(``widths`` as list<int32>), ``stats.csv`` (``widths`` as ``"256-128-64"``),
``report.md`` (figures linked by file name), ``report.html``,
``heatmap-<config>.png`` and ``bars-<config>.png`` per configuration, and
``compare.png`` when there are several configurations. Where the store holds
them: ``layer_stats.parquet``/``layer_stats.csv`` (weight movement,
criticality, generalisation gap; :mod:`orchestrator.report.layer_stats`), and per
configuration ``movement-``, ``interpolate-`` and ``criticality-<config>.png``,
with ``criticality-gap-<sweep>.png`` for sweeps of three or more configurations. For a sweep with
grid axes (:mod:`orchestrator.report.axes`), per axis ``axis-<sweep>-<key>.png`` (per-layer accuracy
against it) and ``axis-networks-<sweep>-<key>.png`` (generalisation gap and criticality, from three
values on); ``stats`` and ``layer_stats`` have a column per axis.
``report.json``: the index state (``index_digest``, ``index_files``), ``sweep``
(null: the whole store), ``store``, ``generated``, ``thresholds`` and ``files``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.catalog.contents import StoreContents, describe_diverged, load_contents, without_diverged
from orchestrator.report.axes import SweepAxes, sweep_axes
from orchestrator.report.axis_sections import axis_sections, grid_notes
from orchestrator.report.document import (
    Block,
    Heading,
    Image,
    Paragraph,
    render_html,
    render_markdown,
)
from orchestrator.report.layer_order import layer_order, with_layer_columns
from orchestrator.report.layer_sections import (
    gap_blocks,
)
from orchestrator.report.layer_stats import (
    LAYER_STATS_COLUMNS,
    compute_layer_stats,
    layer_stats_to_arrow,
    layer_stats_to_csv,
    read_measures,
)
from orchestrator.report.publish import (
    IndexState,
    index_state,
    is_current,
    publish_copy,
    publish_store_report,
    store_report,
)
from orchestrator.report.sections import (
    baseline_section,
    compare_section,
    config_infos,
    config_section,
    reading_notes,
    run_section,
)
from orchestrator.report.stats import (
    compute_stats,
    config_views,
    stats_to_arrow,
    stats_to_csv,
)
from orchestrator.report.verdicts import (
    Thresholds,
)
from trainables.store import Store, StoreError
from trainables.store.schemas import TABLE_SCHEMAS
from trainables.store.store import PARQUET_WRITE_OPTIONS
from trainables.store.uri import redact_secrets


class ReportError(StoreError):
    """The store holds nothing a report can be made of, or a report cannot go where asked; the
    message says why."""


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **PARQUET_WRITE_OPTIONS)
    return buffer.getvalue()


def shown_location(store: Store) -> str:
    """The store as a reader of a copied report can find it again: its absolute path or full URI,
    credentials redacted."""
    return redact_secrets(store.location)


def _header(store_uri: str, state: IndexState, contents: StoreContents, sweep: str | None) -> Paragraph:
    names = [status.sweep for status in contents.sweeps]
    covers = f"sweep {sweep} only" if sweep is not None else (
        f"every sweep in it ({len(names)}: {', '.join(names)})"
    )
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Paragraph(
        f"Store: {store_uri} — {covers}; built from {state.files} index files (state "
        f"{state.digest[:12]}, recorded in report.json) — generated {generated}."
    )


def build_report(
    contents: StoreContents,
    store_uri: str,
    header: Paragraph,
    thresholds: Thresholds,
    measures: tuple[pa.Table, pa.Table] | None = None,
    axes: SweepAxes | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[Block]]:
    """The stats and layer_stats tables and the report's blocks for the complete trials in ``contents``
    (``header`` says where they are from); ``measures`` are their ``layers`` and ``criticality``
    rows (None: none), ``axes`` the grid axes of their sweeps (None: none)."""
    if contents.trials.num_rows == 0:
        waiting = "; ".join(
            f"{s.sweep}: 0 of {s.expected} finished" for s in contents.sweeps if s.expected
        )
        raise ReportError(
            f"{store_uri}: no complete trials to report" + (f" ({waiting})" if waiting else "")
        )
    axes = axes or {}
    layers = measures[0] if measures is not None else TABLE_SCHEMAS["layers"].empty_table()
    networks = layer_order(contents.trials, layers)
    stats = compute_stats(contents.trials, contents.swaps, axes, networks)
    layer_stats = (
        compute_layer_stats(
            contents.trials, with_layer_columns(measures[0], contents.trials, networks), measures[1], axes,
            networks,
        )
        if measures is not None
        else pd.DataFrame(columns=LAYER_STATS_COLUMNS)
    )
    infos = config_infos(contents.trials)
    views = config_views(stats)
    blocks: list[Block] = [
        Heading(1, "layerswap report"),
        header,
        *run_section(contents, infos),
        *grid_notes(axes, views),
        *baseline_section(views, infos),
    ]
    for view in views:
        blocks.extend(
            config_section(view, infos[(view.key.sweep, view.key.config_id)], thresholds, layer_stats)
        )
    if len(views) > 1:
        blocks.extend(compare_section(views))
        blocks.extend(gap_blocks(views, layer_stats))
    blocks.extend(axis_sections(views, infos, layer_stats, axes))
    blocks.extend(reading_notes(thresholds, any(view.single_seed for view in views), layer_stats))
    return stats, layer_stats, blocks


def write_report(
    store: Store, out_dir: str | None = None, sweep: str | None = None, thresholds: Thresholds | None = None
) -> list[str]:
    """Write stats, figures and the report; return the paths written.

    ``out_dir`` None rebuilds ``STORE/report/`` for the whole store through the store's
    filesystem (so ``s3://`` stores work); otherwise the report (of ``sweep`` alone, if given)
    goes to ``out_dir`` (a local path or URI). Raises ReportError or StoreError (one line) for a
    path that is not a store, a store without complete trials, a file that does not match its
    schema, an unknown sweep, or a one-sweep report asked for without ``out_dir``.
    """
    if out_dir is None and sweep is not None:
        raise ReportError(
            f"report: a report of sweep {sweep!r} alone needs --out DIR; {store.uri}/report always "
            "covers every sweep in the store"
        )
    thresholds = thresholds or Thresholds()
    state = index_state(store)  # before reading: a change meanwhile makes the next check rebuild
    everything = load_contents(store, sweep)
    contents = without_diverged(everything)  # statistics pool trained networks only
    measures = read_measures(store, contents.trials.column("trial_id").unique())
    location = shown_location(store)
    header = _header(location, state, contents, sweep)
    axes = sweep_axes(store)
    stats, layer_stats, blocks = build_report(contents, store.uri, header, thresholds, measures, axes)
    diverged = describe_diverged(everything.trials)
    if diverged:
        blocks.insert(2, Paragraph(diverged + "."))
    files: dict[str, bytes] = {
        "stats.parquet": _parquet_bytes(stats_to_arrow(stats)),
        "stats.csv": stats_to_csv(stats).encode("utf-8"),
    }
    if not layer_stats.empty:
        files["layer_stats.parquet"] = _parquet_bytes(layer_stats_to_arrow(layer_stats))
        files["layer_stats.csv"] = layer_stats_to_csv(layer_stats).encode("utf-8")
    files.update({b.name: b.png for b in blocks if isinstance(b, Image)})
    files["report.md"] = render_markdown(blocks).encode("utf-8")
    files["report.html"] = render_html(blocks, "layerswap report").encode("utf-8")
    record = {
        "index_digest": state.digest,
        "index_files": state.files,
        "sweep": sweep,
        "store": location,
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "thresholds": {"robust_drop": thresholds.robust_drop, "chance_margin": thresholds.chance_margin},
        "files": sorted([*files, "report.json"]),
    }
    files["report.json"] = json.dumps(record, indent=1, sort_keys=True).encode("utf-8")
    if out_dir is None:
        return publish_store_report(store, files)
    return publish_copy(Store.open(out_dir), files)


@dataclass(frozen=True)
class Refreshed:
    """``location``: STORE/report as a path or URI (credentials redacted); ``written``: the paths
    written, empty when the report was current already."""

    location: str
    written: list[str]


def refresh_report(store: Store, thresholds: Thresholds | None = None) -> Refreshed:
    """Rebuild ``STORE/report`` unless it is current (:func:`orchestrator.report.publish.is_current`)."""
    written = [] if is_current(store) else write_report(store, thresholds=thresholds)
    return Refreshed(shown_location(store_report(store)), written)
