"""The attention explorer's one figure, laid out in pixels: the chosen head's heatmap with its colour bar, the
all-heads grid above the chosen head's scores, and the focus token's row and column as bars (`explorer_figure`,
`explorer_layout`). Pure: it draws a record (`records.record_forward`) with the parts `plots.attention` makes;
the widget (`widgets.attention.AttentionExplorer`) owns the controls and swaps arrays on clicks.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .attention import (
    GROUP_LABEL_PX,
    add_attention,
    add_grid,
    attention_matrix,
    attention_title,
    grid_aspect,
    grid_cells,
    grid_pitch_px,
    label_px,
    record_kv_groups,
    selected_head_shape,
)
from .style import CHOSEN, MAX_TOKENS, TEMPLATE, short, ticks, window_start
from .style import WIDTH as FIGURE_WIDTH

TRACES = ("attention", "grid", "frame", "heads", "looks_at", "looked_at_by", "metrics")  # explorer_figure's

# ---- the panel's one figure (pure; `plots` draws each part) -------------------------------------------------
# Laid out in pixels, because the widget cannot measure its container (see `widgets._base.FIGURE_WIDTH`): the heatmap
# is a square with its colour bar beside it; on its right the all-heads grid and, under the grid, the chosen
# head's scores; the focus token's bars span the width below. A grid too tall for that (SmolLM2: 30 layers x 9
# heads) takes the right column's whole height instead, so its thumbnails keep their size; the bars (and, where
# they fit better there, the scores) stay left of it. Each part has the room its labels need, no more.
MARGIN = dict(l=88, r=16, t=72, b=72)
HEATMAP_PX = 480  # the heatmap's side: 128 tokens get ~4 px a cell and every third token a label
MIN_COLUMN_PX = 200  # the right column (grid, scores) at least; a narrower figure gets a smaller heatmap
NUMBERS_MIN_CELL_PX = 28  # cells at least this big (up to 17 tokens) also print their weight
COLOURBAR_GAP_PX = 128  # colour bar (with its tick labels) + the grid's layer labels, between the two
GRID_TOP_PX = 26  # room for the grid's caption above it (and GROUP_LABEL_PX more for its kv groups' labels)
METRICS_GAP_PX = 78  # between the grid and the scores: the grid's head labels and title, the scores' caption
SCORES_PX = 90  # the scores' four bars, at least
BARS_GAP_PX = 112  # between heatmap and bars: the heatmap's key labels (rotated when long), its title, the legend
TITLE_LEGEND_PX = 64  # under a heatmap's key labels: their axis title, then the bars' legend
BARS_PX = 190
BARS_TITLE_PX = 52  # under the bars' position labels, when the scores follow: their axis title and a gap
GRID_LABELS_PX = 56  # left of a tall grid, the bars keep clear of its layer labels and title
TALL_GRID = 1.25  # a grid that would shrink by more than this beside the heatmap gets the column's height
MAX_GRID_PX = 1400  # a deeper model's thumbnails shrink rather than the figure grow past this
STACK_BELOW_HEATMAP_PX = 300  # beside the grid the heatmap would be smaller than this: stack the parts
MIN_HEATMAP_PX = 180  # a figure narrower than MARGIN + this + its colour bar is refused
STACKED_COLOURBAR_PX = 56  # a stacked figure's colour bar and its tick labels, right of the heatmap
STACKED_SCORES_PX = 420  # the scores' bars, at most this wide in a stacked figure
METRIC_NAMES = {
    "previous_token": "prev. token",
    "induction": "induction",
    "entropy": "entropy",
    "first_token": "first token",
}


def focus_values(matrix: np.ndarray, token: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Row `token` (where it looks) and column `token` (who looks at it), inside the window [start, T)."""
    return matrix[token, start:], matrix[start:, token]


def focus_shapes(token: int, start: int, T: int) -> list[dict]:
    """Outlines of the focus token's row (orange) and column (green) on the heatmap."""
    return [
        dict(
            type="rect",
            xref="x",
            yref="y",
            x0=start - 0.5,
            x1=token + 0.5,
            y0=token - 0.5,
            y1=token + 0.5,
            line=dict(color=CHOSEN, width=2),
        ),
        dict(
            type="rect",
            xref="x",
            yref="y",
            x0=token - 0.5,
            x1=token + 0.5,
            y0=token - 0.5,
            y1=T - 0.5,
            line=dict(color="#31a354", width=2),
        ),
    ]


def focus_title(tokens: list[str], token: int) -> str:
    return f"token {token} {short(tokens[token], 16)!r}:"


def metric_values(metrics: dict, layer: int, head: int) -> tuple[list[str], list[float | None], list[str]]:
    """One head's scores in METRIC_NAMES order: names, values (None where a score is not defined on this input,
    e.g. induction without a repeated token: None, not NaN, which the widget comm cannot send) and labels."""
    keys = [k for k in METRIC_NAMES if k in metrics]
    values = [float(metrics[k][layer, head]) for k in keys]
    values = [None if math.isnan(v) else v for v in values]
    return [METRIC_NAMES[k] for k in keys], values, ["n/a" if v is None else f"{v:.2f}" for v in values]


def metrics_title(layer: int, head: int) -> str:
    return f"scores of layer {layer}, head {head} (1 = perfect)"


def stacked(width: int) -> bool:
    """True when a figure `width` px wide is too narrow for the grid beside the heatmap: the parts go one
    under the other (heatmap, bars, grid, scores), each as wide as the figure."""
    return width - MARGIN["l"] - MARGIN["r"] - COLOURBAR_GAP_PX - MIN_COLUMN_PX < STACK_BELOW_HEATMAP_PX


def heatmap_side(width: int = FIGURE_WIDTH) -> int:
    """The heatmap's side (px) in a figure `width` px wide: HEATMAP_PX, or less where the right column would get
    under MIN_COLUMN_PX; in a stacked figure, the plot width less the colour bar (ValueError under MIN_HEATMAP_PX)."""
    pw = width - MARGIN["l"] - MARGIN["r"]
    hm = min(HEATMAP_PX, pw - (STACKED_COLOURBAR_PX if stacked(width) else COLOURBAR_GAP_PX + MIN_COLUMN_PX))
    if hm < MIN_HEATMAP_PX:
        raise ValueError(
            f"the explorer's figure needs a width of at least {width - hm + MIN_HEATMAP_PX} px, got {width}"
        )
    return hm


def explorer_layout(
    L: int,
    nh: int,
    S: int,
    width: int = FIGURE_WIDTH,
    key_labels_px: float = 0.0,
    bar_labels_px: float = 0.0,
    grouped: bool = False,
) -> dict:
    """Pixel boxes of the four parts, as plotly domains (fractions of the plot area), and the figure height.

    The grid keeps the aspect of its L x nh thumbnails of S cells (`plots.grid_aspect`), as wide as the right
    column. Beside the heatmap it shares that column with the scores, the bars span the width below ("compact");
    a grid that would shrink by more than TALL_GRID there takes the column's height ("tall"), the bars stay left
    of it and the scores go under whichever column ends first. A figure too narrow for a column beside the
    heatmap (`stacked`) puts the parts one under the other: heatmap, bars, grid, scores ("stacked").
    `key_labels_px` / `bar_labels_px`: how far the
    heatmap's key labels and the bars' position labels reach down (`plots.attention.label_px`); the parts below
    them keep clear. `grouped` (GQA): the grid has a row of kv-group labels above it."""
    pw = width - MARGIN["l"] - MARGIN["r"]
    hm = heatmap_side(width)
    gx = hm + COLOURBAR_GAP_PX  # the right column starts here
    gw = pw - gx
    aspect = grid_aspect(L, nh, S)
    top = GRID_TOP_PX + (GROUP_LABEL_PX if grouped else 0)
    bars_top = hm + max(BARS_GAP_PX, key_labels_px + TITLE_LEGEND_PX)
    bars_end = bars_top + BARS_PX
    room = hm - top - METRICS_GAP_PX - SCORES_PX  # for a grid above the scores, beside the heatmap
    if stacked(width):  # heatmap, bars, grid, scores: one under the other
        mode, gx, bars_x = "stacked", 0, (0, pw)
        grid_top = bars_end + bar_labels_px + BARS_TITLE_PX + top
        gh = min(pw * aspect, MAX_GRID_PX)
        scores_top = grid_top + gh + METRICS_GAP_PX
        metrics_box = (0, min(pw, STACKED_SCORES_PX), scores_top, scores_top + SCORES_PX)
        ph, top = metrics_box[3], grid_top
    elif gw * aspect <= TALL_GRID * room:
        mode, gh = "compact", min(gw * aspect, room)
        bars_x, metrics_box, ph = (0, pw), (gx, pw, top + gh + METRICS_GAP_PX, hm), bars_end
    else:
        mode, gh = "tall", min(gw * aspect, MAX_GRID_PX)
        bars_x = (0, gx - GRID_LABELS_PX)
        if top + gh + METRICS_GAP_PX + SCORES_PX <= bars_end:  # under the grid, as in the compact layout
            metrics_box = (gx, pw, top + gh + METRICS_GAP_PX, top + gh + METRICS_GAP_PX + SCORES_PX)
        else:  # under the bars, as wide as the heatmap
            scores_top = bars_end + bar_labels_px + BARS_TITLE_PX
            metrics_box = (0, hm, scores_top, scores_top + SCORES_PX)
        ph = max(bars_end, metrics_box[3], top + gh)
    gw_used = gh / aspect

    def xs(a, b):
        return [a / pw, b / pw]

    def ys(top, bottom):  # plotly's y runs upwards
        return [1 - bottom / ph, 1 - top / ph]

    return dict(
        height=round(ph + MARGIN["t"] + MARGIN["b"]),
        plot_width=pw,
        plot_height=ph,
        heatmap_px=hm,
        mode=mode,
        heatmap=(xs(0, hm), ys(0, hm)),
        grid=(xs(gx, gx + gw_used), ys(top, top + gh)),
        metrics=(xs(*metrics_box[:2]), ys(*metrics_box[2:])),
        bars=(xs(*bars_x), ys(bars_top, bars_end)),
        bars_px=bars_x[1] - bars_x[0],
        colourbar_x=(hm + 8) / pw,
        thumb_px=gw_used / nh * S / (S + 1),
        pitch_px=grid_pitch_px(gw_used, nh, S),
    )


def explorer_figure(
    record,
    layer: int,
    head: int,
    token: int | None = None,
    hide_first: bool = False,
    max_tokens: int = MAX_TOKENS,
    metrics: dict | None = None,
    width: int = FIGURE_WIDTH,
) -> go.Figure:
    """One head's heatmap (left), the all-heads grid and this head's scores (right), one token's row and
    column as bars (below), in a figure `width` px wide (its height follows; see `explorer_layout`).

    Traces in TRACES order; shapes: selected head, focus row, focus column.
    """
    metrics = record.head_metrics() if metrics is None else metrics
    T = record.T
    start = window_start(T, max_tokens)
    token = T - 1 if token is None else min(max(token, start), T - 1)
    pos, toks = np.arange(start, T), record.tokens[start:]
    tick = ticks(toks, start, 48, length_px=heatmap_side(width))
    bar_tick = ticks(toks, start, 64)  # its labels; the font follows the bars' width, 12 px at most
    groups = record_kv_groups(record)
    box = explorer_layout(
        record.n_layer,
        record.n_head,
        grid_cells(T),
        width,
        label_px(tick["ticktext"], tick["tickfont"]["size"]),
        label_px(bar_tick["ticktext"], 12),
        grouped=groups is not None,
    )
    fig = make_subplots(3, 2, specs=[[{"rowspan": 2}, {}], [None, {}], [{"colspan": 2}, None]])
    # axes: x/y heatmap, x2/y2 grid, x3/y3 scores, x4/y4 bars
    add_attention(fig, record, layer, head, hide_first, True, start, 1, 1, max_ticks=48)
    S = add_grid(fig, record, metrics, hide_first, row=1, col=2, pitch_px=box["pitch_px"])
    row, column = focus_values(attention_matrix(record, layer, head, hide_first), token, start)
    for name, y, colour in (("looks at (row)", row, CHOSEN), ("is looked at by (column)", column, "#31a354")):
        fig.add_trace(
            go.Bar(
                name=name,
                x=pos,
                y=y,
                marker_color=colour,
                text=toks,
                textposition="none",
                hovertemplate=f"%{{x}} %{{text}}: %{{y:.3f}}<extra>{name}</extra>",
            ),
            3,
            1,
        )
    names, values, labels = metric_values(metrics, layer, head)
    fig.add_trace(
        go.Bar(
            name="metrics",
            x=values,
            y=names,
            orientation="h",
            marker_color="#756bb1",
            text=labels,
            textposition="outside",
            cliponaxis=False,
            showlegend=False,
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        ),
        2,
        2,
    )
    hm = box["heatmap_px"]
    numbers = hm / (T - start) >= NUMBERS_MIN_CELL_PX  # "" (no text) is set too: see replace_figure
    fig.update_traces(texttemplate="%{z:.2f}" if numbers else "", textfont_size=10, selector=dict(name="attention"))
    fig.update_xaxes(domain=box["heatmap"][0], **tick, row=1, col=1)
    fig.update_yaxes(domain=box["heatmap"][1], scaleanchor="x", **tick, row=1, col=1)
    fig.update_traces(
        colorbar=dict(
            x=box["colourbar_x"],
            xanchor="left",
            y=box["heatmap"][1][1],
            yanchor="top",
            len=hm / box["plot_height"],
            thickness=12,
            ypad=0,
            title=None,
        ),
        selector=dict(name="attention"),
    )
    fig.update_xaxes(domain=box["grid"][0], title_standoff=4, row=1, col=2)
    fig.update_yaxes(domain=box["grid"][1], scaleanchor="x2", title_standoff=4, row=1, col=2)
    fig.update_traces(marker_size=max(6, box["thumb_px"]), selector=dict(name="heads"))
    fig.update_xaxes(
        domain=box["metrics"][0],
        range=[0, 1.18],
        tickvals=[0, 0.5, 1],
        showgrid=True,
        row=2,
        col=2,
        title=dict(text=metrics_title(layer, head), standoff=2, font_size=11),
    )
    fig.update_yaxes(domain=box["metrics"][1], autorange="reversed", tickfont_size=11, row=2, col=2)
    fig.update_xaxes(
        domain=box["bars"][0],
        title_text="position (T)",
        row=3,
        col=1,
        **ticks(toks, start, 64, length_px=box["bars_px"]),
    )
    fig.update_yaxes(domain=box["bars"][1], title_text="attention", rangemode="tozero", row=3, col=1)
    fig.add_annotation(
        text="all heads (L × nh): click one to open it",
        xref="x2 domain",
        yref="y2 domain",
        x=0,
        y=1,
        yshift=6 + (GROUP_LABEL_PX if groups else 0),
        xanchor="left",
        yanchor="bottom",
        showarrow=False,
        font_size=12,
    )
    fig.update_layout(
        template=TEMPLATE,
        width=width,
        height=box["height"],
        margin=MARGIN,
        barmode="group",
        bargap=0.15,
        title=attention_title(record, layer, head, hide_first, start, max_px=width - 40),
        legend=dict(
            orientation="h",
            x=0,
            xanchor="left",
            y=box["bars"][1][1],
            yanchor="bottom",
            title_text=focus_title(record.tokens, token),
        ),
    )
    # assigned, not passed to update_layout: that would merge these into the existing shapes one by one
    fig.layout.shapes = [
        selected_head_shape(layer, head, S, "x2", "y2"),
        *focus_shapes(token, start, T),
        *fig.layout.shapes,
    ]  # the last ones: grey backgrounds and kv-group lines drawn by plots
    return fig
