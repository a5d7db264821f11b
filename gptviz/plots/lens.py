"""The logit lens, drawn: the top next token after every layer (rows) at every position (columns).

Reads a `gptviz.lens.LogitLensRecord` and returns a Figure. Running the model to make the record is
`gptviz.lens.logit_lens_record`'s job: record once, redraw as often as the colour or the window changes.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..lens import LogitLensRecord
from .style import ATTENTION_SCALE, TEMPLATE, as_numpy, short, subtitle, ticks, window_note, window_start


def logit_lens_figure(lens: LogitLensRecord, colour: str = "top", max_positions: int = 48) -> go.Figure:
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
    width = max(2, min(10, 120 // max(1, len(pos))))  # characters of a cell's token that fit its width
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=pos,
            y=list(range(len(lens.layers))),
            text=[[short(t, width) for t in r] for r in text],
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
    fig.update_xaxes(title_text="input position (T)", showgrid=False, **ticks(lens.tokens[start:], start, 64))
    fig.update_yaxes(
        title_text="read out after (L)", tickvals=list(range(len(lens.layers))), ticktext=lens.layers, showgrid=False
    )
    what = "probability of the top token" if colour == "top" else "probability of the true next token"
    fig.update_layout(
        template=TEMPLATE,
        height=max(320, 110 + 34 * len(lens.layers)),
        title=subtitle(
            "Logit lens: what each layer would predict next",
            f"cell text = top token; colour = {what}",
            window_note(start, T),
        ),
    )
    return fig


def rank_figure(lens: LogitLensRecord, max_positions: int = 48, start: int | None = None) -> go.Figure:
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
    text = [["" if np.isnan(r) else f"{int(r)}" for r in row] for row in ranks]
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
    fig.update_xaxes(title_text="input position (T)", showgrid=False, **ticks(lens.tokens[start:end], start, 64))
    fig.update_yaxes(
        title_text="read out after (L)", tickvals=list(range(len(lens.layers))), ticktext=lens.layers, showgrid=False
    )
    fig.update_layout(
        template=TEMPLATE,
        height=max(320, 110 + 34 * len(lens.layers)),
        title=subtitle(
            "Logit lens ranks: how soon each layer ranks the token first",
            f"cell = {what} (1 = the layer's top guess)",
            f"showing positions {start}-{end - 1} of {T}" if (start or end < T) else "",
        ),
    )
    return fig
