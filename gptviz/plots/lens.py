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
