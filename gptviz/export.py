"""Static, offline HTML pages of plotly figures: the lab's "export for slides" button.

`figure_to_html(fig, path)` writes one figure; `figures_to_html([fig, RawHTML(...), fig2], path)` writes
several (and trusted HTML fragments, e.g. generated text) into one page. plotly.js is inlined once per
page, so the file opens in a browser with no network (a classroom without internet); nothing is loaded from
a CDN. Expect ~5 MB per page: that is plotly.js itself.

This module knows nothing about records or widgets: panels call it with the figure they show
(`panel.export_html(path)`), plots build the figures.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from .files import write_atomic

__all__ = ["RawHTML", "figure_to_html", "figures_to_html", "page_html"]

# The plotly modebar's "download as png" and a scroll-zoom-free view are what a teacher needs on a slide.
_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "scrollZoom": False,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}

_CSS = """
body { font-family: "Noto Sans", "DejaVu Sans", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei",
       Arial, sans-serif; color: #1f2430; margin: 0; background: #fafafb; }
main { max-width: 980px; margin: 0 auto; padding: 20px 24px 32px; background: white; }
h1 { font-size: 20px; font-weight: 600; margin: 0 0 6px; }
p.note { color: #4a5160; font-size: 14px; line-height: 1.45; margin: 4px 0; }
section { margin: 14px 0; }
footer { color: #8a90a0; font-size: 12px; margin-top: 18px; border-top: 1px solid #eceef2; padding-top: 8px; }
"""


class RawHTML(str):
    """A trusted HTML fragment (built by gptviz itself) placed between figures as it is, unescaped."""


def _as_list(notes: str | Sequence[str] | None) -> list[str]:
    if notes is None:
        return []
    return [notes] if isinstance(notes, str) else [str(n) for n in notes]


def page_html(
    items: Iterable[go.Figure | RawHTML], title: str | None = None, notes: str | Sequence[str] | None = None
) -> str:
    """One standalone HTML page: title, notes (plain text, escaped), then each figure or RawHTML in order."""
    parts, js_done = [], False
    for item in items:
        if isinstance(item, RawHTML):
            parts.append(f"<section>{item}</section>")
            continue
        if not isinstance(item, go.Figure):  # any BaseFigure (a panel figure too): copy its current state
            try:
                item = go.Figure(item)
            except Exception as e:
                raise TypeError(f"expected plotly figures or export.RawHTML, got {type(item).__name__}") from e
        # include_plotlyjs=True inlines the whole library (never "cdn"): the page must work offline.
        parts.append(
            "<section>"
            + pio.to_html(item, include_plotlyjs=not js_done, full_html=False, config=_CONFIG, default_width="100%")
            + "</section>"
        )
        js_done = True
    head_title = html.escape(title or "gptviz")
    body_title = f"<h1>{html.escape(title)}</h1>" if title else ""
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in _as_list(notes))
    footer = f"<footer>gptviz export · plotly.js {_plotlyjs_version()} inlined · works offline</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{head_title}</title>'
        f"<style>{_CSS}</style></head><body><main>{body_title}{note_html}{''.join(parts)}{footer}"
        "</main></body></html>\n"
    )


def _plotlyjs_version() -> str:
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def figures_to_html(
    items: Iterable[go.Figure | RawHTML],
    path: str | os.PathLike,
    title: str | None = None,
    notes: str | Sequence[str] | None = None,
) -> Path:
    """Write several figures (and RawHTML fragments) to one offline page; returns the path."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"export path should end in .html, got {str(path)!r}")
    write_atomic(path, page_html(items, title, notes))  # never half a page
    return path


def figure_to_html(
    fig: go.Figure, path: str | os.PathLike, title: str | None = None, notes: str | Sequence[str] | None = None
) -> Path:
    """Write one figure to an offline HTML page (plotly.js inlined); returns the path."""
    return figures_to_html([fig], path, title, notes)
