"""Generation views: the candidates at one sampling step, stage by stage, and where the model looked.

Reads a `gptviz.steps.StepRecord` (candidates, their probabilities after each stage, the new token's
attention row) and returns a Figure; `add_candidates` and `add_attention_row` put a view into a subplot for the
generation panel (`gptviz.widgets.generation`). Sampling and recording the steps is `gptviz.sampling`'s job;
colours and ticks come from `style`.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .style import CHOSEN, FILTERED, STAGE_COLOURS, TEMPLATE, as_numpy, short, subtitle, ticks

STAGE_LABELS = {
    "raw": "raw",
    "repetition_penalty": "after repetition penalty",
    "no_repeat_ngram": "after no-repeat-n-gram",
    "min_new_tokens": "after min-new-tokens (no eos yet)",
    "temperature": "after temperature",
    "top_k": "after top-k",
    "top_p": "after top-p",
}


def step_title(step, forced: bool = False) -> str:
    """What happened at a step; `forced`: the token was picked by a fork, not by the sampler."""
    token = repr(short(step.token, 16)) if step.token is not None else f"id {step.token_id}"
    how = (
        f"forked here: you chose {token} (the sampler gave it p = {step.prob:.3f}, raw p = {step.raw_prob:.3f})"
        if forced
        else f"chose {token}, p = {step.prob:.3f} (raw p = {step.raw_prob:.3f})"
    )
    return subtitle(
        f"Step {step.step} (position {step.position}): {how}",
        f"entropy {step.entropy:.2f} nats",
        "bars: each candidate's probability after every stage",
        "hatched grey = removed by that stage",
        "orange outline = chosen",
    )


def add_candidates(fig: go.Figure, step, row=None, col=None) -> None:
    """One bar trace per stage over the step's k candidates (the same ids at every stage, in raw order);
    customdata holds the candidate ids (a click on a bar names a token). A candidate a stage removes is
    drawn hatched grey at the height it had before that stage."""
    ids = [int(i) for i in step.candidates.tolist()]
    names = list(step.candidate_tokens) if step.candidate_tokens else [f"id {i}" for i in ids]
    prev = None
    for n, stage in enumerate(step.stages):
        p = as_numpy(stage.probs)
        cut = (p <= 0) & (prev > 0) if prev is not None else np.zeros(len(p), dtype=bool)
        label = STAGE_LABELS.get(stage.name, stage.name)
        fig.add_trace(
            go.Bar(
                name=f"{label} ({stage.kept} kept)",
                x=list(range(len(ids))),
                y=np.where(cut, prev, p) if prev is not None else p,
                customdata=ids,
                text=names,
                textposition="none",
                hovertext=[
                    f"removed (was {q:.3f})" if c else f"p = {v:.3f}"
                    for c, q, v in zip(cut, prev if prev is not None else p, p)
                ],
                marker=dict(
                    color=[FILTERED if c else STAGE_COLOURS[n % len(STAGE_COLOURS)] for c in cut],
                    pattern=dict(shape=["/" if c else "" for c in cut], fgcolor="#9aa3b2"),
                    line=dict(color=CHOSEN, width=[3 if i == step.token_id else 0 for i in ids]),
                ),
                hovertemplate=f"{label}: %{{text}} %{{hovertext}}<extra>click to fork</extra>",
            ),
            row=row,
            col=col,
        )
        prev = p
    fig.update_xaxes(
        title_text="candidate next token (k)",
        tickvals=list(range(len(ids))),
        row=row,
        col=col,
        ticktext=[f"<b>{short(t)}</b>" if i == step.token_id else short(t) for i, t in zip(ids, names)],
    )
    fig.update_yaxes(title_text="probability", range=[0, 1.02], row=row, col=col)


def step_candidates(step) -> go.Figure:
    """Candidate probabilities at one step, per sampling stage (raw, penalties, temperature, top-k, top-p)."""
    fig = go.Figure()
    add_candidates(fig, step)
    fig.update_layout(
        template=TEMPLATE,
        height=420,
        barmode="group",
        plot_bgcolor="white",
        title=step_title(step),
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


def row_values(step, layer: int, head: int | None) -> np.ndarray:
    """The new token's attention over its context (Tk,): one head, or the mean over heads (head=None)."""
    if step.attention is None:
        raise ValueError("this step has no attention (generated with record_attention=False)")
    a = as_numpy(step.attention)
    L, nh = a.shape[:2]
    if not 0 <= layer < L or (head is not None and not 0 <= head < nh):
        raise ValueError(f"layer {layer}, head {head} out of range (L={L}, nh={nh})")
    return a[layer].mean(0) if head is None else a[layer, head]


def row_title(step, layer: int, head: int | None) -> str:
    who = "mean over heads" if head is None else f"head {head}"
    return f"where the model looked to choose it (layer {layer}, {who})"


def add_attention_row(
    fig: go.Figure,
    step,
    layer: int,
    head: int | None,
    tokens: list[str] | None,
    row=None,
    col=None,
    length_px: float | None = None,
) -> None:
    """Bars (trace "attention row") of the new token's attention over context positions; `length_px`, the
    x axis's length in pixels where known, sizes the token labels."""
    y = row_values(step, layer, head)
    x = np.arange(step.context_start, step.context_start + len(y))
    text = list(tokens[step.context_start : step.context_start + len(y)]) if tokens else [str(i) for i in x]
    fig.add_trace(
        go.Bar(
            name="attention row",
            x=x,
            y=y,
            text=text,
            textposition="none",
            marker_color="#2171b5",
            hovertemplate="%{x} %{text}: %{y:.3f}<extra></extra>",
            showlegend=False,
        ),
        row=row,
        col=col,
    )
    fig.update_xaxes(
        title_text="context position (Tk)", **ticks(text, step.context_start, 50, length_px), row=row, col=col
    )
    fig.update_yaxes(title_text="attention", rangemode="tozero", row=row, col=col)


def attention_row(step, layer: int, head: int | None = None, tokens: list[str] | None = None) -> go.Figure:
    """Where the model looked (one head, or the mean of a layer's heads) when it produced this step's token.

    `tokens` are the display strings of the whole sequence (prompt + generated), indexed by position."""
    fig = go.Figure()
    add_attention_row(fig, step, layer, head, tokens)
    fig.update_layout(
        template=TEMPLATE, height=300, plot_bgcolor="white", title=f"Step {step.step}: {row_title(step, layer, head)}"
    )
    return fig
