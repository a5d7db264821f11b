"""Checkpoint diff, drawn: which heads' attention changed and how next-token probabilities moved.

Reads two `gptviz.records.ForwardRecord`s of the same prompt (before and after fine-tuning) and returns a
Figure. The per-head change it draws, `head_change` (L, nh), comes from the two records alone; a CheckpointDiff
(`gptviz.finetune`) already holds it and passes it in (`change=`), so it is not computed twice. Making the
records (running both models) is `gptviz.finetune`'s job.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..records import head_change
from .style import (
    COLOURBAR_PX,
    METRIC_SCALE,
    TEMPLATE,
    WIDTH,
    as_numpy,
    subtitle,
    ticks,
    title_on_top,
    title_px,
    window_note,
    window_start,
)

DIFF_MARGIN = dict(l=70, r=16, b=84)
DIFF_HEADS_PX, DIFF_PX = 240, 300  # the heads' map: width; both parts: height
STACK_GAP_PX = 96  # narrow, the heads' map above the bars: between them its axis title and the bars' caption


def checkpoint_diff(before, after, max_tokens: int = 64, width: int = WIDTH, change=None) -> go.Figure:
    """Which heads changed most (mean |Δ attention|, with its colour bar) and how next-token probabilities moved
    (bars), on the same prompt, in a figure `width` px wide: side by side, or under ~700 px one above the other.

    `change` (L, nh): the `head_change` already computed (a CheckpointDiff's `head_change`), else computed here."""
    if change is None:
        change = head_change(before, after)  # also checks that both records hold the same prompt
    elif before.ids.tolist() != after.ids.tolist() or tuple(change.shape) != tuple(after.attention.shape[:2]):
        raise ValueError(
            f"change (shape {tuple(change.shape)}) must be head_change(before, after) of these two "
            f"records: the same prompt, expected (L, nh) = {tuple(after.attention.shape[:2])}"
        )
    change = as_numpy(change)  # (L, nh)
    T = after.T
    start = window_start(T, max_tokens)
    top_after = as_numpy(after.top_probs[:, 0])
    before_of_top = []
    for t in range(T):  # probability the old model gave to the new model's favourite (0 if outside its top-k)
        match = (before.top_ids[t] == after.top_ids[t, 0]).nonzero()
        before_of_top.append(float(before.top_probs[t, match[0, 0]]) if len(match) else 0.0)
    pos = np.arange(start, T)
    names = [after.top_tokens[t][0] for t in range(start, T)]
    # in px: the heads' map, its colour bar, the bars' probability labels, the bars; or (narrow) the heads' map
    # above the bars, each as wide as it may be
    m = DIFF_MARGIN
    pw = width - m["l"] - m["r"]
    x2 = DIFF_HEADS_PX + COLOURBAR_PX + 60
    stacked = pw - x2 < 200
    heads_px = min(DIFF_HEADS_PX, pw - COLOURBAR_PX) if stacked else DIFF_HEADS_PX
    if stacked and (heads_px < 120 or pw < 200):
        raise ValueError(f"checkpoint_diff needs a width of at least {m['l'] + m['r'] + 210} px, got {width}")
    heads_h = min(DIFF_PX, max(120, 24 * change.shape[0])) if stacked else DIFF_PX
    ph = heads_h + STACK_GAP_PX + DIFF_PX if stacked else DIFF_PX
    bars_x = (0.0, 1.0) if stacked else (x2 / pw, 1.0)
    fig = make_subplots(1, 2)
    fig.add_trace(
        go.Heatmap(
            name="change",
            z=change,
            colorscale=METRIC_SCALE,
            zmin=0,
            colorbar=dict(
                x=(heads_px + 10) / pw, xanchor="left", thickness=10, len=heads_h / ph, y=1, yanchor="top", ypad=0
            ),
            hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>",
        ),
        1,
        1,
    )
    for name, y, colour in (("before", before_of_top[start:], "#9aa3b2"), ("after", top_after[start:], "#2166ac")):
        fig.add_trace(
            go.Bar(
                name=name,
                x=pos,
                y=y,
                marker_color=colour,
                text=names,
                textposition="none",
                hovertemplate=f"{name}: p(%{{text}}) = %{{y:.3f}}<extra></extra>",
            ),
            1,
            2,
        )
    L, nh = change.shape
    fig.update_xaxes(
        title_text="head (nh)",
        showgrid=False,
        dtick=1 if nh <= 16 else None,
        domain=[0, heads_px / pw],
        row=1,
        col=1,
    )
    fig.update_yaxes(
        title_text="layer (L)",
        autorange="reversed",
        showgrid=False,
        dtick=1 if L <= 16 else None,
        domain=[1 - heads_h / ph, 1],
        row=1,
        col=1,
    )
    fig.update_xaxes(
        title_text="position (T)",
        domain=list(bars_x),
        **ticks(after.tokens[start:], start, length_px=pw * (bars_x[1] - bars_x[0])),
        row=1,
        col=2,
    )
    fig.update_yaxes(title_text="probability", range=[0, 1], domain=[0, DIFF_PX / ph], row=1, col=2)
    # each part's caption above it, left-aligned; the legend at the bars' top right, on the caption's line
    for axis, text in (("x", "mean |Δ attention| per head"), ("x2", "probability of the new top next token")):
        fig.add_annotation(
            text=text,
            xref=f"{axis} domain",
            yref="paper",
            x=0,
            y=DIFF_PX / ph if axis == "x2" else 1,
            yshift=6,
            showarrow=False,
            xanchor="left",
            yanchor="bottom",
            font_size=12,
        )
    l, h = np.unravel_index(np.nanargmax(change), change.shape)
    title = subtitle(
        "Checkpoint diff on the same prompt",
        f"most changed: layer {l}, head {h}",
        window_note(start, T),
        max_px=width - 24,
    )
    top = title_px(title) + 36
    # narrow, the legend goes under the bars' caption (the caption takes their whole width)
    legend_y = dict(y=DIFF_PX / ph, yanchor="top") if stacked else dict(y=1, yanchor="bottom")
    fig.update_layout(
        template=TEMPLATE,
        width=width,
        height=top + ph + m["b"],
        margin=dict(m, t=top),
        barmode="group",
        title=title_on_top(title),
        legend=dict(orientation="h", x=1, xanchor="right", font_size=11, bgcolor="rgba(255,255,255,0.8)", **legend_y),
    )
    return fig
