"""Tokens coloured by any scalar: the text laid out as text, one cell per token, its colour the value.

    plots.token_colours(tokens, values, label="loss (nats)")       # per-token loss, entropy, a neuron, ...
    plots.token_colours(tokens, values, highlight={41: "explained"})  # outline a cell, say why in its hover

The one reusable view behind attribution over a prompt, a neuron's activations, an NMF factor, or a head's
attention to one token (CircuitsVis's `colored_tokens`). It is a heatmap: lines wrap where the text has a newline
(a token that holds "↵" or "\\n") or when a line is full, so a char model's output reads like the text itself.
Signed values get a diverging scale centred on 0 (blue negative, red positive), others a sequential one from 0.
Cells with NaN values show the token uncoloured (e.g. tokens a step had not seen yet).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .style import (
    ATTENTION_SCALE,
    CHOSEN,
    DIVERGING_SCALE,
    TEMPLATE,
    as_numpy,
    short,
    subtitle,
    title_on_top,
    title_px,
)

CELL_PX = 26  # a line of tokens, in pixels
TOKEN_CHARS = 10  # a long token is shortened to this many characters in its cell
ROW_CHAR_BUDGET = 110  # characters of a line (tokens of a char model: 110 per line)
MIN_BODY_PX = 110  # a short text still gets a readable colour bar
LINE_CHAR_PX = 7.5  # a line's room per character, in px: 110 characters beside the colour bar of a 960 px figure
SIDES_PX = 130  # what is not the text's: the margins and the colour bar


def line_chars(width: int | None) -> int:
    """The characters a line of token cells holds in a figure `width` px wide (None: ROW_CHAR_BUDGET)."""
    return ROW_CHAR_BUDGET if width is None else max(12, int((width - SIDES_PX) / LINE_CHAR_PX))


def is_newline(token: str) -> bool:
    return "↵" in token or "\n" in token


def token_lines(tokens: list[str], per_line: int | None = None, chars: int = ROW_CHAR_BUDGET) -> list[list[int]]:
    """Positions laid out as lines: a new line after a newline token or when a line has `per_line` tokens
    (default: as many as `chars` characters of the longest shortened token allow)."""
    if per_line is None:
        widest = max((len(short(t, TOKEN_CHARS)) for t in tokens), default=1)
        per_line = max(6, min(64, chars // (widest + 1)))
    lines: list[list[int]] = [[]]
    for i, t in enumerate(tokens):
        if len(lines[-1]) >= per_line:
            lines.append([])
        lines[-1].append(i)
        if is_newline(t) and i < len(tokens) - 1:
            lines.append([])
    return lines


def colour_range(values: np.ndarray, signed: bool | None = None) -> dict:
    """Heatmap colour settings for `values`: diverging around 0 when signed (default: when any value < 0)."""
    finite = values[np.isfinite(values)]
    signed = bool(finite.size and finite.min() < 0) if signed is None else signed
    if signed:
        top = float(np.abs(finite).max()) if finite.size else 1.0
        return dict(colorscale=DIVERGING_SCALE, zmid=0, zmin=-(top or 1.0), zmax=top or 1.0)
    top = float(finite.max()) if finite.size else 1.0
    return dict(colorscale=ATTENTION_SCALE, zmin=0, zmax=top if top > 0 else 1.0)


def token_cells(z, text, hover, colours: dict, colorbar: dict, font_size: int) -> go.Heatmap:
    """A grid of token cells: each cell shows its token's text over its colour, the hover says the rest (NaN
    cells stay blank). Shared by every view that colours tokens (one row of text, or one row per example)."""
    return go.Heatmap(
        z=z,
        text=text,
        texttemplate="%{text}",
        textfont=dict(size=font_size),
        customdata=hover,
        hovertemplate="%{customdata}<extra></extra>",
        hoverongaps=False,
        xgap=1,
        ygap=1,
        colorbar=colorbar,
        **colours,
    )


def token_colours(
    tokens: list[str],
    values,
    title: str = "Tokens coloured by value",
    label: str = "value",
    notes: tuple[str, ...] = (),
    highlight: dict[int, str] | None = None,
    hover: list[str] | None = None,
    signed: bool | None = None,
    per_line: int | None = None,
    zrange: tuple[float, float] | None = None,
    width: int | None = None,
) -> go.Figure:
    """`tokens` (T,) laid out as text, each cell coloured by `values` (T,) (NaN: uncoloured).

    `highlight`: {position: note} cells to outline in orange (the note goes in the hover). `hover`: one extra
    line per token. `zrange`: fixed (min, max) of the colour scale (e.g. to compare several figures).
    `width`: the px the figure will be shown in (a panel's): lines hold what fits and the title wraps to it; the
    figure keeps no width of its own (it fills its container)."""
    v = as_numpy(values).reshape(-1)
    if len(v) != len(tokens):
        raise ValueError(f"got {len(tokens)} tokens but {len(v)} values; give one value per token")
    highlight = highlight or {}
    lines = token_lines(tokens, per_line, line_chars(width))
    cols = max(len(line) for line in lines)
    z = np.full((len(lines), cols), np.nan)
    text = np.full((len(lines), cols), "", dtype=object)
    custom = np.full((len(lines), cols), "", dtype=object)
    for r, line in enumerate(lines):
        for c, i in enumerate(line):
            z[r, c] = v[i]
            text[r, c] = short(tokens[i], TOKEN_CHARS)
            value = "—" if not np.isfinite(v[i]) else f"{v[i]:.4g}"
            extra = [hover[i]] if hover else []
            extra += [highlight[i]] if i in highlight else []
            custom[r, c] = "<br>".join([f"position {i} {tokens[i]!r}", f"{label}: {value}", *extra])
    colours = colour_range(v, signed)
    if zrange is not None:
        colours.update(zmin=zrange[0], zmax=zrange[1])
    colorbar = dict(thickness=12, lenmode="pixels", len=max(MIN_BODY_PX, CELL_PX * len(lines)), title=dict(text=label))
    fig = go.Figure(token_cells(z, text, custom, colours, colorbar, font_size=12))
    for i in highlight:
        r, c = next((r, line.index(i)) for r, line in enumerate(lines) if i in line)
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5, line=dict(color=CHOSEN, width=3))
    fig.update_xaxes(visible=False, range=[-0.5, cols - 0.5])
    fig.update_yaxes(visible=False, autorange="reversed", range=None)
    if CELL_PX * len(lines) < MIN_BODY_PX:  # keep cells CELL_PX high at the top; the rest stays empty
        fig.update_yaxes(autorange=False, range=[MIN_BODY_PX / CELL_PX - 0.5, -0.5])
    full_title = subtitle(title, *notes, max_px=None if width is None else width - 24)
    top = title_px(full_title) + 20
    fig.update_layout(
        template=TEMPLATE,
        title=title_on_top(full_title),
        height=top + 30 + max(MIN_BODY_PX, CELL_PX * len(lines)),
        margin=dict(l=20, r=20, t=top, b=30),
    )
    return fig
