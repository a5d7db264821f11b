"""Attention views: one head's heatmap, all heads as a grid of thumbnails, and what each head does.

Reads a `gptviz.records.ForwardRecord` (attention (L, nh, T, T), tokens, head metrics) and returns a Figure; the
`add_*` functions put one view into (a subplot of) a figure, for the panels that combine several views into one
figure widget (`gptviz.widgets.attention`, `gptviz.widgets.training`). Colours, ticks and sizes come from
`style`; recording the attention is `gptviz.records`' job, computing head metrics `gptviz.heads`'.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .style import (ATTENTION_SCALE, CHOSEN, MASKED_NOTE, MAX_TOKENS, METRIC_SCALE, SQUARE_PX, TEMPLATE,
                    add_masked_background, as_numpy, short, square_layout, square_size, subtitle, ticks,
                    title_px, window_note, window_start)

GRID_THUMB = 24  # each head's thumbnail in the all-heads grid is at most GRID_THUMB x GRID_THUMB cells
METRIC_LABELS = {"previous_token": "previous-token", "induction": "induction",
                 "entropy": "entropy (0 sharp, 1 uniform)", "first_token": "first-token (sink)"}


# ---- one head's pattern as drawn (the panels and the checkpoint diff use it too) --------------------------
def _check_head(record, layer: int, head: int | None) -> None:
    L, nh = record.attention.shape[:2]
    if not 0 <= layer < L:
        raise ValueError(f"layer {layer} is out of range: this model has L={L} layers (0..{L - 1})")
    if head is not None and not 0 <= head < nh:
        raise ValueError(f"head {head} is out of range: this model has nh={nh} heads (0..{nh - 1})")


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
def attention_title(record, layer: int, head: int, hide_first: bool = False, start: int = 0,
                    max_px: float | None = None) -> str:
    return subtitle(f"Attention of layer {layer}, head {head}",
                    "each row is a query token; colour = how much it attends to each earlier token",
                    window_note(start, record.T), "first-token sink hidden, rows renormalised" if hide_first
                    else "", max_px=max_px)


def add_attention(fig: go.Figure, record, layer: int, head: int, hide_first: bool = False,
                  renormalize: bool = True, start: int = 0, row=None, col=None, max_ticks: int = 40) -> None:
    """One head's heatmap (trace "attention") over the window [start, T), token labels on both axes."""
    a = attention_matrix(record, layer, head, hide_first, renormalize)[start:, start:]
    pos = np.arange(start, record.T)
    fig.add_trace(go.Heatmap(name="attention", z=a, x=pos, y=pos, text=pair_text(record.tokens, start),
                             hovertemplate="%{text}: %{z:.3f}<extra></extra>", zmin=0, zmax=1,
                             colorscale=ATTENTION_SCALE, hoverongaps=False, colorbar=dict(
                                 title=dict(text="attention", side="right"), thickness=12, len=0.6, y=0.7)),
                  row=row, col=col)
    add_masked_background(fig, row, col)
    tk = ticks(record.tokens[start:], start, max_ticks)
    fig.update_xaxes(title_text="key (Tk)", showgrid=False, zeroline=False, constrain="domain", **tk,
                     row=row, col=col)
    fig.update_yaxes(title_text="query (T)", showgrid=False, zeroline=False, autorange="reversed", **tk,
                     constrain="domain", row=row, col=col)


HEATMAP_BOTTOM_PX = 116  # under a token heatmap: its key labels (rotated when long), axis title, masked note


def attention_heatmap(record, layer: int, head: int, hide_first: bool = False, renormalize: bool = True,
                      max_tokens: int = MAX_TOKENS, width: int | None = None) -> go.Figure:
    """One head's pattern: query rows, key columns, token labels on both axes, hover 'query → key: p'.

    A square heatmap with its colour bar beside it, in a figure `width` px wide (default: as wide as they need)."""
    start = window_start(record.T, max_tokens)
    side, width = square_size(width)
    fig = go.Figure()
    add_attention(fig, record, layer, head, hide_first, renormalize, start)
    tk = ticks(record.tokens[start:], start, 40, length_px=side)
    fig.update_xaxes(**tk)
    fig.update_yaxes(scaleanchor="x", **tk)
    fig.update_layout(template=TEMPLATE, title=attention_title(record, layer, head, hide_first, start,
                                                               max_px=width - 24))
    fig.add_annotation(text=MASKED_NOTE, xref="paper", yref="paper", x=1, xanchor="right", y=0, yanchor="bottom",
                       yshift=-HEATMAP_BOTTOM_PX + 4, showarrow=False, font=dict(size=11, color="#6b7280"))
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


def add_grid(fig: go.Figure, record, metrics: dict, hide_first: bool = False, renormalize: bool = True,
             thumb: int = GRID_THUMB, row=None, col=None) -> int:
    """All heads as L x nh thumbnails: traces "grid" (the image), "frame" (borders), "heads" (one invisible
    marker per head carrying its metrics as hover and (layer, head) as customdata, for clicks). Returns S."""
    image, S = grid_image(record, hide_first, renormalize, thumb)
    L, nh, c = record.n_layer, record.n_head, (S - 1) / 2
    add_masked_background(fig, row, col)
    ls, hs = (g.ravel() for g in np.meshgrid(np.arange(L), np.arange(nh), indexing="ij"))
    xs, ys = [], []
    for x0 in hs * (S + 1) - 0.5:  # one closed outline per thumbnail, as a single line trace
        xs += [x0, x0 + S, x0 + S, x0, x0, None]
    for y0 in ls * (S + 1) - 0.5:
        ys += [y0, y0, y0 + S, y0 + S, y0, None]
    fig.add_traces([
        go.Heatmap(name="grid", z=image, zmin=0, zmax=1, colorscale=ATTENTION_SCALE, showscale=False,
                   hoverinfo="skip"),
        go.Scatter(name="frame", x=xs, y=ys, mode="lines", line=dict(color="#b8bec9", width=1),
                   hoverinfo="skip", showlegend=False),
        go.Scatter(name="heads", x=hs * (S + 1) + c, y=ls * (S + 1) + c, mode="markers", showlegend=False,
                   customdata=np.stack([ls, hs], 1), hoverinfo="text", hovertext=[
                       f"<b>layer {l}, head {h}</b><br>{metric_text(metrics, l, h)}<br><i>click to open</i>"
                       for l, h in zip(ls, hs)],
                   marker=dict(symbol="square", size=max(8, 300 // max(L, nh)), color="rgba(0,0,0,0)"))],
        rows=row, cols=col)
    # fixed ranges: the invisible markers would otherwise pad the autorange around the thumbnails
    fig.update_xaxes(title_text="head (nh)", tickvals=[h * (S + 1) + c for h in range(nh)], zeroline=False,
                     ticktext=[str(h) for h in range(nh)], showgrid=False, constrain="domain", row=row, col=col,
                     range=[-1.5, nh * (S + 1) - 0.5])
    fig.update_yaxes(title_text="layer (L)", tickvals=[l * (S + 1) + c for l in range(L)], zeroline=False,
                     ticktext=[str(l) for l in range(L)], showgrid=False, range=[L * (S + 1) - 0.5, -1.5],
                     constrain="domain", row=row, col=col)
    return S


def selected_head_shape(layer: int, head: int, S: int, xref: str = "x", yref: str = "y") -> dict:
    """An orange outline around one thumbnail of the grid."""
    return dict(type="rect", xref=xref, yref=yref, x0=head * (S + 1) - 1, x1=head * (S + 1) + S,
                y0=layer * (S + 1) - 1, y1=layer * (S + 1) + S, line=dict(color=CHOSEN, width=3))


GRID_MARGIN = dict(l=64, r=16, b=56)


def attention_grid(record, hide_first: bool = False, renormalize: bool = True, thumb: int = GRID_THUMB,
                   metrics: dict | None = None, width: int | None = None) -> go.Figure:
    """Every head at once (L x nh small multiples); hover a head for its metrics.

    The grid's longer side is SQUARE_PX (less when `width` is smaller); width None: as wide as the grid needs."""
    fig = go.Figure()
    S = add_grid(fig, record, record.head_metrics() if metrics is None else metrics, hide_first, renormalize,
                 thumb)
    L, nh, m = record.n_layer, record.n_head, GRID_MARGIN
    aspect = (L * (S + 1) + 1) / (nh * (S + 1) + 1)  # grid height / width, with the ranges add_grid sets
    gw = min(SQUARE_PX, SQUARE_PX / aspect, (width or 10**6) - m["l"] - m["r"])
    width = width or max(360, round(m["l"] + gw + m["r"]))  # 360: the title's first line fits
    pooled = "" if S == record.T else f"each thumbnail max-pools {record.T} tokens into {S} cells"
    title = subtitle("All heads (L × nh)", "rows: layers, columns: heads", pooled, max_px=width - 24)
    top = title_px(title) + 20
    fig.update_yaxes(scaleanchor="x")
    fig.update_traces(marker_size=max(6, gw / nh * S / (S + 1)), selector=dict(name="heads"))  # one per thumbnail
    fig.update_layout(template=TEMPLATE, title=title, width=width, height=round(top + gw * aspect + m["b"]),
                      margin=dict(m, t=top, r=width - m["l"] - gw))
    return fig


def head_metrics_heatmap(record, metrics: dict | None = None) -> go.Figure:
    """Previous-token, induction, entropy and first-token score of every head, each an L x nh map (0..1)."""
    metrics = record.head_metrics() if metrics is None else metrics
    keys = [k for k in METRIC_LABELS if k in metrics]
    titles = [METRIC_LABELS[k] + (" — n/a: no repeated tokens" if np.isnan(as_numpy(metrics[k])).all() else "")
              for k in keys]
    fig = make_subplots(1, len(keys), subplot_titles=titles, horizontal_spacing=0.05)
    L, nh = record.n_layer, record.n_head
    for i, k in enumerate(keys):
        fig.add_trace(go.Heatmap(name=k, z=as_numpy(metrics[k]), zmin=0, zmax=1, colorscale=METRIC_SCALE,
                                 showscale=i == 0, colorbar=dict(thickness=10, title="score"),
                                 texttemplate="%{z:.2f}" if L * nh <= 64 else None, hoverongaps=False,
                                 hovertemplate=f"layer %{{y}}, head %{{x}}<br>{METRIC_LABELS[k]} %{{z:.3f}}"
                                               "<extra></extra>"), 1, i + 1)
        fig.update_xaxes(title_text="head (nh)", dtick=1 if nh <= 16 else None, showgrid=False, row=1, col=i + 1)
        fig.update_yaxes(title_text="layer (L)" if i == 0 else None, dtick=1 if L <= 16 else None,
                         autorange="reversed", showgrid=False, row=1, col=i + 1)
    fig.update_annotations(font_size=12)
    # 330 px fits GPT-2-small's 12 layers; deeper models (SmolLM2: 30) get ~14 px per layer row
    fig.update_layout(template=TEMPLATE, height=max(330, 150 + 14 * L), title=subtitle(
        "What each head does", "1.0 = the head does this perfectly; computed on this input"))
    return fig
