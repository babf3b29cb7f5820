"""The report as a document: blocks, rendered to Markdown and to a self-contained HTML page.

Also the small text formats the report uses (intervals, runs of integers and layers).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class TableBlock:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    name: str
    alt: str
    png: bytes


Block = Heading | Paragraph | Bullets | TableBlock | Image


def render_markdown(blocks: Iterable[Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, TableBlock):
            lines = [block.header, tuple("---" for _ in block.header), *block.rows]
            parts.append("\n".join("| " + " | ".join(cells) + " |" for cells in lines))
        else:
            parts.append(f"![{block.alt}]({block.name})")
    return "\n\n".join(parts) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
    "padding:.3em .6em;text-align:left}th{background:#f3f3f3}img{max-width:100%;"
    "display:block;margin:1em 0}"
)


def render_html(blocks: Iterable[Block], title: str) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, TableBlock):
            head = "".join(f"<th>{esc(c)}</th>" for c in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f'<img alt="{esc(block.alt)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- formatting ---------------------------------------------------------------------------


CLIPPED_MARK = "†"
"""Follows an interval cut to the range of what it bounds (accuracy to [0, 100])."""


def format_ci(mean: float, low: float, high: float, n: int, unit: str = "", clipped: bool = False) -> str:
    """``mean ± half-width`` of a fraction's 95% CI, in percentage points; n < 2: the point.

    An interval cut to its range (``clipped``) is not symmetric: ``mean [low, high]†``.
    """
    if not math.isfinite(mean):
        return "–"
    if n < 2 or not math.isfinite(high):
        return f"{100 * mean:.1f}{unit} (n={n})"
    if clipped:
        return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]{unit}{CLIPPED_MARK}"
    return f"{100 * mean:.1f} ± {100 * (high - mean):.1f}{unit}"


def compact_ints(values: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0–3, 7"``."""
    ordered = sorted(set(values))
    runs: list[list[int]] = []
    for value in ordered:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)


def compact_layers(layers: Sequence[str], order: Sequence[str]) -> str:
    """Runs of adjacent layers (in ``order``) written as ``fc2–fc4``."""
    positions = [order.index(layer) for layer in layers]
    runs: list[list[int]] = []
    for position in sorted(positions):
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    names = [
        ", ".join(order[p] for p in run) if len(run) < 3 else f"{order[run[0]]}–{order[run[-1]]}"
        for run in runs
    ]
    return ", ".join(names)


def short_sci(value: float) -> str:
    """``4213.0`` -> ``"4.2e3"``; 0 -> ``"0"``; NaN -> ``"–"``."""
    if not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_sci_ci(mean: float, low: float, high: float, n: int, bound: str = "") -> str:
    """``mean [low, high]`` in short scientific notation, after ``bound`` (``≤ ``, ``≥ `` or
    nothing); n < 2: the point and n."""
    if not math.isfinite(mean):
        return "–"
    if n < 2 or not math.isfinite(high):
        return f"{bound}{short_sci(mean)} (n={n})"
    return f"{bound}{short_sci(mean)} [{short_sci(low)}, {short_sci(high)}]"
