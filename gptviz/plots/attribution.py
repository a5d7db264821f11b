"""Input attribution, drawn: one step's attributions as coloured tokens, or every step as a matrix.

Reads a `gptviz.attribution.AttributionRecord` (the model ran there) and returns Figures:
`attribution_tokens(rec, step)` colours the step's context (the token it explains outlined after it);
`attribution_matrix(rec)` has one row per generated token and one column per context token (grey: not yet
written when that token was chosen), a line where the prompt ends. Red = pushed the logit up, blue = down.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..attribution import METHOD_LABELS, AttributionRecord
from .style import (
    DIVERGING_SCALE,
    TEMPLATE,
    add_masked_background,
    as_numpy,
    colourbar_title,
    short,
    subtitle,
    ticks,
    title_on_top,
    top_margin,
)
from .tokens import token_colours


def step_label(rec: AttributionRecord, step: int) -> str:
    p = rec.positions[step]
    return f"step {step}: {rec.tokens[p]!r} at position {p}"


def attribution_tokens(
    rec: AttributionRecord, step: int = 0, normalise: bool = False, width: int | None = None
) -> go.Figure:
    """The context of `step` (rows of `rec`) coloured by its attributions; the explained token is shown after
    it, outlined. `normalise`: divide by the largest |attribution| (so steps compare by shape, not size).
    `width`: the px it will be shown in (`token_colours`)."""
    p = rec.positions[step]
    values = as_numpy(rec.row(step))
    total = float(np.nansum(values))
    if normalise:
        values = values / (np.abs(values).max() or 1.0)
    tokens = rec.tokens[: p + 1]
    shown = np.append(values, np.nan)  # the explained token, uncoloured
    where = "prompt" if p < rec.prompt_len else "generated"
    hover = ["prompt" if i < rec.prompt_len else "generated" for i in range(p)] + ["the explained token"]
    base = float(rec.baseline_scores[step])
    notes = [
        f"{METHOD_LABELS[rec.method]} of the logit of {rec.tokens[p]!r} ({where}, position {p}) = "
        f"{float(rec.scores[step]):.2f}",
        f"attributions sum to {total:.2f}"
        + ("" if np.isnan(base) else f" (logit - baseline logit = {float(rec.scores[step]) - base:.2f})"),
        "red pushed it up, blue down",
    ]
    return token_colours(
        tokens,
        shown,
        title=f"Why {short(rec.tokens[p], 16)!r}? What each earlier token contributed",
        label="share of max" if normalise else "attribution",
        notes=tuple(notes),
        highlight={p: "the token being explained"},
        hover=hover,
        signed=True,
        width=width,
    )


def attribution_matrix(rec: AttributionRecord, normalise: bool = True, width: int | None = None) -> go.Figure:
    """Rows: the explained (generated) tokens; columns: every context token; grey where a row had not seen it.
    `normalise` (default): each row divided by its largest |attribution|, so small and large logits compare.
    `width`: the px it will be shown in (a panel's): the title wraps and the token labels thin out to fit it;
    the figure keeps no width of its own."""
    values = as_numpy(rec.values)  # (n, T)
    if normalise:
        values = values / np.nanmax(np.abs(values), axis=1, keepdims=True).clip(1e-12)
    n, T = values.shape
    rows = [f"{i}: {short(rec.tokens[p], 8)}" for i, p in enumerate(rec.positions)]
    hover = np.array(
        [
            [
                f"{step_label(rec, i)}<br>context {j} {short(rec.tokens[j], 16)!r} "
                f"({'prompt' if j < rec.prompt_len else 'generated'})<br>"
                + ("—" if np.isnan(values[i, j]) else f"{values[i, j]:+.3f}")
                for j in range(T)
            ]
            for i in range(n)
        ],
        dtype=object,
    )
    top = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=np.arange(T),
            y=np.arange(n),
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            hoverongaps=False,
            colorscale=DIVERGING_SCALE,
            zmid=0,
            zmin=-top,
            zmax=top,
            colorbar=dict(
                thickness=12, title=colourbar_title("share of row max" if normalise else "attribution", width)
            ),
        )
    )
    add_masked_background(fig)
    fig.add_vline(x=rec.prompt_len - 0.5, line=dict(color="#1f2430", width=1, dash="dot"))
    axis_px = None if width is None else width - 200  # the y labels, the colour bar
    fig.update_xaxes(
        title_text="context token (T)",
        showgrid=False,
        range=[-0.5, T - 0.5],
        **ticks(rec.tokens, 0, 80 if axis_px is None else max(8, axis_px // 9), length_px=axis_px),
    )
    fig.update_yaxes(
        title_text="generated token",
        autorange="reversed",
        showgrid=False,
        tickmode="array",
        tickvals=list(range(n)),
        ticktext=rows,
        tickfont=dict(size=10 if n > 24 else 11),
    )
    title = subtitle(
        f"{METHOD_LABELS[rec.method]}: every generated token (rows) against its context (columns)",
        "red pushed the row's token up, blue down",
        "dotted line: end of the prompt; grey: not yet written",
        max_px=None if width is None else width - 24,
    )
    top = top_margin(title)
    fig.update_layout(
        template=TEMPLATE,
        height=max(320, 170 + 16 * n) + top - 90,
        title=title_on_top(title),
        margin=dict(t=top),
    )
    return fig
