"""Attention views: one head's heatmap, all heads as a grid of thumbnails, and what each head does.

Reads a `gptviz.records.ForwardRecord` (attention (L, nh, T, T), tokens, head metrics) and returns a Figure; the
`add_*` functions put one view into (a subplot of) a figure, for the panels that combine several views into one
figure widget (`gptviz.widgets.attention`, `gptviz.widgets.training`). Colours, ticks and sizes come from
`style`; recording the attention is `gptviz.records`' job, computing head metrics `gptviz.heads`'.

Under grouped-query attention (GQA: fewer key/value heads than query heads, `record.meta["config"]["n_kv_head"]`)
every view says which query heads share a key/value head: the grid and the metric maps draw a line between the
groups and label them, hovers and titles name the head's kv head and the heads it shares it with. A model
without GQA (or a record without its config) gets none of that.
"""

from __future__ import annotations

import math
import unicodedata

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..heads import kv_groups
from .style import (
    ATTENTION_SCALE,
    CHOSEN,
    MASKED_NOTE,
    MAX_TOKENS,
    METRIC_SCALE,
    SQUARE_PX,
    TEMPLATE,
    WIDTH,
    add_masked_background,
    as_numpy,
    short,
    square_layout,
    square_size,
    subtitle,
    ticks,
    title_px,
    window_note,
    window_start,
)

GRID_THUMB = 24  # each head's thumbnail in the all-heads grid is at most GRID_THUMB x GRID_THUMB cells
GRID_MIN_PITCH_PX = 26  # a static grid grows taller (30 layers: ~800 px) rather than shrink thumbnails below this
GROUP_LABEL_PX = 16  # above a GQA grid: the row of "kv head g" labels
GROUP_LINE = dict(color="#4a5160", width=2)  # the line between two kv groups of query heads
METRIC_LABELS = {
    "previous_token": "previous-token",
    "induction": "induction",
    "entropy": "entropy (0 sharp, 1 uniform)",
    "first_token": "first-token (sink)",
}


# ---- one head's pattern as drawn (the panels and the checkpoint diff use it too) --------------------------
def _check_head(record, layer: int, head: int | None) -> None:
    L, nh = record.attention.shape[:2]
    if not 0 <= layer < L:
        raise ValueError(f"layer {layer} is out of range: this model has L={L} layers (0..{L - 1})")
    if head is not None and not 0 <= head < nh:
        raise ValueError(f"head {head} is out of range: this model has nh={nh} heads (0..{nh - 1})")


def record_kv_groups(record) -> list[list[int]] | None:
    """The query heads that share each key/value head (`heads.kv_groups`) when the model that made `record` used
    grouped-query attention; None for ordinary multi-head attention, or when the record does not say."""
    n_kv = (record.meta or {}).get("config", {}).get("n_kv_head")
    if not n_kv or n_kv >= record.n_head:
        return None
    return kv_groups(record.n_head, n_kv)


def kv_note(groups: list[list[int]] | None, head: int) -> str:
    """'kv head 1 (shares with 3, 5)': head 4's key/value head and the query heads that share it ('' without GQA)."""
    if not groups:
        return ""
    g = next(i for i, members in enumerate(groups) if head in members)
    others = [h for h in groups[g] if h != head]
    with_ = ", ".join(map(str, others)) if len(others) <= 5 else f"heads {groups[g][0]}–{groups[g][-1]}"
    return f"kv head {g} (shares with {with_})"


def gqa_note(groups: list[list[int]] | None) -> str:
    """'GQA: 3 kv heads, each shared by 3 query heads' ('' without GQA)."""
    if not groups:
        return ""
    return f"GQA: {len(groups)} kv heads, each shared by {len(groups[0])} query heads"


def prepare_attention(att, hide_first: bool = False, renormalize: bool = True) -> np.ndarray:
    """Patterns (..., T, T) -> a numpy copy with the causal upper triangle as NaN (drawn grey).

    hide_first drops key 0 (the "attention sink" most heads dump mass on); with renormalize each query's
    remaining weights are rescaled to sum to 1 again, so the rest of the pattern becomes visible.
    """
    a = as_numpy(att).copy()
    T = a.shape[-1]
    a[..., np.triu(np.ones((T, T), dtype=bool), 1)] = np.nan
    if hide_first:
        a[..., :, 0] = np.nan
        if renormalize:
            rest = np.nansum(a[..., :, 1:], axis=-1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                a[..., :, 1:] = np.where(rest > 0, a[..., :, 1:] / rest, np.nan)
    return a


def attention_matrix(record, layer: int, head: int, hide_first: bool = False, renormalize: bool = True):
    """The (T, T) pattern of one head as drawn: NaN where masked (and in column 0 when the sink is hidden)."""
    _check_head(record, layer, head)
    return prepare_attention(record.attention[layer, head], hide_first, renormalize)


def pair_text(tokens: list[str], start: int = 0) -> np.ndarray:
    """(n, n) hover labels 'query i tok → key j tok' for the window starting at `start`."""
    names = np.array([f"{start + i} {short(t, 16)}" for i, t in enumerate(tokens[start:])], dtype=object)
    return names[:, None] + " → " + names[None, :]


# ---- one head ---------------------------------------------------------------------------------------------
# `add_*` functions put one view into (a subplot of) a figure: the public figures below use them, and so do the
# panels that combine several views into their one figure widget.
def attention_title(
    record, layer: int, head: int, hide_first: bool = False, start: int = 0, max_px: float | None = None
) -> str:
    kv = kv_note(record_kv_groups(record), head)
    return subtitle(
        f"Attention of layer {layer}, head {head}" + (f" · {kv}" if kv else ""),
        "each row is a query token",
        "colour = how much it attends to each earlier token",
        window_note(start, record.T),
        "first-token sink hidden, rows renormalised" if hide_first else "",
        max_px=max_px,
    )


# Up to this many tokens the heatmap's hover names both tokens of a cell ("3 fox → 1 quick": T² labels, ~1 MB
# at T=256, too much for a widget message); above, it names their positions and the axes' labels the tokens.
PAIR_TEXT_MAX_T = 96


def attention_hover(record, layer: int, head: int, start: int = 0) -> str:
    """The heatmap's hover: 'query → key: p', and under GQA which kv head this head reads."""
    kv = kv_note(record_kv_groups(record), head)
    pair = "%{text}" if record.T - start <= PAIR_TEXT_MAX_T else "query %{y} → key %{x}"
    return pair + ": %{z:.3f}<extra>" + (f"layer {layer}, head {head} · {kv}" if kv else "") + "</extra>"


def add_attention(
    fig: go.Figure,
    record,
    layer: int,
    head: int,
    hide_first: bool = False,
    renormalize: bool = True,
    start: int = 0,
    row=None,
    col=None,
    max_ticks: int = 40,
) -> None:
    """One head's heatmap (trace "attention") over the window [start, T), token labels on both axes."""
    a = attention_matrix(record, layer, head, hide_first, renormalize)[start:, start:]
    pos = np.arange(start, record.T)
    fig.add_trace(
        go.Heatmap(
            name="attention",
            z=a,
            x=pos,
            y=pos,
            text=pair_text(record.tokens, start) if record.T - start <= PAIR_TEXT_MAX_T else None,
            hovertemplate=attention_hover(record, layer, head, start),
            zmin=0,
            zmax=1,
            colorscale=ATTENTION_SCALE,
            hoverongaps=False,
            colorbar=dict(title=dict(text="attention", side="right"), thickness=12, len=0.6, y=0.7),
        ),
        row=row,
        col=col,
    )
    add_masked_background(fig, row, col)
    tk = ticks(record.tokens[start:], start, max_ticks)
    fig.update_xaxes(title_text="key (Tk)", showgrid=False, zeroline=False, constrain="domain", **tk, row=row, col=col)
    fig.update_yaxes(
        title_text="query (T)",
        showgrid=False,
        zeroline=False,
        autorange="reversed",
        **tk,
        constrain="domain",
        row=row,
        col=col,
    )


HEATMAP_BOTTOM_PX = 116  # under a token heatmap: its key labels (rotated when long), axis title, masked note


def label_px(labels: list[str], size: float) -> float:
    """About how wide (px) the widest of `labels` is in a `size` px font: how far below its axis a tick label
    reaches when plotly turns it upright (wide characters, CJK, count a full em, the others 0.62 em)."""
    wide = ("W", "F")
    return max(
        (sum(size if unicodedata.east_asian_width(ch) in wide else 0.62 * size for ch in text) for text in labels),
        default=0.0,
    )


def attention_heatmap(
    record,
    layer: int,
    head: int,
    hide_first: bool = False,
    renormalize: bool = True,
    max_tokens: int = MAX_TOKENS,
    width: int | None = None,
) -> go.Figure:
    """One head's pattern: query rows, key columns, token labels on both axes, hover 'query → key: p'.

    A square heatmap with its colour bar beside it, in a figure `width` px wide (default: as wide as they need)."""
    start = window_start(record.T, max_tokens)
    side, width = square_size(width)
    fig = go.Figure()
    add_attention(fig, record, layer, head, hide_first, renormalize, start)
    tk = ticks(record.tokens[start:], start, 40, length_px=side)
    fig.update_xaxes(**tk)
    fig.update_yaxes(scaleanchor="x", **tk)
    fig.update_layout(
        template=TEMPLATE, title=attention_title(record, layer, head, hide_first, start, max_px=width - 24)
    )
    fig.add_annotation(
        text=MASKED_NOTE,
        xref="paper",
        yref="paper",
        x=1,
        xanchor="right",
        y=0,
        yanchor="bottom",
        yshift=-HEATMAP_BOTTOM_PX + 4,
        showarrow=False,
        font=dict(size=11, color="#6b7280"),
    )
    square_layout(fig, side, width, HEATMAP_BOTTOM_PX)
    return fig


# ---- all heads --------------------------------------------------------------------------------------------
def grid_cells(T: int, thumb: int = GRID_THUMB) -> int:
    """Side S of one head's thumbnail: T itself up to `thumb`, else T pooled in blocks of ceil(T / thumb)."""
    return math.ceil(T / max(1, math.ceil(T / thumb)))


def grid_image(record, hide_first: bool = False, renormalize: bool = True, thumb: int = GRID_THUMB):
    """All heads as one image (L*(S+1)-1, nh*(S+1)-1) of S x S thumbnails with NaN gaps; returns (image, S).

    Inputs longer than `thumb` tokens are max-pooled in b x b blocks, so sharp patterns stay visible; a block
    is NaN (grey) only when every cell in it is masked.
    """
    a = record.attention.float()  # (L, nh, T, T), exactly 0 above the diagonal
    L, nh, T = a.shape[0], a.shape[1], a.shape[-1]
    seen = torch.ones(T, T).tril()  # (T, T) 1 where a query may look
    if hide_first:
        a, seen = a.clone(), seen.clone()
        a[..., 0], seen[:, 0] = 0.0, 0.0
        if renormalize:
            a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
    S = grid_cells(T, thumb)
    b = math.ceil(T / S)
    if b > 1:  # torch pools (L * nh) maps of T x T in one call; partial edge blocks are kept (ceil_mode)
        a = torch.nn.functional.max_pool2d(a.reshape(L * nh, 1, T, T), b, ceil_mode=True).reshape(L, nh, S, S)
        seen = torch.nn.functional.max_pool2d(seen[None, None], b, ceil_mode=True)[0, 0]
    framed = np.full((L, nh, S + 1, S + 1), np.nan, dtype=np.float32)
    framed[..., :S, :S] = np.where(seen.numpy() > 0, a.numpy(), np.nan)
    return framed.transpose(0, 2, 1, 3).reshape(L * (S + 1), nh * (S + 1))[:-1, :-1], S


def metric_text(metrics: dict, layer: int, head: int, sep: str = "<br>") -> str:
    parts = []
    for key, label in METRIC_LABELS.items():
        if key in metrics:
            v = float(metrics[key][layer, head])
            parts.append(f"{label.split(' ')[0]} {'n/a' if math.isnan(v) else f'{v:.2f}'}")
    return sep.join(parts)


def grid_aspect(L: int, nh: int, S: int) -> float:
    """The grid's height / width, with the axis ranges `add_grid` sets (a gap cell between thumbnails, half a
    cell of margin around them)."""
    return (L * (S + 1) + 1) / (nh * (S + 1) + 1)


def grid_pitch_px(width_px: float, nh: int, S: int) -> float:
    """Pixels from one thumbnail to the next in a grid of nh heads drawn `width_px` wide."""
    return width_px * (S + 1) / (nh * (S + 1) + 1)


def _grid_ticks(n: int, S: int, pitch_px: float, room_px: float, group: int = 1) -> dict:
    """Tick labels 0..n-1 at the thumbnails' centres: every one while each has `room_px`, else every k-th, with
    k a divisor or multiple of the kv `group` size (so the labelled heads line up with the groups)."""
    step = max(1, math.ceil(room_px / max(pitch_px, 1e-9)))
    step = next(k for k in range(step, n + 1) if group % k == 0 or k % group == 0) if step < n else step
    return dict(
        tickvals=[i * (S + 1) + (S - 1) / 2 for i in range(0, n, step)],
        ticktext=[str(i) for i in range(0, n, step)],
        tickfont_size=11,
    )


def add_kv_groups(fig: go.Figure, groups: list[list[int]], L: int, S: int, pitch_px: float, row=None, col=None) -> None:
    """Under GQA: a line between neighbouring kv groups of heads, across the grid, and a label above each group
    ("kv head g", or "kv g", or on every k-th group, as the room allows)."""
    for members in groups[1:]:
        x = members[0] * (S + 1) - 1  # the middle of the gap cell before the group's first head
        fig.add_shape(type="line", x0=x, x1=x, y0=-1.5, y1=L * (S + 1) - 0.5, line=GROUP_LINE, row=row, col=col)
    room = len(groups[0]) * pitch_px
    name, step = ("kv head ", 1) if room >= 64 else ("kv ", max(1, math.ceil(30 / room)))
    for g in range(0, len(groups), step):
        members = groups[g]
        fig.add_annotation(
            text=f"{name}{g}",
            x=(members[0] + members[-1]) / 2 * (S + 1) + (S - 1) / 2,
            xref="x",
            yref="y domain",
            y=1,
            yanchor="bottom",
            yshift=1,
            showarrow=False,
            font=dict(size=11, color=GROUP_LINE["color"]),
            row=row,
            col=col,
        )


def add_grid(
    fig: go.Figure,
    record,
    metrics: dict,
    hide_first: bool = False,
    renormalize: bool = True,
    thumb: int = GRID_THUMB,
    row=None,
    col=None,
    pitch_px: float = 2 * GRID_MIN_PITCH_PX,
) -> int:
    """All heads as L x nh thumbnails: traces "grid" (the image), "frame" (borders), "heads" (one invisible
    marker per head carrying its metrics as hover and (layer, head) as customdata, for clicks). Returns S.

    `pitch_px` (one thumbnail's width on screen, `grid_pitch_px`) decides which heads and layers get a tick
    label: all of them while they fit. Under GQA the kv groups are marked (`add_kv_groups`), GROUP_LABEL_PX
    above the grid, and each head's hover names its kv head."""
    image, S = grid_image(record, hide_first, renormalize, thumb)
    L, nh, c = record.n_layer, record.n_head, (S - 1) / 2
    groups = record_kv_groups(record)
    add_masked_background(fig, row, col)
    ls, hs = (g.ravel() for g in np.meshgrid(np.arange(L), np.arange(nh), indexing="ij"))
    xs, ys = [], []
    for x0 in hs * (S + 1) - 0.5:  # one closed outline per thumbnail, as a single line trace
        xs += [x0, x0 + S, x0 + S, x0, x0, None]
    for y0 in ls * (S + 1) - 0.5:
        ys += [y0, y0, y0 + S, y0 + S, y0, None]
    names = [f"<b>layer {l}, head {h}</b>" + (f" · {kv_note(groups, h)}" if groups else "") for l, h in zip(ls, hs)]
    fig.add_traces(
        [
            go.Heatmap(
                name="grid", z=image, zmin=0, zmax=1, colorscale=ATTENTION_SCALE, showscale=False, hoverinfo="skip"
            ),
            go.Scatter(
                name="frame",
                x=xs,
                y=ys,
                mode="lines",
                line=dict(color="#b8bec9", width=1),
                hoverinfo="skip",
                showlegend=False,
            ),
            go.Scatter(
                name="heads",
                x=hs * (S + 1) + c,
                y=ls * (S + 1) + c,
                mode="markers",
                showlegend=False,
                customdata=np.stack([ls, hs], 1),
                hoverinfo="text",
                hovertext=[
                    f"{name}<br>{metric_text(metrics, l, h)}<br><i>click to open</i>"
                    for name, l, h in zip(names, ls, hs)
                ],
                marker=dict(symbol="square", size=max(8, 300 // max(L, nh)), color="rgba(0,0,0,0)"),
            ),
        ],
        rows=row,
        cols=col,
    )
    if groups:
        add_kv_groups(fig, groups, L, S, pitch_px, row, col)
    # fixed ranges: the invisible markers would otherwise pad the autorange around the thumbnails
    fig.update_xaxes(
        title_text="head (nh)",
        zeroline=False,
        showgrid=False,
        constrain="domain",
        row=row,
        col=col,
        range=[-1.5, nh * (S + 1) - 0.5],
        **_grid_ticks(nh, S, pitch_px, 6.5 * len(str(nh - 1)) + 4, len(groups[0]) if groups else 1),
    )
    fig.update_yaxes(
        title_text="layer (L)",
        zeroline=False,
        showgrid=False,
        range=[L * (S + 1) - 0.5, -1.5],
        constrain="domain",
        row=row,
        col=col,
        **_grid_ticks(L, S, pitch_px, 14),
    )
    return S


def selected_head_shape(layer: int, head: int, S: int, xref: str = "x", yref: str = "y") -> dict:
    """An orange outline around one thumbnail of the grid."""
    return dict(
        type="rect",
        xref=xref,
        yref=yref,
        x0=head * (S + 1) - 1,
        x1=head * (S + 1) + S,
        y0=layer * (S + 1) - 1,
        y1=layer * (S + 1) + S,
        line=dict(color=CHOSEN, width=3),
    )


GRID_MARGIN = dict(l=64, r=16, b=56)


def attention_grid(
    record,
    hide_first: bool = False,
    renormalize: bool = True,
    thumb: int = GRID_THUMB,
    metrics: dict | None = None,
    width: int | None = None,
) -> go.Figure:
    """Every head at once (L x nh small multiples); hover a head for its metrics.

    The grid's longer side is SQUARE_PX, unless that leaves thumbnails under GRID_MIN_PITCH_PX: then it grows
    taller (30 layers x 9 heads: ~800 px), up to WIDTH wide. A given `width` caps it; width None: as wide as the
    grid needs."""
    S = grid_cells(record.T, thumb)
    L, nh, m = record.n_layer, record.n_head, GRID_MARGIN
    groups = record_kv_groups(record)
    aspect = grid_aspect(L, nh, S)
    gw = max(min(SQUARE_PX, SQUARE_PX / aspect), GRID_MIN_PITCH_PX * (nh * (S + 1) + 1) / (S + 1))
    gw = min(gw, (width or WIDTH) - m["l"] - m["r"])
    fig = go.Figure()
    add_grid(
        fig,
        record,
        record.head_metrics() if metrics is None else metrics,
        hide_first,
        renormalize,
        thumb,
        pitch_px=grid_pitch_px(gw, nh, S),
    )
    width = width or max(360, round(m["l"] + gw + m["r"]))  # 360: the title's first line fits
    pooled = "" if S == record.T else f"each thumbnail max-pools {record.T} tokens into {S} cells"
    kv = gqa_note(groups)  # the "kv head g" labels over the groups and the lines between them say the rest
    title = subtitle("All heads (L × nh)", "rows: layers, columns: heads", kv, pooled, max_px=width - 24)
    top = title_px(title) + 20 + (GROUP_LABEL_PX + 4 if groups else 0)
    fig.update_yaxes(scaleanchor="x")
    fig.update_traces(marker_size=max(6, gw / nh * S / (S + 1)), selector=dict(name="heads"))  # one per thumbnail
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        width=width,
        height=round(top + gw * aspect + m["b"]),
        margin=dict(m, t=top, r=width - m["l"] - gw),
    )
    return fig


def head_metrics_heatmap(record, metrics: dict | None = None) -> go.Figure:
    """Previous-token, induction, entropy and first-token score of every head, each an L x nh map (0..1).

    Under GQA a white line separates the heads that share a key/value head, and the hover names it."""
    metrics = record.head_metrics() if metrics is None else metrics
    keys = [k for k in METRIC_LABELS if k in metrics]
    titles = [
        METRIC_LABELS[k] + (" — n/a: no repeated tokens" if np.isnan(as_numpy(metrics[k])).all() else "") for k in keys
    ]
    fig = make_subplots(1, len(keys), subplot_titles=titles, horizontal_spacing=0.05)
    L, nh = record.n_layer, record.n_head
    groups = record_kv_groups(record)
    kv = np.array([[f" · {kv_note(groups, h)}" if groups else "" for h in range(nh)]] * L, dtype=object)
    for i, k in enumerate(keys):
        fig.add_trace(
            go.Heatmap(
                name=k,
                z=as_numpy(metrics[k]),
                zmin=0,
                zmax=1,
                colorscale=METRIC_SCALE,
                showscale=i == 0,
                colorbar=dict(thickness=10, title="score"),
                text=kv,
                texttemplate="%{z:.2f}" if L * nh <= 64 else None,
                hoverongaps=False,
                hovertemplate=f"layer %{{y}}, head %{{x}}%{{text}}<br>{METRIC_LABELS[k]} %{{z:.3f}}<extra></extra>",
            ),
            1,
            i + 1,
        )
        fig.update_xaxes(title_text="head (nh)", dtick=1 if nh <= 16 else None, showgrid=False, row=1, col=i + 1)
        fig.update_yaxes(
            title_text="layer (L)" if i == 0 else None,
            dtick=1 if L <= 16 else None,
            autorange="reversed",
            showgrid=False,
            row=1,
            col=i + 1,
        )
        for members in (groups or [])[1:]:
            fig.add_shape(
                type="line",
                x0=members[0] - 0.5,
                x1=members[0] - 0.5,
                y0=-0.5,
                y1=L - 0.5,
                line=dict(color="white", width=2),
                row=1,
                col=i + 1,
            )
    fig.update_annotations(font_size=12)
    # 330 px fits GPT-2-small's 12 layers; deeper models (SmolLM2: 30) get ~14 px per layer row
    note = f"{gqa_note(groups)} (a white line between two groups)" if groups else ""
    fig.update_layout(
        template=TEMPLATE,
        height=max(330, 150 + 14 * L),
        title=subtitle("What each head does", "1.0 = the head does this perfectly; computed on this input", note),
    )
    return fig
