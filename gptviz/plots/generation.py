"""Generation views: the candidates at one sampling step, stage by stage, and where the model looked.

Reads a `gptviz.steps.StepRecord` (candidates, their probabilities after each stage, the new token's
attention row) and returns a Figure; `add_candidates` and `add_attention_row` put a view into a subplot for the
generation panel (`gptviz.widgets.generation`). Sampling and recording the steps is `gptviz.sampling`'s job;
colours and ticks come from `style`.
"""

from __future__ import annotations

import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import CHOSEN, STAGE_COLOUR, STAGE_COLOURS, TEMPLATE, WIDTH, as_numpy, short, subtitle, ticks, title_px

STAGE_LABELS = {
    "raw": "raw",
    "repetition_penalty": "after repetition penalty",
    "no_repeat_ngram": "after no-repeat-n-gram",
    "min_new_tokens": "after min-new-tokens (no eos yet)",
    "temperature": "after temperature",
    "top_k": "after top-k",
    "top_p": "after top-p",
}


def step_title(step, forced: bool = False, preview: bool = False, max_px: float | None = None) -> str:
    """What happened at a step; `forced`: the token was picked by a fork, not by the sampler; `preview`: the
    stages were computed again with other knobs than the ones the token was sampled with."""
    token = repr(short(step.token, 16)) if step.token is not None else f"id {step.token_id}"
    if preview:
        head = f"Step {step.step}: {token} with these knobs"
        how = (f"it would have p = {step.prob:.3f}" if step.prob > 0 else "they would remove it") + (
            "<br>(sampled before with other knobs)"
        )
    elif forced:
        head = f"Step {step.step}: forked, you chose {token}"
        how = f"the sampler gave it p = {step.prob:.3f}, raw p = {step.raw_prob:.3f}"
    else:
        head = f"Step {step.step}: chose {token}"
        how = f"p = {step.prob:.3f}, raw p = {step.raw_prob:.3f}"
    return subtitle(
        head,
        *how.split("<br>"),
        "press Generate to sample again" if preview else "",
        f"position {step.position}",
        f"entropy {step.entropy:.2f} nats",
        "bars: each candidate's probability after every stage",
        "✕ = removed by that stage",
        "orange outline = chosen",
        max_px=max_px,
    )


REMOVED_Y = -0.06  # the row of ✕ marks under the bars: a candidate a stage removed
BAR_GROUP = 0.8  # the width a candidate's bars share (bargap 0.2), so a ✕ sits under its stage's bar


def stage_colour(name: str, n: int) -> str:
    return STAGE_COLOUR.get(name, STAGE_COLOURS[n % len(STAGE_COLOURS)])


def add_candidates(fig: go.Figure, step, row=None, col=None) -> None:
    """One bar trace per stage over the step's k candidates (the same ids at every stage, in raw order);
    customdata holds the candidate ids (a click on a bar names a token). A candidate a stage removes has no bar
    there (its probability is 0) and a ✕ in the stage's colour on a row under the axis (trace "removed"),
    right under where its bar would be, hovering what it had before."""
    ids = [int(i) for i in step.candidates.tolist()]
    names = list(step.candidate_tokens) if step.candidate_tokens else [f"id {i}" for i in ids]
    n_stages = len(step.stages)
    prev = None
    xs, colours, hovers = [], [], []  # the ✕ row
    for n, stage in enumerate(step.stages):
        p = as_numpy(stage.probs)
        cut = (p <= 0) & (prev > 0) if prev is not None else np.zeros(len(p), dtype=bool)
        label = STAGE_LABELS.get(stage.name, stage.name)
        colour = stage_colour(stage.name, n)
        offset = (n - (n_stages - 1) / 2) * BAR_GROUP / n_stages
        for i in np.flatnonzero(cut):
            xs.append(i + offset)
            colours.append(colour)
            hovers.append(
                f"{names[i]}: removed {label[6:] if label.startswith('after ') else label} (had {prev[i]:.3f})"
            )
        fig.add_trace(
            go.Bar(
                name=f"{label} ({stage.kept} kept)",
                x=list(range(len(ids))),
                y=p,
                customdata=ids,
                text=names,
                textposition="none",
                hovertext=[
                    f"removed (had {q:.3f})" if c else f"p = {v:.3f}"
                    for c, q, v in zip(cut, prev if prev is not None else p, p)
                ],
                marker=dict(
                    color=colour,
                    line=dict(color=CHOSEN, width=[3 if i == step.token_id else 0 for i in ids]),
                ),
                hovertemplate=f"{label}: %{{text}} %{{hovertext}}<extra>click to fork</extra>",
            ),
            row=row,
            col=col,
        )
        prev = p
    fig.add_trace(
        go.Scatter(
            name="removed by that stage",
            x=xs,
            y=[REMOVED_Y] * len(xs),
            mode="markers",
            marker=dict(symbol="x-thin", size=11, line=dict(width=2.5, color=colours or CHOSEN)),
            hovertext=hovers,
            hovertemplate="%{hovertext}<extra></extra>",
            showlegend=bool(xs),
        ),
        row=row,
        col=col,
    )
    fig.update_xaxes(
        title_text="candidate next token (k)",
        tickvals=list(range(len(ids))),
        row=row,
        col=col,
        ticktext=[f"<b>{short(t)}</b>" if i == step.token_id else short(t) for i, t in zip(ids, names)],
    )
    fig.update_yaxes(
        title_text="probability", range=[2 * REMOVED_Y, 1.02], tickvals=[0, 0.25, 0.5, 0.75, 1], row=row, col=col
    )


def step_candidates(step) -> go.Figure:
    """Candidate probabilities at one step, per sampling stage (raw, penalties, temperature, top-k, top-p)."""
    fig = go.Figure()
    add_candidates(fig, step)
    fig.update_layout(
        template=TEMPLATE,
        height=420,
        barmode="group",
        bargap=1 - BAR_GROUP,
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


# ---- the generation explorer's one figure: a step's candidates above its attention row ---------------------------
# The step figure in pixels (a panel's figure is built for a width, see `widgets._base.FIGURE_WIDTH`): candidates
# on top, then their axis labels, legend and the attention row's caption, then the attention row.
STEP_MARGIN = dict(l=70, r=20, t=78, b=64)
CANDIDATES_PX, ROW_GAP_PX, ROW_PX = 250, 116, 170
LEGEND_ROW_PX = 22  # a legend of many stages wraps onto more rows in a narrow figure
LEGEND_CHAR_PX, LEGEND_ITEM_PX = 6.2, 46  # a legend entry: its text (11 px font) and its swatch and gap
CAPTION_CHAR_PX = 7.2  # the attention row's caption (13 px font)


def legend_rows(names: list[str], width: float) -> int:
    """How many rows a horizontal legend of `names` takes in `width` px (plotly wraps whole entries)."""
    rows, used = 1, 0.0
    for name in names:
        w = LEGEND_ITEM_PX + LEGEND_CHAR_PX * len(name)
        if used and used + w > width:
            rows, used = rows + 1, 0.0
        used += w
    return rows


def step_figure(
    step,
    layer: int,
    head: int | None,
    tokens: list[str] | None,
    forced: bool = False,
    width: int = WIDTH,
    preview: bool = False,
) -> go.Figure:
    """The panel's view of one step: candidates per stage (top), the attention row (bottom, if recorded);
    `preview`: the stages were computed again with other knobs (`restage`)."""
    pw = width - STEP_MARGIN["l"] - STEP_MARGIN["r"]
    rows = 2 if step.attention is not None else 1
    fig = make_subplots(rows, 1)
    add_candidates(fig, step, 1, 1)
    legend_px = LEGEND_ROW_PX * legend_rows([t.name for t in fig.data if t.showlegend is not False], pw)
    caption = row_title(step, layer, head)
    if len(caption) * CAPTION_CHAR_PX > pw:  # "where the model looked ...<br>(layer 5, mean over heads)"
        caption = caption.replace(" (", "<br>(", 1)
    caption_px = 18 * caption.count("<br>")
    gap = ROW_GAP_PX + legend_px - LEGEND_ROW_PX + caption_px
    ph = CANDIDATES_PX + (gap + ROW_PX if rows == 2 else 40 + legend_px)  # one row: room for the legend under it
    fig.update_yaxes(domain=[1 - CANDIDATES_PX / ph, 1], row=1, col=1)
    legend_y = 1 - (CANDIDATES_PX + 52) / ph  # under the candidates' axis title
    if rows == 2:
        add_attention_row(fig, step, layer, head, tokens, 2, 1, length_px=pw)
        fig.update_yaxes(domain=[0, ROW_PX / ph], row=2, col=1)
        fig.add_annotation(
            text=caption,
            xref="paper",
            yref="paper",
            x=0,
            y=ROW_PX / ph,
            yshift=10,
            xanchor="left",
            yanchor="bottom",
            align="left",
            showarrow=False,
            font_size=13,
        )
    title = step_title(step, forced, preview, max_px=width - 40)
    top = max(STEP_MARGIN["t"], title_px(title) + 24)
    fig.update_layout(
        template=TEMPLATE,
        width=width,
        height=ph + top + STEP_MARGIN["b"],
        margin=dict(STEP_MARGIN, t=top),
        barmode="group",
        bargap=1 - BAR_GROUP,
        # from the top down (plotly centres a title in the top margin, and a long one ran into the bars)
        title=dict(text=title, y=1, yref="container", yanchor="top", pad=dict(t=12)),
        legend=dict(orientation="h", x=0, y=legend_y, yanchor="top", font_size=11),
    )
    return fig


def message_figure(text: str, width: int = WIDTH) -> go.Figure:
    """A figure that only says `text` (lines wrapped to the width)."""
    chars = max(20, int((width - 40) / 8))  # 14 px font: ~8 px a character
    text = "<br>".join(textwrap.fill(line, chars).replace("\n", "<br>") for line in text.split("<br>"))
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font_size=14)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(template=TEMPLATE, width=width, height=200, title="Generation explorer")
    return fig
