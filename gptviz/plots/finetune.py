"""Fine-tuning, drawn: a classifier's loss, held-out accuracy and confusion matrix; an LM's loss and which heads
changed; what a fine-tuned classifier makes of one text.

Reads what `gptviz.finetune`'s jobs hold (the Trainer's history, accuracies, baselines, an evaluation, `explain`'s
dict) and returns Figures; training and evaluating are `gptviz.finetune`'s job, the panel that shows these is
`gptviz.widgets.finetune.FinetunePanel`. Each figure puts its parts side by side, or, given a `width` (the px it
will be shown in, a panel's) under NARROW_PX, one under the other; its title wraps to that width. The figures
keep no width of their own (they fill their container).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import ATTENTION_SCALE, METRIC_SCALE, TEMPLATE, subtitle, ticks, title_on_top, top_margin
from .training import add_train_val_loss

NARROW_PX = 700  # narrower: a figure's parts one under the other (three side by side need more than 640 px)
PART_PX = 240  # stacked: each part's height (a heatmap with one row per head: more)
STACK_GAP_PX = 110  # stacked: between two parts, the upper one's axis labels and the lower one's name
LEGEND_PX = 60  # stacked: the legend's room at the bottom, under the last part's axis labels


def _parts(n: int, width: int | None, heights: list[float], side: dict) -> tuple[go.Figure, bool, list[dict]]:
    """A figure of `n` parts: side by side (`side`: make_subplots' arguments) or, under NARROW_PX, in a column
    whose parts are `heights` px tall; with where each part is (row=, col=) and whether they are stacked."""
    stacked = width is not None and width < NARROW_PX
    if not stacked:
        return make_subplots(1, n, **side), False, [dict(row=1, col=i + 1) for i in range(n)]
    total = sum(heights) + STACK_GAP_PX * (n - 1)
    fig = make_subplots(
        n,
        1,
        row_heights=[h / sum(heights) for h in heights],
        vertical_spacing=STACK_GAP_PX / total,
        subplot_titles=side.get("subplot_titles"),
    )
    fig.update_annotations(font_size=13)  # the parts' names, each over the whole width
    return fig, True, [dict(row=i + 1, col=1) for i in range(n)]


def _beside(fig: go.Figure, stacked: bool, at: dict) -> dict:
    """A heatmap's colour bar, as tall as its own part when the parts are stacked."""
    if not stacked:
        return dict(thickness=10)
    y0, y1 = fig.get_subplot(**at).yaxis.domain
    return dict(thickness=10, y=y0, yanchor="bottom", len=y1 - y0)


def _room(width: int | None) -> float | None:
    return None if width is None else width - 24


def _finish(fig: go.Figure, title: str, stacked: bool, height: float, **layout) -> None:
    """The title (already wrapped) hung from the top, the legend under the parts, and the height: `height` px
    of parts (and the gaps between them)."""
    top = top_margin(title, gap=44)  # and the parts' names
    bottom = 80 + LEGEND_PX if stacked else 60
    if stacked:  # at the very bottom, under the last part's axis labels, however tall they are
        legend = dict(orientation="h", x=0, y=0, yref="container", yanchor="bottom")
    else:
        legend = dict(orientation="h", y=-0.2)
    fig.update_layout(
        template=TEMPLATE,
        height=top + height + bottom,
        margin=dict(t=top, b=bottom),
        title=title_on_top(title),
        legend=legend,
        **layout,
    )


def classifier_figure(
    stats,
    accuracy: list[tuple[int, float]],
    base: dict,
    ev,
    headline: str,
    full: tuple[int, float] | None = None,
    width: int | None = None,
) -> go.Figure:
    """Loss (left), held-out accuracy against the baselines (middle), confusion matrix (right).

    `accuracy`: (step, accuracy) on the live subset during training; `full`: (step, accuracy) on every test
    example (a diamond); `headline`: the title's accuracy, worded with how many examples it counts."""
    names = ["loss", "held-out accuracy", "confusion (rows: true)"]
    fig, stacked, at = _parts(
        3,
        width,
        [PART_PX] * 3,
        dict(column_widths=[0.34, 0.3, 0.36], horizontal_spacing=0.09, subplot_titles=names),
    )
    add_loss(fig, stats, **at[0])
    fig.add_trace(
        go.Scatter(
            name="accuracy",
            x=[s for s, _ in accuracy],
            y=[a for _, a in accuracy],
            mode="lines+markers",
            line=dict(color="#31a354"),
        ),
        **at[1],
    )
    if full is not None:
        fig.add_trace(
            go.Scatter(
                name="all test examples",
                x=[full[0]],
                y=[full[1]],
                mode="markers",
                marker=dict(symbol="diamond", size=11, color="#006d2c"),
            ),
            **at[1],
        )
    # labels at opposite ends of their lines: the two baselines are often equal on a small test set
    for name, key, dash, where in (
        ("majority", "majority_baseline", "dot", "bottom left"),
        ("bag of words", "bow_baseline", "dash", "bottom right"),
    ):
        if base.get(key) is not None:
            fig.add_hline(
                y=base[key],
                line=dict(color="#9aa3b2", dash=dash),
                annotation_text=f"{name} {base[key]:.2f}",
                annotation_position=where,
                annotation_font_size=11,
                **at[1],
            )
    labels = ev.labels if ev is not None else []
    z = ev.confusion.numpy().astype(float) if ev is not None else np.zeros((0, 0))
    fig.add_trace(
        go.Heatmap(
            name="confusion",
            z=z,
            x=labels,
            y=labels,
            colorscale="Blues",
            showscale=False,
            text=z.astype(int).astype(str),
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z:.0f}<extra></extra>",
        ),
        **at[2],
    )
    fig.update_yaxes(range=[0, 1], title_text="accuracy", **at[1])
    fig.update_xaxes(title_text="step", **at[1])
    fig.update_xaxes(title_text="predicted", **at[2])
    fig.update_yaxes(autorange="reversed", **at[2])
    title = subtitle("Classifier fine-tuning", headline, max_px=_room(width))
    _finish(fig, title, stacked, 3 * PART_PX + 2 * STACK_GAP_PX if stacked else 420 - 150)
    return fig


def lm_figure(stats, val_before: float, change, width: int | None = None) -> go.Figure:
    """Loss with the val loss before fine-tuning (left), mean |Δ attention| per head on the probe (right)."""
    L = change.shape[0]
    fig, stacked, at = _parts(
        2,
        width,
        [PART_PX, max(PART_PX * 0.75, 24 * L)],
        dict(
            column_widths=[0.6, 0.4],
            horizontal_spacing=0.12,
            subplot_titles=["loss", "how much each head changed (probe text)"],
        ),
    )
    add_loss(fig, stats, **at[0])
    fig.add_hline(
        y=val_before,
        line=dict(color="#e6550d", dash="dot"),
        annotation_text=f"val before {val_before:.3f}",
        annotation_position="top right",
        **at[0],
    )
    fig.add_trace(
        go.Heatmap(
            name="change",
            z=change.numpy(),
            colorscale=METRIC_SCALE,
            zmin=0,
            colorbar=_beside(fig, stacked, at[1]),
            hovertemplate="layer %{y}, head %{x}: %{z:.4f}<extra></extra>",
        ),
        **at[1],
    )
    fig.update_xaxes(title_text="head (nh)", dtick=1, showgrid=False, **at[1])
    fig.update_yaxes(title_text="layer (L)", autorange="reversed", dtick=1, showgrid=False, **at[1])
    parts_px = PART_PX + max(PART_PX * 0.75, 24 * L) + STACK_GAP_PX if stacked else 420 - 150
    _finish(fig, subtitle("Language-model fine-tuning", max_px=_room(width)), stacked, parts_px)
    return fig


def prediction_figure(explained: dict, width: int | None = None) -> go.Figure:
    """Class probabilities (left) and the pooled token's attention, one row per layer and head (right)."""
    att = explained["attention"]  # (L, nh, T)
    L, nh, T = att.shape
    rows_px = max(200, 14 * L * nh)
    fig, stacked, at = _parts(
        2,
        width,
        [180, rows_px],
        dict(
            column_widths=[0.25, 0.75],
            horizontal_spacing=0.12,
            subplot_titles=["class probabilities", "attention of the pooled token"],
        ),
    )
    p = explained["probs"].numpy()
    fig.add_trace(
        go.Bar(
            name="p",
            x=explained["labels"],
            y=p,
            marker_color=["#e6550d" if i == p.argmax() else "#9aa3b2" for i in range(len(p))],
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        ),
        **at[0],
    )
    rows = [f"L{l} H{h}" for l in range(L) for h in range(nh)]
    fig.add_trace(
        go.Heatmap(
            name="attention",
            z=att.reshape(L * nh, T).numpy(),
            x=list(range(T)),
            y=rows,
            colorscale=ATTENTION_SCALE,
            zmin=0,
            zmax=1,
            colorbar=_beside(fig, stacked, at[1]),
            customdata=[explained["tokens"]] * (L * nh),
            hovertemplate="%{y} → %{x} %{customdata}: %{z:.3f}<extra></extra>",
        ),
        **at[1],
    )
    axis_px = None if width is None else (width - 160 if stacked else 0.75 * width - 160)
    fig.update_yaxes(range=[0, 1], **at[0])
    fig.update_xaxes(
        title_text="position (T)",
        **ticks(explained["tokens"], 0, 80 if axis_px is None else max(6, int(axis_px // 10)), length_px=axis_px),
        **at[1],
    )
    fig.update_yaxes(autorange="reversed", **at[1])
    best = explained["labels"][int(p.argmax())]
    parts_px = 180 + rows_px + STACK_GAP_PX if stacked else max(360, 120 + 14 * L * nh) - 150
    _finish(
        fig, subtitle(f"Your text: {best} ({p.max():.2f})", max_px=_room(width)), stacked, parts_px, showlegend=False
    )
    return fig


def add_loss(fig: go.Figure, stats, row: int = 1, col: int = 1) -> None:
    """Train loss (line) and val loss (dots) against step, into the subplot at (row, col)."""
    add_train_val_loss(fig, list(stats), row=row, col=col)
    fig.update_xaxes(title_text="step", row=row, col=col)
