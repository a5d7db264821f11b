"""Training views: train and val loss with the learning rate against step.

Reads the Trainer's history (`gptviz.train.Trainer.history`: objects with step, loss, lr, val_loss) and returns
a Figure; `add_loss_curves` puts the curves into a subplot for the training dashboard
(`gptviz.widgets.training`), which adds the attention snapshot beside them. Training is `gptviz.train`'s job.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import TEMPLATE, subtitle

LR_HEIGHT = 0.45  # the learning-rate peak's height as a fraction of the loss plot's height


def loss_title(stats, max_px: float | None = None) -> str:
    """The loss figures' title: the last step's losses and how to read the curves (wrapped to `max_px`)."""
    val = [s for s in stats if s.val_loss is not None]
    last = f"step {stats[-1].step}: train {stats[-1].loss:.3f}" if stats else "no steps yet"
    last += f", val {val[-1].val_loss:.3f}" if val else ""
    return subtitle(
        "Training loss",
        last,
        "healthy: falls fast, then slowly; val rising above train = overfitting",
        max_px=max_px,
    )


def add_train_val_loss(fig: go.Figure, stats, **where) -> None:
    """Train loss (line) and val loss (dots where it was measured) against step; `where`: the subplot (row=, col=,
    secondary_y=), as fig.add_trace takes it. Shared by the training dashboard and the fine-tuning figures."""
    val = [s for s in stats if s.val_loss is not None]
    for name, points, mode, color in (
        ("train loss", [(s.step, s.loss) for s in stats], "lines", "#2166ac"),
        ("val loss", [(s.step, s.val_loss) for s in val], "lines+markers", "#e6550d"),
    ):
        x, y = zip(*points) if points else ((), ())
        fig.add_trace(go.Scatter(name=name, x=list(x), y=list(y), mode=mode, line=dict(color=color, width=2)), **where)


def add_loss_curves(fig: go.Figure, stats, vocab_size: int | None = None, row=None, col=None) -> None:
    """Train loss (line), val loss (dots), learning rate (dotted, secondary y). The subplot at (row, col)
    must have been made with {"secondary_y": True}."""
    stats = list(stats)
    steps = [s.step for s in stats]
    where = dict(row=row, col=col) if row else {}
    add_train_val_loss(fig, stats, secondary_y=False, **where)
    fig.add_trace(
        go.Scatter(
            name="learning rate", x=steps, y=[s.lr for s in stats], mode="lines", line=dict(color="#9aa3b2", dash="dot")
        ),
        secondary_y=True,
        **where,
    )
    if vocab_size:
        fig.add_hline(
            y=math.log(vocab_size),
            line=dict(color="#9aa3b2", dash="dash", width=1),
            annotation_text=f"uniform guess ln V = {math.log(vocab_size):.2f}",
            annotation_position="top right",
            **where,
        )
    fig.update_xaxes(title_text="step", **where)
    fig.update_yaxes(title_text="cross-entropy loss (nats)", secondary_y=False, **where)
    peak = max((s.lr for s in stats), default=0.0)
    fig.update_yaxes(
        title_text="learning rate",
        secondary_y=True,
        showgrid=False,
        tickformat=".1~e",
        tickmode="auto",  # its own round ticks (0, 1e-3, 2e-3), not values at the loss axis's grid lines
        nticks=4,
        # the LR curve keeps to the lower half (its peak at LR_HEIGHT of the plot), away from the uniform-guess
        # line and its label at the top, where the loss starts; no data yet: no made-up ticks
        range=[0, peak / LR_HEIGHT] if peak > 0 else None,
        visible=peak > 0,
        **where,
    )


def loss_curves(stats, vocab_size: int | None = None) -> go.Figure:
    """Train/val loss and learning rate against step; a dashed line marks ln V, the loss of a uniform guess."""
    stats = list(stats)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    add_loss_curves(fig, stats, vocab_size)
    fig.update_layout(
        template=TEMPLATE,
        height=380,
        plot_bgcolor="white",
        title=loss_title(stats),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
    )
    return fig
