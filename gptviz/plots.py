"""Pure plots: records (and, for the weight-only views, a model) -> `plotly.graph_objects.Figure`.

Every public function returns a new Figure and changes nothing; widgets show these figures (and update the
few arrays that change, using the helpers here so a panel and its static export always agree). Two views
need more than a record: the logit lens runs the model once (`logit_lens_record`) and the positional views
read position embeddings and attention weights; both are marked below.

One look everywhere: `TEMPLATE`, attention and probabilities on one 0..1 scale (`ATTENTION_SCALE`), signed
values on a diverging scale centred on 0, the shape vocabulary (B, T, Tk, L, nh, C, V, k) in axis titles.
Long inputs are windowed (the last `MAX_TOKENS` tokens) and the title says so. Figures with a square heatmap,
or with several parts side by side, are laid out in pixels (a `width` argument; see "sizes in pixels"), so each
colour bar stays beside its heatmap; the others leave their width to the page.

Nothing here builds widgets, trains, samples or tokenizes; token strings come from the records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.subplots import make_subplots

from .hooks import capture
from .model import sinusoidal_encoding

FONT = ('"Noto Sans", "DejaVu Sans", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", Arial, sans-serif')
TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(
    font=dict(family=FONT, size=12, color="#1f2430"), title=dict(x=0.01, xanchor="left", font=dict(size=15)),
    margin=dict(l=70, r=30, t=90, b=60), hoverlabel=dict(font_family=FONT), plot_bgcolor="white",
    colorway=["#2166ac", "#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b"])
MASKED_NOTE = "grey = masked (a token cannot see later tokens)"
# Attention and probabilities: 0..1 with the low end stretched, so the many small weights stay visible.
ATTENTION_SCALE = [[0.0, "#ffffff"], [0.02, "#eef4fb"], [0.08, "#c6dbef"], [0.2, "#6baed6"],
                   [0.45, "#2171b5"], [1.0, "#08306b"]]
METRIC_SCALE = "Viridis"
DIVERGING_SCALE = "RdBu_r"  # blue negative, white 0, red positive
STAGE_COLOURS = ["#9ecae1", "#4292c6", "#2171b5", "#08519c", "#6a51a3", "#54278f"]
FILTERED, CHOSEN, MASKED = "#d4d6db", "#e6550d", "#e6e8ec"
MAX_TOKENS = 256  # heatmaps keep the last MAX_TOKENS tokens: 65k cells stay fast in a browser
GRID_THUMB = 24  # each head's thumbnail in the all-heads grid is at most GRID_THUMB x GRID_THUMB cells
METRIC_LABELS = {"previous_token": "previous-token", "induction": "induction",
                 "entropy": "entropy (0 sharp, 1 uniform)", "first_token": "first-token (sink)"}


# ---- helpers shared with the widgets ----------------------------------------------------------------------
def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def short(token: str, n: int = 12) -> str:
    return token if len(token) <= n else token[: n - 1] + "…"


def ticks(tokens: list[str], start: int = 0, max_ticks: int = 80, length_px: float | None = None) -> dict:
    """Axis settings labelling positions start..start+len(tokens)-1 with (at most max_ticks) token strings.

    Every token is labelled up to max_ticks (smaller font past 40). Beyond that only every n-th is, and
    those labels carry their position ("12:the"), so a skipped axis never reads as a different text.
    With the axis length in pixels (`length_px`) the font is sized to the room each label has (8 to 12 px).
    """
    step = max(1, math.ceil(len(tokens) / max_ticks))
    vals = list(range(start, start + len(tokens), step))
    text = [short(tokens[v - start], 8) if step == 1 else f"{v}:{short(tokens[v - start], 6)}" for v in vals]
    if length_px:
        size = int(min(12, max(8, 0.85 * length_px / max(1, len(vals)))))
    else:
        size = 11 if len(vals) <= 40 else 8
    return dict(tickmode="array", tickvals=vals, ticktext=text, tickfont=dict(size=size))


def window_start(T: int, max_tokens: int = MAX_TOKENS) -> int:
    """First position shown when only the last max_tokens of T tokens are drawn."""
    return max(0, T - max_tokens)


def window_note(start: int, T: int) -> str:
    return f"showing last {T - start} of {T} tokens" if start else ""


def _subtitle(title: str, *parts: str, max_px: float | None = None) -> str:
    """The title, then the parts joined by " · " on one small line, or on as many as `max_px` (the room the
    title has) needs: a part never breaks, so a line may still be longer when one part alone is."""
    lines: list[str] = []
    for p in (p for p in parts if p):
        if lines and (max_px is None or (len(lines[-1]) + 3 + len(p)) * SUB_CHAR_PX <= max_px):
            lines[-1] += " · " + p
        else:
            lines.append(p)
    return title + "".join(f"<br><sup>{line}</sup>" for line in lines)


# ---- sizes in pixels --------------------------------------------------------------------------------------
# A figure with a square heatmap is laid out in pixels. Given only fractions, plotly keeps the heatmap square by
# shrinking its domain about the middle, while the colour bar stays at the right edge of the plot area, far from
# it. So such figures (and those with several parts side by side) set their width and height and place each
# part in px; figures without a fixed aspect leave their width to the page.
WIDTH = 960  # px: a figure with several parts side by side, unless given a width (a gptviz panel's figure width)
SQUARE_PX = 520  # the side of a figure's one square heatmap
COLOURBAR_PX = 90  # right of its heatmap, a colour bar takes this: the gap, the bar, its tick labels and title
SUB_CHAR_PX = 5.6  # a subtitle character's width, on average (TEMPLATE's 15 px title, <sup> at 70 %)


def title_px(title: str) -> int:
    """How far down from the figure's top (px) a TEMPLATE title and its subtitle lines reach."""
    return 44 + 19 * title.count("<br>")


def colourbar_beside(fig: go.Figure, x: float, y: tuple[float, float], **kw) -> None:
    """Put the heatmaps' colour bar at paper `x` (a heatmap's right edge plus a gap), as tall as the domain `y`."""
    fig.update_traces(colorbar=dict(x=x, xanchor="left", y=y[1], yanchor="top", len=y[1] - y[0], ypad=0, **kw),
                      selector=dict(type="heatmap"))


def square_size(width: int | None, left: int = 88) -> tuple[int, int]:
    """(side, width) of a figure whose plot area is one square heatmap with its colour bar beside it: the side
    is SQUARE_PX, or what a given `width` leaves (ValueError under 200 px); width None: what they need."""
    if width is None:
        return SQUARE_PX, left + SQUARE_PX + COLOURBAR_PX
    side = min(SQUARE_PX, width - left - COLOURBAR_PX)
    if side < 200:
        raise ValueError(f"this figure needs a width of at least {left + COLOURBAR_PX + 200} px, got {width}")
    return side, width


def square_layout(fig: go.Figure, side: int, width: int, bottom: int, left: int = 88) -> None:
    """Size `fig` so its plot area is its one heatmap (axes x and y), `side` px square, with the colour bar right
    beside it; width past the colour bar stays empty on the right. Set the title first: its lines decide the
    top margin."""
    top = title_px(fig.layout.title.text or "") + 24
    fig.update_layout(width=width, height=top + side + bottom,
                      margin=dict(l=left, r=width - left - side, t=top, b=bottom))
    colourbar_beside(fig, 1 + 10 / side, (0, 1))


def add_masked_background(fig: go.Figure, row=None, col=None) -> None:
    """Grey behind a heatmap's subplot, so NaN cells (masked: a token cannot see later ones) read as grey."""
    fig.add_shape(type="rect", xref="x domain", yref="y domain", x0=0, x1=1, y0=0, y1=1, fillcolor=MASKED,
                  line_width=0, layer="below", row=row, col=col)


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
    a = _np(att).copy()
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


# ---- attention --------------------------------------------------------------------------------------------
# `add_*` functions put one view into (a subplot of) a figure: the public figures below use them, and so do the
# panels that combine several views into their one FigureWidget.
def attention_title(record, layer: int, head: int, hide_first: bool = False, start: int = 0,
                    max_px: float | None = None) -> str:
    return _subtitle(f"Attention of layer {layer}, head {head}",
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
    title = _subtitle("All heads (L × nh)", "rows: layers, columns: heads", pooled, max_px=width - 24)
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
    titles = [METRIC_LABELS[k] + (" — n/a: no repeated tokens" if np.isnan(_np(metrics[k])).all() else "")
              for k in keys]
    fig = make_subplots(1, len(keys), subplot_titles=titles, horizontal_spacing=0.05)
    L, nh = record.n_layer, record.n_head
    for i, k in enumerate(keys):
        fig.add_trace(go.Heatmap(name=k, z=_np(metrics[k]), zmin=0, zmax=1, colorscale=METRIC_SCALE,
                                 showscale=i == 0, colorbar=dict(thickness=10, title="score"),
                                 texttemplate="%{z:.2f}" if L * nh <= 64 else None, hoverongaps=False,
                                 hovertemplate=f"layer %{{y}}, head %{{x}}<br>{METRIC_LABELS[k]} %{{z:.3f}}"
                                               "<extra></extra>"), 1, i + 1)
        fig.update_xaxes(title_text="head (nh)", dtick=1 if nh <= 16 else None, showgrid=False, row=1, col=i + 1)
        fig.update_yaxes(title_text="layer (L)" if i == 0 else None, dtick=1 if L <= 16 else None,
                         autorange="reversed", showgrid=False, row=1, col=i + 1)
    fig.update_annotations(font_size=12)
    fig.update_layout(template=TEMPLATE, height=330, title=_subtitle(
        "What each head does", "1.0 = the head does this perfectly; computed on this input"))
    return fig


# ---- positions (these read weights, not records) ----------------------------------------------------------
def _pe_heatmap(z: np.ndarray, title: str, xtitle: str, ytitle: str, zmax: float) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=z, zmin=-zmax, zmax=zmax, zmid=0, colorscale=DIVERGING_SCALE,
                               hovertemplate=f"{ytitle} %{{y}}, {xtitle} %{{x}}: %{{z:.3f}}<extra></extra>",
                               colorbar=dict(thickness=12)))
    fig.update_xaxes(title_text=xtitle, showgrid=False, zeroline=False)
    fig.update_yaxes(title_text=ytitle, showgrid=False, zeroline=False, autorange="reversed")
    fig.update_layout(template=TEMPLATE, height=480, title=title)
    return fig


def sinusoidal_heatmap(T: int = 64, C: int = 128) -> go.Figure:
    """The seed's sinusoidal encoding PE (T x C): fast waves in low dimensions, slow ones in high."""
    pe = sinusoidal_encoding(T, C).numpy()
    return _pe_heatmap(pe, _subtitle(f"Sinusoidal positional encoding (T={T} × C={C})",
                                     "PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(same)",
                                     "low dimensions oscillate fast, high ones slowly"),
                       "dimension (C)", "position (T)", 1.0)


def wavelength(dim: int, C: int) -> float:
    return 2 * math.pi * 10000 ** ((dim - dim % 2) / C)


def sine_waves(T: int = 64, C: int = 128, dims: list[int] | tuple[int, ...] = (0, 1, 8, 32)) -> go.Figure:
    """Columns of the sinusoidal encoding as curves over position: one wave per chosen dimension."""
    bad = [d for d in dims if not 0 <= d < C]
    if bad:
        raise ValueError(f"dimensions {bad} are outside 0..{C - 1} (C={C})")
    fig = go.Figure()
    smooth = np.linspace(0, T - 1, max(200, 8 * T))
    pe = sinusoidal_encoding(T, C).numpy()
    for n, d in enumerate(dims):
        colour = TEMPLATE.layout.colorway[n % 6]
        fn = np.sin if d % 2 == 0 else np.cos
        lam = wavelength(d, C)
        fig.add_trace(go.Scatter(x=smooth, y=fn(2 * math.pi * smooth / lam), mode="lines", hoverinfo="skip",
                                 line=dict(color=colour, width=1, dash="dot"), showlegend=False))
        fig.add_trace(go.Scatter(x=np.arange(T), y=pe[:, d], mode="markers", marker=dict(color=colour, size=5),
                                 name=f"dim {d}: {'sin' if d % 2 == 0 else 'cos'}, wavelength {lam:.1f}",
                                 hovertemplate=f"dim {d}, position %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(title_text="position (T)")
    fig.update_yaxes(title_text="PE value", range=[-1.1, 1.1])
    fig.update_layout(template=TEMPLATE, height=380, plot_bgcolor="white", legend=dict(orientation="h", y=-0.25),
                      title=_subtitle("Sinusoidal encoding, one dimension at a time",
                                      "dots: the values a position gets; dotted: the underlying wave"))
    return fig


def position_matrix(source, T: int | None = None) -> np.ndarray:
    """Position vectors (T, C) of a GPT (learned `wpe` or fixed sinusoidal `pe`) or of a given (T, C) matrix."""
    if isinstance(source, torch.nn.Module):
        kind = source.config.pos_encoding
        if kind == "learned":
            source = source.wpe.weight
        elif kind == "sinusoidal":
            source = source.pe
        else:
            raise ValueError("this model has no position embeddings (pos_encoding='none'): order reaches it "
                             "only through the causal mask")
    m = _np(source)
    if m.ndim != 2:
        raise ValueError(f"expected a (T, C) position matrix, got shape {m.shape}")
    return m[:T] if T else m


def learned_position_heatmap(model, max_positions: int = MAX_TOKENS) -> go.Figure:
    """The model's learned position embeddings wpe (block_size x C), first max_positions rows."""
    if model.config.pos_encoding != "learned":
        raise ValueError(f"this model's positions are {model.config.pos_encoding!r}, not learned; "
                         "use sinusoidal_heatmap for the fixed encoding")
    full = position_matrix(model)
    m = full[:max_positions]
    note = f"showing first {len(m)} of {len(full)} positions" if len(m) < len(full) else ""
    return _pe_heatmap(m, _subtitle(f"Learned position embeddings (T={len(full)} × C={m.shape[1]})",
                                    "one row per position, added to the token embedding", note),
                       "dimension (C)", "position (T)", float(np.abs(m).max()) or 1.0)


def position_similarity(source, T: int | None = None, max_positions: int = MAX_TOKENS,
                        width: int | None = None) -> go.Figure:
    """Cosine similarity between every pair of position vectors (T x T): a square heatmap with its colour bar
    beside it, in a figure `width` px wide (default: as wide as they need)."""
    m = position_matrix(source, T)[:max_positions]
    unit = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    side, width = square_size(width, left=70)
    fig = _pe_heatmap(unit @ unit.T, _subtitle(f"Cosine similarity of position vectors (T={len(m)})",
                                               "a wide red band along the diagonal = nearby positions look alike",
                                               max_px=width - 24),
                      "position (T)", "position (T)", 1.0)
    fig.update_xaxes(constrain="domain")
    fig.update_yaxes(scaleanchor="x", constrain="domain")
    square_layout(fig, side, width, bottom=60, left=70)
    return fig


@torch.no_grad()
def position_scores(model, T: int | None = None) -> torch.Tensor:
    """Position-only attention scores (L, nh, T, T), NaN where masked.

    Definition: the score head h of layer l gives key j from query i when the residual stream holds only
    the position vectors P, S[i, j] = (ln_1(p_i) W_Q + b_Q) · (ln_1(p_j) W_K + b_K) / sqrt(hs). It is exact
    for layer 0 with the token embeddings removed, and a probe (same weights, positions only) for deeper
    layers. Its spread over keys says how strongly position alone steers where the head looks.
    """
    P = torch.as_tensor(position_matrix(model, T or model.config.block_size), device=model.device)
    P = P.to(model.wte.weight.dtype)
    nh, hs, C = model.config.n_head, model.config.head_size, model.config.n_embd
    n = P.shape[0]
    out = []
    for block in model.blocks:
        q, k, _ = block.attn.c_attn(block.ln_1(P)).split(C, dim=1)
        q = q.view(n, nh, hs).transpose(0, 1)  # (nh, T, hs)
        k = k.view(n, nh, hs).transpose(0, 1)
        out.append((q @ k.transpose(1, 2)).float().cpu() / math.sqrt(hs))  # (nh, T, T)
    s = torch.stack(out)  # (L, nh, T, T)
    return s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("nan"))


def score_spread(scores: torch.Tensor) -> np.ndarray:
    """(L, nh): mean over queries t >= 1 of the standard deviation, over the keys it sees, of position scores."""
    return np.nanmean(np.nanstd(_np(scores)[..., 1:, :], axis=-1), axis=-1)


SCORES_MARGIN = dict(l=70, r=16, b=60)
SCORES_SIDE_PX = 420  # the score matrix's side, when the width leaves room


def position_score_contribution(model, layer: int = 0, head: int = 0, T: int | None = None,
                                scores: torch.Tensor | None = None, width: int = WIDTH) -> go.Figure:
    """How much position embeddings alone shape attention scores q·k (see `position_scores`).

    Left: one head's position-only score matrix (T x T, square). Right: every head's spread (L x nh), in
    logits: a spread of ~2 or more means positions alone can move that head's attention a lot. Each has its
    colour bar beside it, in a figure `width` px wide.
    """
    T = min(T or 64, model.config.block_size)
    s = position_scores(model, T) if scores is None else scores
    L, nh = s.shape[:2]
    if not (0 <= layer < L and 0 <= head < nh):
        raise ValueError(f"layer {layer}, head {head} out of range (L={L}, nh={nh})")
    z = _np(s[layer, head])
    zmax = float(np.nanmax(np.abs(z))) or 1.0
    # in px: the score matrix, its colour bar, the spread's layer labels, the spread, its colour bar
    m = SCORES_MARGIN
    pw = width - m["l"] - m["r"]
    side = min(SCORES_SIDE_PX, pw - COLOURBAR_PX - 60 - 160 - COLOURBAR_PX)  # the spread 160 px at least
    if side < 200:
        raise ValueError(f"position_score_contribution needs a width of at least {width - side + 200} px, "
                         f"got {width}")
    x2 = side + COLOURBAR_PX + 60
    title = _subtitle("How much do positions alone shape attention scores?",
                      "score = (ln_1(p_i)W_Q)·(ln_1(p_j)W_K)/√hs with only position vectors in the residual stream",
                      "exact for layer 0, a probe for deeper layers", max_px=width - 24)
    top = title_px(title) + 36  # and the subplot titles
    fig = make_subplots(1, 2)
    fig.add_trace(go.Heatmap(name="scores", z=z, zmin=-zmax, zmax=zmax, zmid=0, colorscale=DIVERGING_SCALE,
                             hoverongaps=False, colorbar=dict(x=(side + 10) / pw, thickness=10, title="q·k/√hs"),
                             hovertemplate="query %{y} → key %{x}: %{z:.2f}<extra></extra>"), 1, 1)
    add_masked_background(fig, 1, 1)
    fig.add_trace(go.Heatmap(name="spread", z=score_spread(s), colorscale=METRIC_SCALE, zmin=0,
                             colorbar=dict(x=(pw - COLOURBAR_PX + 10) / pw, thickness=10, title="logits"),
                             hovertemplate="layer %{y}, head %{x}: spread %{z:.2f}<extra></extra>"), 1, 2)
    fig.update_traces(colorbar=dict(xanchor="left", y=1, yanchor="top", len=1, ypad=0))
    fig.update_xaxes(title_text="key position (Tk)", showgrid=False, zeroline=False, domain=[0, side / pw],
                     row=1, col=1)
    fig.update_yaxes(title_text="query position (T)", autorange="reversed", showgrid=False, row=1, col=1)
    fig.update_xaxes(title_text="head (nh)", showgrid=False, dtick=1, row=1, col=2,
                     domain=[x2 / pw, (pw - COLOURBAR_PX) / pw])
    fig.update_yaxes(title_text="layer (L)", autorange="reversed", showgrid=False, dtick=1, row=1, col=2)
    for axis, text in (("x", f"layer {layer}, head {head}: score from position alone"),
                       ("x2", "spread of position scores per head")):
        fig.add_annotation(text=text, xref=f"{axis} domain", yref="paper", x=0.5, y=1, yshift=6, showarrow=False,
                           yanchor="bottom", font_size=12)
    fig.update_layout(template=TEMPLATE, title=title, width=width, height=top + side + m["b"],
                      margin=dict(m, t=top))
    return fig


# ---- generation -------------------------------------------------------------------------------------------
STAGE_LABELS = {"raw": "raw", "repetition_penalty": "after repetition penalty",
                "no_repeat_ngram": "after no-repeat-n-gram", "temperature": "after temperature",
                "top_k": "after top-k", "top_p": "after top-p"}


def step_title(step, forced: bool = False) -> str:
    """What happened at a step; `forced`: the token was picked by a fork, not by the sampler."""
    token = repr(short(step.token, 16)) if step.token is not None else f"id {step.token_id}"
    how = (f"forked here: you chose {token} (the sampler gave it p = {step.prob:.3f}, raw p = {step.raw_prob:.3f})"
           if forced else
           f"chose {token}, p = {step.prob:.3f} (raw p = {step.raw_prob:.3f})")
    return _subtitle(f"Step {step.step} (position {step.position}): {how}", f"entropy {step.entropy:.2f} nats",
                     "bars: each candidate's probability after every stage", "hatched grey = removed by that stage",
                     "orange outline = chosen")


def add_candidates(fig: go.Figure, step, row=None, col=None) -> None:
    """One bar trace per stage over the step's k candidates (the same ids at every stage, in raw order);
    customdata holds the candidate ids (a click on a bar names a token). A candidate a stage removes is
    drawn hatched grey at the height it had before that stage."""
    ids = [int(i) for i in step.candidates.tolist()]
    names = list(step.candidate_tokens) if step.candidate_tokens else [f"id {i}" for i in ids]
    prev = None
    for n, stage in enumerate(step.stages):
        p = _np(stage.probs)
        cut = (p <= 0) & (prev > 0) if prev is not None else np.zeros(len(p), dtype=bool)
        label = STAGE_LABELS.get(stage.name, stage.name)
        fig.add_trace(go.Bar(
            name=f"{label} ({stage.kept} kept)", x=list(range(len(ids))), y=np.where(cut, prev, p) if
            prev is not None else p, customdata=ids, text=names, textposition="none",
            hovertext=[f"removed (was {q:.3f})" if c else f"p = {v:.3f}" for c, q, v in
                       zip(cut, prev if prev is not None else p, p)],
            marker=dict(color=[FILTERED if c else STAGE_COLOURS[n % len(STAGE_COLOURS)] for c in cut],
                        pattern=dict(shape=["/" if c else "" for c in cut], fgcolor="#9aa3b2"),
                        line=dict(color=CHOSEN, width=[3 if i == step.token_id else 0 for i in ids])),
            hovertemplate=f"{label}: %{{text}} %{{hovertext}}<extra>click to fork</extra>"), row=row, col=col)
        prev = p
    fig.update_xaxes(title_text="candidate next token (k)", tickvals=list(range(len(ids))), row=row, col=col,
                     ticktext=[f"<b>{short(t)}</b>" if i == step.token_id else short(t) for i, t in zip(ids, names)])
    fig.update_yaxes(title_text="probability", range=[0, 1.02], row=row, col=col)


def step_candidates(step) -> go.Figure:
    """Candidate probabilities at one step, per sampling stage (raw, penalties, temperature, top-k, top-p)."""
    fig = go.Figure()
    add_candidates(fig, step)
    fig.update_layout(template=TEMPLATE, height=420, barmode="group", plot_bgcolor="white", title=step_title(step),
                      legend=dict(orientation="h", y=-0.3))
    return fig


def row_values(step, layer: int, head: int | None) -> np.ndarray:
    """The new token's attention over its context (Tk,): one head, or the mean over heads (head=None)."""
    if step.attention is None:
        raise ValueError("this step has no attention (generated with record_attention=False)")
    a = _np(step.attention)
    L, nh = a.shape[:2]
    if not 0 <= layer < L or (head is not None and not 0 <= head < nh):
        raise ValueError(f"layer {layer}, head {head} out of range (L={L}, nh={nh})")
    return a[layer].mean(0) if head is None else a[layer, head]


def row_title(step, layer: int, head: int | None) -> str:
    who = "mean over heads" if head is None else f"head {head}"
    return f"where the model looked to choose it (layer {layer}, {who})"


def add_attention_row(fig: go.Figure, step, layer: int, head: int | None, tokens: list[str] | None,
                      row=None, col=None, length_px: float | None = None) -> None:
    """Bars (trace "attention row") of the new token's attention over context positions; `length_px`, the
    x axis's length in pixels where known, sizes the token labels."""
    y = row_values(step, layer, head)
    x = np.arange(step.context_start, step.context_start + len(y))
    text = list(tokens[step.context_start: step.context_start + len(y)]) if tokens else [str(i) for i in x]
    fig.add_trace(go.Bar(name="attention row", x=x, y=y, text=text, textposition="none", marker_color="#2171b5",
                         hovertemplate="%{x} %{text}: %{y:.3f}<extra></extra>", showlegend=False), row=row, col=col)
    fig.update_xaxes(title_text="context position (Tk)", **ticks(text, step.context_start, 50, length_px),
                     row=row, col=col)
    fig.update_yaxes(title_text="attention", rangemode="tozero", row=row, col=col)


def attention_row(step, layer: int, head: int | None = None, tokens: list[str] | None = None) -> go.Figure:
    """Where the model looked (one head, or the mean of a layer's heads) when it produced this step's token.

    `tokens` are the display strings of the whole sequence (prompt + generated), indexed by position."""
    fig = go.Figure()
    add_attention_row(fig, step, layer, head, tokens)
    fig.update_layout(template=TEMPLATE, height=300, plot_bgcolor="white",
                      title=f"Step {step.step}: {row_title(step, layer, head)}")
    return fig


# ---- training ---------------------------------------------------------------------------------------------
def loss_title(stats) -> str:
    val = [s for s in stats if s.val_loss is not None]
    last = f"step {stats[-1].step}: train {stats[-1].loss:.3f}" if stats else "no steps yet"
    last += f", val {val[-1].val_loss:.3f}" if val else ""
    return _subtitle("Training loss", last, "healthy: falls fast, then slowly; val rising above train = overfitting")


def add_loss_curves(fig: go.Figure, stats, vocab_size: int | None = None, row=None, col=None) -> None:
    """Train loss (line), val loss (dots), learning rate (dotted, secondary y). The subplot at (row, col)
    must have been made with {"secondary_y": True}."""
    stats = list(stats)
    steps = [s.step for s in stats]
    val = [s for s in stats if s.val_loss is not None]
    where = dict(row=row, col=col) if row else {}
    fig.add_trace(go.Scatter(name="train loss", x=steps, y=[s.loss for s in stats], mode="lines",
                             line=dict(color="#2166ac", width=2)), secondary_y=False, **where)
    fig.add_trace(go.Scatter(name="val loss", x=[s.step for s in val], y=[s.val_loss for s in val],
                             mode="lines+markers", line=dict(color="#e6550d", width=2)), secondary_y=False, **where)
    fig.add_trace(go.Scatter(name="learning rate", x=steps, y=[s.lr for s in stats], mode="lines",
                             line=dict(color="#9aa3b2", dash="dot")), secondary_y=True, **where)
    if vocab_size:
        fig.add_hline(y=math.log(vocab_size), line=dict(color="#9aa3b2", dash="dash", width=1),
                      annotation_text=f"uniform guess ln V = {math.log(vocab_size):.2f}",
                      annotation_position="top right", **where)
    fig.update_xaxes(title_text="step", **where)
    fig.update_yaxes(title_text="cross-entropy loss (nats)", secondary_y=False, **where)
    fig.update_yaxes(title_text="learning rate", secondary_y=True, showgrid=False, tickformat=".1~e",
                     rangemode="tozero", nticks=5, **where)


def loss_curves(stats, vocab_size: int | None = None) -> go.Figure:
    """Train/val loss and learning rate against step; a dashed line marks ln V, the loss of a uniform guess."""
    stats = list(stats)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    add_loss_curves(fig, stats, vocab_size)
    fig.update_layout(template=TEMPLATE, height=380, plot_bgcolor="white", title=loss_title(stats),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return fig


# ---- logit lens (runs the model) --------------------------------------------------------------------------
@dataclass
class LogitLensRecord:
    """Read-out of the residual stream after the embeddings and after every block, through ln_f + lm_head."""

    tokens: list[str]  # T input tokens
    layers: list[str]  # L + 1 labels: "embed", "block 0", ...
    top_ids: torch.Tensor  # (L+1, T) most likely next token at each layer and position
    top_probs: torch.Tensor  # (L+1, T)
    top_tokens: list[list[str]]  # (L+1, T)
    next_probs: torch.Tensor  # (L+1, T) probability of the actual next input token (NaN at the last position)


@torch.no_grad()
def logit_lens_record(model, tokenizer, ids) -> LogitLensRecord:
    """Run the model once and decode every layer's residual stream as if it were the last layer."""
    ids = torch.as_tensor(ids).flatten()[-model.config.block_size:]
    if ids.numel() == 0:
        raise ValueError("no tokens to run; type at least one character")
    was_training = model.training
    model.eval()
    try:
        names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.config.n_layer)]
        with capture(model, names) as cap:
            model(ids[None].to(model.device))
        tops, probs, nexts = [], [], []
        for name in names:  # one layer at a time: (T, V) probabilities never pile up for every layer
            p = torch.softmax(model.lm_head(model.ln_f(cap[name][0])).float(), -1)  # (T, V)
            top = p.max(-1)
            tops.append(top.indices.cpu())
            probs.append(top.values.cpu())
            nxt = torch.full((len(ids),), float("nan"))
            nxt[:-1] = p[torch.arange(len(ids) - 1), ids[1:].to(p.device)].cpu()
            nexts.append(nxt)
    finally:
        model.train(was_training)
    top_ids = torch.stack(tops)
    return LogitLensRecord(tokens=tokenizer.tokens(ids.tolist()),
                           layers=["embed"] + [f"block {l}" for l in range(model.config.n_layer)],
                           top_ids=top_ids, top_probs=torch.stack(probs), next_probs=torch.stack(nexts),
                           top_tokens=[tokenizer.tokens(r) for r in top_ids.tolist()])


def logit_lens_figure(lens: LogitLensRecord, colour: str = "top", max_positions: int = 48) -> go.Figure:
    """Top token at every layer (rows, embed at the bottom) and position (columns); colour = its probability,
    or (colour="next") the probability given to the token that really comes next."""
    if colour not in ("top", "next"):
        raise ValueError(f"colour must be 'top' or 'next', got {colour!r}")
    T = len(lens.tokens)
    start = window_start(T, max_positions)
    z = _np(lens.top_probs if colour == "top" else lens.next_probs)[:, start:]
    text = np.array(lens.top_tokens, dtype=object)[:, start:]
    nxt = [lens.tokens[t + 1] if t + 1 < T else "—" for t in range(start, T)]
    pos = np.arange(start, T)
    hover = np.array([[f"{lens.layers[l]} · position {p} {short(lens.tokens[p], 16)}<br>top next: "
                       f"{short(text[l, i], 16)} ({_np(lens.top_probs)[l, p]:.3f})<br>true next: "
                       f"{short(nxt[i], 16)} ({_np(lens.next_probs)[l, p]:.3f})" for i, p in enumerate(pos)]
                      for l in range(len(lens.layers))], dtype=object)
    width = max(2, min(10, 120 // max(1, len(pos))))  # characters of a cell's token that fit its width
    fig = go.Figure(go.Heatmap(z=z, x=pos, y=list(range(len(lens.layers))), text=[[short(t, width) for t in r]
                               for r in text], texttemplate="%{text}" if len(pos) <= 64 else None,
                               textfont=dict(size=10), customdata=hover, zmin=0, zmax=1, hoverongaps=False,
                               colorscale=ATTENTION_SCALE, hovertemplate="%{customdata}<extra></extra>",
                               colorbar=dict(thickness=12, title="p")))
    fig.update_xaxes(title_text="input position (T)", showgrid=False, **ticks(lens.tokens[start:], start, 64))
    fig.update_yaxes(title_text="read out after (L)", tickvals=list(range(len(lens.layers))), ticktext=lens.layers,
                     showgrid=False)
    what = "probability of the top token" if colour == "top" else "probability of the true next token"
    fig.update_layout(template=TEMPLATE, height=max(320, 110 + 34 * len(lens.layers)), title=_subtitle(
        "Logit lens: what each layer would predict next", f"cell text = top token; colour = {what}",
        window_note(start, T)))
    return fig


def logit_lens(model, tokenizer, ids, colour: str = "top", max_positions: int = 48) -> go.Figure:
    """`logit_lens_record` then `logit_lens_figure`: the top token at every layer for every position."""
    return logit_lens_figure(logit_lens_record(model, tokenizer, ids), colour, max_positions)


# ---- checkpoint diff --------------------------------------------------------------------------------------
def head_change(before, after) -> np.ndarray:
    """(L, nh) mean |Δ attention| over the causal (query, key) pairs of the same input."""
    if before.ids.tolist() != after.ids.tolist():
        raise ValueError("checkpoint_diff needs both records made from the same token ids; record the same "
                         "prompt with the same tokenizer before and after")
    if before.attention.shape != after.attention.shape:
        raise ValueError(f"attention shapes differ: {tuple(before.attention.shape)} vs "
                         f"{tuple(after.attention.shape)} (different L or nh?)")
    d = prepare_attention((after.attention - before.attention).abs())
    return np.nanmean(d, axis=(-1, -2))


DIFF_MARGIN = dict(l=70, r=16, b=84)
DIFF_HEADS_PX, DIFF_PX = 240, 300  # the heads' map: width; both parts: height


def checkpoint_diff(before, after, max_tokens: int = 64, width: int = WIDTH) -> go.Figure:
    """Which heads changed most (mean |Δ attention|, with its colour bar) and how next-token probabilities moved
    (bars), on the same prompt, in a figure `width` px wide."""
    change = head_change(before, after)
    T = after.T
    start = window_start(T, max_tokens)
    top_after = _np(after.top_probs[:, 0])
    before_of_top = []
    for t in range(T):  # probability the old model gave to the new model's favourite (0 if outside its top-k)
        match = (before.top_ids[t] == after.top_ids[t, 0]).nonzero()
        before_of_top.append(float(before.top_probs[t, match[0, 0]]) if len(match) else 0.0)
    pos = np.arange(start, T)
    names = [after.top_tokens[t][0] for t in range(start, T)]
    # in px: the heads' map, its colour bar, the bars' probability labels, the bars
    m = DIFF_MARGIN
    pw = width - m["l"] - m["r"]
    x2 = DIFF_HEADS_PX + COLOURBAR_PX + 60
    if pw - x2 < 200:
        raise ValueError(f"checkpoint_diff needs a width of at least {x2 + 200 + m['l'] + m['r']} px, got {width}")
    fig = make_subplots(1, 2)
    fig.add_trace(go.Heatmap(name="change", z=change, colorscale=METRIC_SCALE, zmin=0,
                             colorbar=dict(x=(DIFF_HEADS_PX + 10) / pw, xanchor="left", thickness=10, len=1, y=1,
                                           yanchor="top", ypad=0),
                             hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"), 1, 1)
    for name, y, colour in (("before", before_of_top[start:], "#9aa3b2"), ("after", top_after[start:], "#2166ac")):
        fig.add_trace(go.Bar(name=name, x=pos, y=y, marker_color=colour, text=names, textposition="none",
                             hovertemplate=f"{name}: p(%{{text}}) = %{{y:.3f}}<extra></extra>"), 1, 2)
    L, nh = change.shape
    fig.update_xaxes(title_text="head (nh)", showgrid=False, dtick=1 if nh <= 16 else None,
                     domain=[0, DIFF_HEADS_PX / pw], row=1, col=1)
    fig.update_yaxes(title_text="layer (L)", autorange="reversed", showgrid=False, dtick=1 if L <= 16 else None,
                     row=1, col=1)
    fig.update_xaxes(title_text="position (T)", domain=[x2 / pw, 1],
                     **ticks(after.tokens[start:], start, length_px=pw - x2), row=1, col=2)
    fig.update_yaxes(title_text="probability", range=[0, 1], row=1, col=2)
    # each part's caption above it, left-aligned; the legend at the bars' top right, on the caption's line
    for axis, text in (("x", "mean |Δ attention| per head"), ("x2", "probability of the new top next token")):
        fig.add_annotation(text=text, xref=f"{axis} domain", yref="paper", x=0, y=1, yshift=6, showarrow=False,
                           xanchor="left", yanchor="bottom", font_size=12)
    l, h = np.unravel_index(np.nanargmax(change), change.shape)
    title = _subtitle("Checkpoint diff on the same prompt", f"most changed: layer {l}, head {h}",
                      window_note(start, T), max_px=width - 24)
    top = title_px(title) + 36
    fig.update_layout(template=TEMPLATE, width=width, height=top + DIFF_PX + m["b"], margin=dict(m, t=top),
                      barmode="group", title=title, legend=dict(orientation="h", x=1, xanchor="right", y=1,
                                                                yanchor="bottom", font_size=11))
    return fig
