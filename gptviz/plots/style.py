"""One look for every figure: the template, colour scales, token ticks, titles, windowing and pixel layout.

Every other module in `gptviz.plots` (and the panels that combine views) takes its colours, axis labels and
sizes from here, so a panel and its static export always agree. This module draws no view of its own (only
`signed_heatmap`, the matrix look several views share).

Attention and probabilities share one 0..1 scale (`ATTENTION_SCALE`), signed values a diverging scale centred
on 0. Long inputs are windowed (the last `MAX_TOKENS` tokens) and the title says so. Figures with a square
heatmap, or with several parts side by side, are laid out in pixels (see "sizes in pixels"), so each colour bar
stays beside its heatmap; the others leave their width to the page.
"""

from __future__ import annotations

import math
import unicodedata

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch

FONT = '"Noto Sans", "DejaVu Sans", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", Arial, sans-serif'
TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(
    font=dict(family=FONT, size=12, color="#1f2430"),
    title=dict(x=0.01, xanchor="left", font=dict(size=15)),
    margin=dict(l=70, r=30, t=90, b=60),
    hoverlabel=dict(font_family=FONT),
    plot_bgcolor="white",
    colorway=["#2166ac", "#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b"],
)
MASKED_NOTE = "grey = masked (a token cannot see later tokens)"
# Attention and probabilities: 0..1 with the low end stretched, so the many small weights stay visible.
ATTENTION_SCALE = [
    [0.0, "#ffffff"],
    [0.02, "#eef4fb"],
    [0.08, "#c6dbef"],
    [0.2, "#6baed6"],
    [0.45, "#2171b5"],
    [1.0, "#08306b"],
]
METRIC_SCALE = "Viridis"
DIVERGING_SCALE = "RdBu_r"  # blue negative, white 0, red positive
# One colour per decoding stage, far apart in hue (raw grey, then purple, brown, olive, blue, green, magenta),
# so four stages side by side are four colours, not four blues; orange is the chosen token's outline.
STAGE_COLOUR = {
    "raw": "#8a94a6",
    "repetition_penalty": "#8e63c7",
    "no_repeat_ngram": "#8c564b",
    "min_new_tokens": "#a5a61d",
    "temperature": "#1f77b4",
    "top_k": "#2ca02c",
    "top_p": "#d6338a",
}
STAGE_COLOURS = list(STAGE_COLOUR.values())  # in the order `logits.process` applies the stages
FILTERED, CHOSEN, MASKED = "#d4d6db", "#e6550d", "#e6e8ec"
MAX_TOKENS = 256  # heatmaps keep the last MAX_TOKENS tokens: 65k cells stay fast in a browser


# ---- values, tokens, titles -------------------------------------------------------------------------------
def as_numpy(x) -> np.ndarray:
    """A float numpy copy of a tensor (detached, on the CPU) or of anything array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def short(token: str, n: int = 12) -> str:
    return token if len(token) <= n else token[: n - 1] + "…"


def ticks(tokens: list[str], start: int = 0, max_ticks: int = 80, length_px: float | None = None) -> dict:
    """Axis settings labelling positions start..start+len(tokens)-1 with (at most max_ticks) token strings.

    Every token is labelled up to max_ticks (smaller font past 40). Beyond that only every n-th is, and
    those labels carry their position ("12:the"), so a skipped axis never reads as a different text.
    With the axis length in pixels (`length_px`) the font is sized to the room each label has (8 to 12 px).
    """
    step = max(1, math.ceil(len(tokens) / max_ticks))
    vals = list(range(start, start + len(tokens), step))
    text = [short(tokens[v - start], 8) if step == 1 else f"{v}:{short(tokens[v - start], 6)}" for v in vals]
    if length_px:
        size = int(min(12, max(8, 0.85 * length_px / max(1, len(vals)))))
    else:
        size = 11 if len(vals) <= 40 else 8
    return dict(tickmode="array", tickvals=vals, ticktext=text, tickfont=dict(size=size))


def window_start(T: int, max_tokens: int = MAX_TOKENS) -> int:
    """First position shown when only the last max_tokens of T tokens are drawn."""
    return max(0, T - max_tokens)


def window_note(start: int, T: int) -> str:
    return f"showing last {T - start} of {T} tokens" if start else ""


def subtitle(title: str, *parts: str, max_px: float | None = None) -> str:
    """The title, then the parts joined by " · " on one small line. With `max_px` (the room the title has) the
    parts fill as many lines as that needs, a part breaking (at spaces) only where it alone is longer, and the
    title itself wraps at spaces too: nothing is wider than `max_px` but a single word."""
    parts = [p for p in parts if p]
    if max_px is None:
        return title + (f"<br><sup>{' · '.join(parts)}</sup>" if parts else "")
    heading = "<br>".join(line for seg in title.split("<br>") for line in wrap_words(seg, max_px, TITLE_CHAR_PX))
    lines: list[str] = []
    for p in parts:
        if lines and text_px(lines[-1] + " · " + p, SUB_CHAR_PX) <= max_px:
            lines[-1] += " · " + p
        else:
            lines += wrap_words(p, max_px, SUB_CHAR_PX)
    return heading + "".join(f"<br><sup>{line}</sup>" for line in lines)


def text_px(text: str, char_px: float) -> float:
    """About how wide `text` is drawn, in px, at `char_px` per character (a wide CJK character counts 1.8)."""
    return char_px * sum(1.8 if unicodedata.east_asian_width(c) in "WF" else 1.0 for c in text)


def wrap_words(text: str, max_px: float, char_px: float) -> list[str]:
    """`text` broken at spaces into lines at most `max_px` wide (a longer word keeps a line of its own)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and text_px(lines[-1] + " " + word, char_px) <= max_px:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


NARROW_PX = 640  # a figure narrower than this (a panel in a small window) stacks its parts, turns labels, ...


def colourbar_title(text: str, width: int | None = None) -> dict:
    """A colour bar's title: over the bar, or (under NARROW_PX) up its right side, where it takes no width."""
    return dict(text=text, side="right") if width is not None and width < NARROW_PX else dict(text=text)


def title_on_top(title: str) -> dict:
    """layout.title for a title of any number of lines, hung from the figure's top (plotly would centre it in the
    top margin); give the figure a top margin of `title_px(title)` plus the room wanted under it."""
    return dict(text=title, y=1, yref="container", yanchor="top", pad=dict(t=12))


# ---- sizes in pixels --------------------------------------------------------------------------------------
# A figure with a square heatmap is laid out in pixels. Given only fractions, plotly keeps the heatmap square by
# shrinking its domain about the middle, while the colour bar stays at the right edge of the plot area, far from
# it. So such figures (and those with several parts side by side) set their width and height and place each
# part in px; figures without a fixed aspect leave their width to the page.
WIDTH = 960  # px: a figure with several parts side by side, unless given a width (a gptviz panel's figure width)
SQUARE_PX = 520  # the side of a figure's one square heatmap
COLOURBAR_PX = 90  # right of its heatmap, a colour bar takes this: the gap, the bar, its tick labels and title
SUB_CHAR_PX = 5.6  # a subtitle character's width, on average (TEMPLATE's 15 px title, <sup> at 70 %)
TITLE_CHAR_PX = 8.4  # a title character's width, on average (15 px; DejaVu Sans, the widest of FONT's)
TOP_PX = TEMPLATE.layout.margin.t  # a figure's top margin unless its title needs more


def title_px(title: str) -> int:
    """How far down from the figure's top (px) a TEMPLATE title and its subtitle lines reach."""
    return 44 + 19 * title.count("<br>")


def top_margin(title: str, gap: int = 10) -> int:
    """The top margin of a figure with a `title_on_top` title: its lines, then `gap` px; at least TOP_PX."""
    return max(TOP_PX, title_px(title) + gap)


def colourbar_beside(fig: go.Figure, x: float, y: tuple[float, float], **kw) -> None:
    """Put the heatmaps' colour bar at paper `x` (a heatmap's right edge plus a gap), as tall as the domain `y`."""
    fig.update_traces(
        colorbar=dict(x=x, xanchor="left", y=y[1], yanchor="top", len=y[1] - y[0], ypad=0, **kw),
        selector=dict(type="heatmap"),
    )


def square_size(width: int | None, left: int = 88) -> tuple[int, int]:
    """(side, width) of a figure whose plot area is one square heatmap with its colour bar beside it: the side
    is SQUARE_PX, or what a given `width` leaves (ValueError under 200 px); width None: what they need."""
    if width is None:
        return SQUARE_PX, left + SQUARE_PX + COLOURBAR_PX
    side = min(SQUARE_PX, width - left - COLOURBAR_PX)
    if side < 200:
        raise ValueError(f"this figure needs a width of at least {left + COLOURBAR_PX + 200} px, got {width}")
    return side, width


def square_layout(fig: go.Figure, side: int, width: int, bottom: int, left: int = 88) -> None:
    """Size `fig` so its plot area is its one heatmap (axes x and y), `side` px square, with the colour bar right
    beside it; width past the colour bar stays empty on the right. Set the title first: its lines decide the
    top margin."""
    top = title_px(fig.layout.title.text or "") + 24
    fig.update_layout(
        width=width, height=top + side + bottom, margin=dict(l=left, r=width - left - side, t=top, b=bottom)
    )
    colourbar_beside(fig, 1 + 10 / side, (0, 1))


def add_masked_background(fig: go.Figure, row=None, col=None) -> None:
    """Grey behind a heatmap's subplot, so NaN cells (masked: a token cannot see later ones) read as grey."""
    fig.add_shape(
        type="rect",
        xref="x domain",
        yref="y domain",
        x0=0,
        x1=1,
        y0=0,
        y1=1,
        fillcolor=MASKED,
        line_width=0,
        layer="below",
        row=row,
        col=col,
    )


def signed_heatmap(z: np.ndarray, title: str, xtitle: str, ytitle: str, zmax: float) -> go.Figure:
    """A matrix, row 0 on top, on the diverging scale -zmax..zmax, its axes titled and its title hung from the top
    (its lines push the plot down): the look of the position-vector and RoPE matrices (`positions`, `rope`)."""
    fig = go.Figure(
        go.Heatmap(
            z=z,
            zmin=-zmax,
            zmax=zmax,
            zmid=0,
            colorscale=DIVERGING_SCALE,
            hovertemplate=f"{ytitle} %{{y}}, {xtitle} %{{x}}: %{{z:.3f}}<extra></extra>",
            colorbar=dict(thickness=12),
        )
    )
    fig.update_xaxes(title_text=xtitle, showgrid=False, zeroline=False)
    fig.update_yaxes(title_text=ytitle, showgrid=False, zeroline=False, autorange="reversed")
    top = top_margin(title)
    fig.update_layout(template=TEMPLATE, height=480 + top - TOP_PX, title=title_on_top(title), margin=dict(t=top))
    return fig
