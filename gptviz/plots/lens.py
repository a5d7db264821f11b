"""The logit lens, drawn: the top next token after every layer (rows) at every position (columns).

Reads a `gptviz.lens.LogitLensRecord` and returns a Figure. Running the model to make the record is
`gptviz.lens.logit_lens_record`'s job: record once, redraw as often as the colour or the window changes.
Both figures take `width`, the px they will be shown in (a panel's): the title wraps, a cell's token is
shortened and the position labels thin out to fit; the figure keeps no width of its own (it fills its container).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..lens import LogitLensRecord
from .style import (
    ATTENTION_SCALE,
    TEMPLATE,
    as_numpy,
    short,
    subtitle,
    ticks,
    title_on_top,
    top_margin,
    window_note,
    window_start,
)

SIDES_PX = 190  # of a lens figure's width, what is not cells: the layer labels and axis title, the colour bar
CELL_CHAR_PX = 6.5  # a cell's room per character of its token (10 px text)


def _cell_chars(width: int | None, n: int) -> int:
    """How many characters of a token a cell shows, `n` cells across a figure `width` px wide."""
    if width is None:
        return max(2, min(10, 120 // max(1, n)))
    return max(1, min(10, int((width - SIDES_PX) / max(1, n) / CELL_CHAR_PX)))


def _layout(fig: go.Figure, title: str, rows: int) -> None:
    top = top_margin(title)
    fig.update_layout(
        template=TEMPLATE,
        height=max(320, 110 + 34 * rows) + top - 90,
        title=title_on_top(title),
        margin=dict(t=top),
    )


def _position_ticks(tokens: list[str], start: int, width: int | None) -> dict:
    axis_px = None if width is None else width - SIDES_PX
    return ticks(tokens, start, 64 if axis_px is None else max(6, int(axis_px // 14)), length_px=axis_px)


def logit_lens_figure(
    lens: LogitLensRecord, colour: str = "top", max_positions: int = 48, width: int | None = None
) -> go.Figure:
    """Top token at every layer (rows, embed at the bottom) and position (columns); colour = its probability,
    or (colour="next") the probability given to the token that really comes next."""
    if colour not in ("top", "next"):
        raise ValueError(f"colour must be 'top' or 'next', got {colour!r}")
    T = len(lens.tokens)
    start = window_start(T, max_positions)
    top_p, next_p = as_numpy(lens.top_probs), as_numpy(lens.next_probs)  # (L+1, T) each
    z = (top_p if colour == "top" else next_p)[:, start:]
    text = np.array(lens.top_tokens, dtype=object)[:, start:]
    nxt = [lens.tokens[t + 1] if t + 1 < T else "—" for t in range(start, T)]
    pos = np.arange(start, T)
    hover = np.array(
        [
            [
                f"{lens.layers[l]} · position {p} {short(lens.tokens[p], 16)}<br>top next: "
                f"{short(text[l, i], 16)} ({top_p[l, p]:.3f})<br>true next: "
                f"{short(nxt[i], 16)} ({next_p[l, p]:.3f})"
                for i, p in enumerate(pos)
            ]
            for l in range(len(lens.layers))
        ],
        dtype=object,
    )
    chars = _cell_chars(width, len(pos))  # characters of a cell's token that fit its width
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=pos,
            y=list(range(len(lens.layers))),
            text=[[short(t, chars) for t in r] for r in text],
            texttemplate="%{text}" if len(pos) <= 64 else None,
            textfont=dict(size=10),
            customdata=hover,
            zmin=0,
            zmax=1,
            hoverongaps=False,
            colorscale=ATTENTION_SCALE,
            hovertemplate="%{customdata}<extra></extra>",
            colorbar=dict(thickness=12, title="p"),
        )
    )
    fig.update_xaxes(
        title_text="input position (T)", showgrid=False, **_position_ticks(lens.tokens[start:], start, width)
    )
    fig.update_yaxes(
        title_text="read out after (L)", tickvals=list(range(len(lens.layers))), ticktext=lens.layers, showgrid=False
    )
    what = "probability of the top token" if colour == "top" else "probability of the true next token"
    title = subtitle(
        "Logit lens: what each layer would predict next",
        f"cell text = top token; colour = {what}",
        window_note(start, T),
        max_px=None if width is None else width - 24,
    )
    _layout(fig, title, len(lens.layers))
    return fig


def rank_figure(
    lens: LogitLensRecord, max_positions: int = 48, start: int | None = None, width: int | None = None
) -> go.Figure:
    """ecco's rankings: the rank (1 = top guess) of the true next token (or of `lens.rank_token`) after every
    layer (rows) at every position (columns); darker = better rank, log scale. Give the lens a prompt plus its
    generation and the columns from the prompt's end on are the generation's steps. `start`: first position
    shown (default: the last `max_positions`)."""
    if lens.ranks is None:
        raise ValueError("this lens record has no ranks; make it again with gptviz.lens.logit_lens_record")
    T = len(lens.tokens)
    start = window_start(T, max_positions) if start is None else max(0, min(start, T - 1))
    end = min(T, start + max_positions)
    ranks = as_numpy(lens.ranks)[:, start:end]  # (L+1, shown)
    pos = np.arange(start, end)
    if lens.rank_token is None:
        target = [lens.tokens[p + 1] if p + 1 < T else "—" for p in pos]
        what = "rank of the true next token"
    else:
        target = [f"id {lens.rank_token}"] * len(pos)
        what = f"rank of token id {lens.rank_token} at every position"
    chars = 99 if width is None else _cell_chars(width, len(pos))  # a rank too long for its cell: shorter
    text = [["" if np.isnan(r) else _fit_number(int(r), chars) for r in row] for row in ranks]
    hover = np.array(
        [
            [
                f"{lens.layers[l]} · position {p} {short(lens.tokens[p], 16)}<br>next {short(target[i], 16)!r}: rank "
                + ("—" if np.isnan(ranks[l, i]) else f"{int(ranks[l, i])}")
                for i, p in enumerate(pos)
            ]
            for l in range(len(lens.layers))
        ],
        dtype=object,
    )
    z = -np.log10(ranks)  # rank 1 -> 0 (the top), larger ranks more negative
    worst = float(np.nanmax(np.log10(ranks))) if np.isfinite(ranks).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=pos,
            y=list(range(len(lens.layers))),
            text=text,
            texttemplate="%{text}" if len(pos) <= 64 else None,
            textfont=dict(size=10),
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            hoverongaps=False,
            colorscale=[[0, "#ffffff"], [0.5, "#9ecae1"], [1, "#08306b"]],
            zmin=-max(worst, 1.0),
            zmax=0,
            colorbar=dict(
                thickness=12,
                title="rank",
                tickvals=[-k for k in range(int(max(worst, 1.0)) + 1)],
                ticktext=[str(10**k) for k in range(int(max(worst, 1.0)) + 1)],
            ),
        )
    )
    fig.update_xaxes(
        title_text="input position (T)", showgrid=False, **_position_ticks(lens.tokens[start:end], start, width)
    )
    fig.update_yaxes(
        title_text="read out after (L)", tickvals=list(range(len(lens.layers))), ticktext=lens.layers, showgrid=False
    )
    title = subtitle(
        "Logit lens ranks: how soon each layer ranks the token first",
        f"cell = {what} (1 = the layer's top guess)",
        f"showing positions {start}-{end - 1} of {T}" if (start or end < T) else "",
        max_px=None if width is None else width - 24,
    )
    _layout(fig, title, len(lens.layers))
    return fig


def _fit_number(n: int, chars: int) -> str:
    """A rank as a cell shows it: whole when it fits, else in thousands ("12k"), else "…" (the hover has it)."""
    text = str(n)
    if len(text) <= chars:
        return text
    k = f"{round(n / 1000)}k"
    return k if len(k) <= chars else "…"
