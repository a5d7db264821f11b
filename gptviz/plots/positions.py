"""Positional-encoding views: the sinusoidal formula (as a heatmap and as waves), a model's learned position
embeddings, the cosine similarity of position vectors, and how much positions alone shape attention scores.
RoPE's views live in `rope` and are re-exported here.

The formula views need only sizes; the others draw a (T, C) position matrix (read from a model's `wpe`/`pe` by
`gptviz.positions.position_matrix`: reading a weight table to draw it runs nothing) or the position-only scores
(L, nh, T, T) that `gptviz.positions.position_scores` computes with the model's layers. Nothing here calls a
model's layers; colours and sizes come from `style`. Every view takes `width`, the px it will be shown in (a
panel's): its title wraps to it, and a view with parts side by side puts them one under the other when narrow.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..model import sinusoidal_encoding
from ..positions import position_matrix, score_spread
from .rope import rope_angle_heatmap, rope_distance_scores, rope_head_distance, rope_score_heatmap
from .style import (
    COLOURBAR_PX,
    DIVERGING_SCALE,
    MAX_TOKENS,
    METRIC_SCALE,
    NARROW_PX,
    TEMPLATE,
    WIDTH,
    add_masked_background,
    as_numpy,
    signed_heatmap,
    square_layout,
    square_size,
    subtitle,
    title_on_top,
    title_px,
    top_margin,
)

__all__ = [
    "sinusoidal_heatmap",
    "wavelength",
    "sine_waves",
    "learned_position_heatmap",
    "position_similarity",
    "SCORES_MARGIN",
    "SCORES_SIDE_PX",
    "position_score_contribution",
    "rope_angle_heatmap",
    "rope_score_heatmap",
    "rope_distance_scores",
    "rope_head_distance",
]


def _room(width: int | None) -> float | None:
    return None if width is None else width - 24


# ---- the sinusoidal formula -------------------------------------------------------------------------------
def sinusoidal_heatmap(T: int = 64, C: int = 128, width: int | None = None) -> go.Figure:
    """The seed's sinusoidal encoding PE (T x C), its sin dimensions (0, 2, 4, ...) on the left and its cos
    dimensions (1, 3, 5, ...) on the right (narrower than NARROW_PX: sin above cos), each by pair i: fast waves
    at small i, slow ones at large i.

    Side by side, not interleaved as the vector holds them: once a pair's wavelength passes T, its sin column is
    ~0 and its cos column ~1 everywhere, and interleaved they would draw a barcode of alternating stripes.
    Traces: "sin" (PE[:, 0::2]) and "cos" (PE[:, 1::2]), x = the pair index i."""
    pe = sinusoidal_encoding(T, C).numpy()
    stacked = width is not None and width < NARROW_PX
    names = ("sin: dimensions 2i = 0, 2, 4, …", "cos: dimensions 2i + 1 = 1, 3, 5, …")
    if stacked:
        fig = make_subplots(2, 1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=names)
    else:
        fig = make_subplots(1, 2, shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=names)
    for k, (name, z, dim) in enumerate((("sin", pe[:, 0::2], "2i"), ("cos", pe[:, 1::2], "2i+1"))):
        at = dict(row=k + 1, col=1) if stacked else dict(row=1, col=k + 1)
        fig.add_trace(
            go.Heatmap(
                z=z,
                name=name,
                zmin=-1,
                zmax=1,
                zmid=0,
                colorscale=DIVERGING_SCALE,
                showscale=k == 1,
                colorbar=dict(thickness=12),
                hovertemplate=f"position %{{y}}, {name} of pair i = %{{x}} (dim {dim}): %{{z:.3f}}<extra></extra>",
            ),
            **at,
        )
        below = not stacked or k == 1  # the pair axis's title under the lowest heatmap(s)
        fig.update_xaxes(title_text="pair i (C/2 pairs)" if below else None, showgrid=False, zeroline=False, **at)
        left = stacked or k == 0
        fig.update_yaxes(
            title_text="position (T)" if left else None, showgrid=False, zeroline=False, autorange="reversed", **at
        )
    fig.update_annotations(font_size=13)  # the halves' names
    title = subtitle(
        f"Sinusoidal positional encoding (T={T} × C={C})",
        "PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(same)",
        "small i oscillate fast, large i slowly (sin → 0, cos → 1)",
        max_px=_room(width),
    )
    top = top_margin(title, gap=44)  # and the halves' names
    fig.update_layout(
        template=TEMPLATE,
        height=(760 if stacked else 480) + top - 110,
        margin=dict(t=top),
        title=title_on_top(title),
    )
    return fig


def wavelength(dim: int, C: int) -> float:
    return 2 * math.pi * 10000 ** ((dim - dim % 2) / C)


def sine_waves(
    T: int = 64, C: int = 128, dims: list[int] | tuple[int, ...] = (0, 1, 8, 32), width: int | None = None
) -> go.Figure:
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
        fig.add_trace(
            go.Scatter(
                x=smooth,
                y=fn(2 * math.pi * smooth / lam),
                mode="lines",
                hoverinfo="skip",
                line=dict(color=colour, width=1, dash="dot"),
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=np.arange(T),
                y=pe[:, d],
                mode="markers",
                marker=dict(color=colour, size=5),
                name=f"dim {d}: {'sin' if d % 2 == 0 else 'cos'}, wavelength {lam:.1f}",
                hovertemplate=f"dim {d}, position %{{x}}: %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="position (T)")
    fig.update_yaxes(title_text="PE value", range=[-1.1, 1.1])
    title = subtitle(
        "Sinusoidal encoding, one dimension at a time",
        "dots: the values a position gets; dotted: the underlying wave",
        max_px=_room(width),
    )
    top = top_margin(title)
    fig.update_layout(
        template=TEMPLATE,
        height=380 + top - 90,
        plot_bgcolor="white",
        legend=dict(orientation="h", y=-0.25),
        title=title_on_top(title),
        margin=dict(t=top),
    )
    return fig


# ---- a model's (or any) position vectors ------------------------------------------------------------------
def learned_position_heatmap(model, max_positions: int = MAX_TOKENS, width: int | None = None) -> go.Figure:
    """The model's learned position embeddings wpe (block_size x C), first max_positions rows."""
    if model.config.pos_encoding != "learned":
        raise ValueError(
            f"this model's positions are {model.config.pos_encoding!r}, not learned; "
            "use sinusoidal_heatmap for the fixed encoding"
        )
    full = position_matrix(model)
    m = full[:max_positions]
    note = f"showing first {len(m)} of {len(full)} positions" if len(m) < len(full) else ""
    return signed_heatmap(
        m,
        subtitle(
            f"Learned position embeddings (T={len(full)} × C={m.shape[1]})",
            "one row per position, added to the token embedding",
            note,
            max_px=_room(width),
        ),
        "dimension (C)",
        "position (T)",
        float(np.abs(m).max()) or 1.0,
    )


def position_similarity(
    source, T: int | None = None, max_positions: int = MAX_TOKENS, width: int | None = None
) -> go.Figure:
    """Cosine similarity between every pair of position vectors (T x T): a square heatmap with its colour bar
    beside it, in a figure `width` px wide (default: as wide as they need)."""
    m = position_matrix(source, T)[:max_positions]
    unit = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    side, width = square_size(width, left=70)
    fig = signed_heatmap(
        unit @ unit.T,
        subtitle(
            f"Cosine similarity of position vectors (T={len(m)})",
            "a wide red band along the diagonal = nearby positions look alike",
            max_px=width - 24,
        ),
        "position (T)",
        "position (T)",
        1.0,
    )
    fig.update_xaxes(constrain="domain")
    fig.update_yaxes(scaleanchor="x", constrain="domain")
    square_layout(fig, side, width, bottom=60, left=70)
    return fig


# ---- position-only attention scores -----------------------------------------------------------------------
SCORES_MARGIN = dict(l=70, r=16, b=60)
SCORES_SIDE_PX = 420  # the score matrix's side, when the width leaves room
STACK_GAP_PX = 110  # stacked: under the score matrix, its key labels and axis title, then the spread's caption


def position_score_contribution(scores, layer: int = 0, head: int = 0, width: int = WIDTH) -> go.Figure:
    """How much position embeddings alone shape attention scores q·k: `scores` (L, nh, T, T) are
    `gptviz.positions.position_scores(model, T)`, which defines them.

    Left: one head's position-only score matrix (T x T, square). Right: every head's spread (L x nh), in
    logits: a spread of ~2 or more means positions alone can move that head's attention a lot. Each has its
    colour bar beside it, in a figure `width` px wide; under ~690 px the spread goes under the matrix.
    """
    if isinstance(scores, torch.nn.Module):  # the old signature took the model: say what to pass instead
        raise TypeError(
            "position_score_contribution draws scores and no longer runs the model's layers: pass "
            "gptviz.positions.position_scores(model, T) (the model-taking version used T=64)"
        )
    s = scores  # (L, nh, T, T)
    L, nh = s.shape[:2]
    if not (0 <= layer < L and 0 <= head < nh):
        raise ValueError(f"layer {layer}, head {head} out of range (L={L}, nh={nh})")
    z = as_numpy(s[layer, head])
    zmax = float(np.nanmax(np.abs(z))) or 1.0
    # in px: the score matrix, its colour bar, the spread's layer labels, the spread, its colour bar
    m = SCORES_MARGIN
    pw = width - m["l"] - m["r"]
    side = min(SCORES_SIDE_PX, pw - COLOURBAR_PX - 60 - 160 - COLOURBAR_PX)  # the spread 160 px at least
    stacked = side < 200  # too narrow side by side: the spread goes under the score matrix, as wide
    if stacked:
        side = min(SCORES_SIDE_PX, pw - COLOURBAR_PX)
        if side < 160:
            raise ValueError(
                f"position_score_contribution needs a width of at least {width - side + 160} px, got {width}"
            )
    x2 = side + COLOURBAR_PX + 60
    # in px from the top of the plot area: the matrix, then (stacked) its axis title and the spread's caption
    spread_top = side + STACK_GAP_PX if stacked else 0
    spread_h = min(side, side * L / nh) if stacked else side
    ph = spread_top + spread_h if stacked else side
    title = subtitle(
        "How much do positions alone shape attention scores?",
        "score = (ln_1(p_i)W_Q)·(ln_1(p_j)W_K)/√hs",
        "with only position vectors in the residual stream",
        "exact for layer 0, a probe for deeper layers",
        max_px=width - 24,
    )
    top = title_px(title) + 36  # and the subplot titles
    fig = make_subplots(1, 2)
    fig.add_trace(
        go.Heatmap(
            name="scores",
            z=z,
            zmin=-zmax,
            zmax=zmax,
            zmid=0,
            colorscale=DIVERGING_SCALE,
            hoverongaps=False,
            colorbar=dict(x=(side + 10) / pw, thickness=10, title="q·k/√hs", y=1, len=side / ph),
            hovertemplate="query %{y} → key %{x}: %{z:.2f}<extra></extra>",
        ),
        1,
        1,
    )
    add_masked_background(fig, 1, 1)
    fig.add_trace(
        go.Heatmap(
            name="spread",
            z=score_spread(s),
            colorscale=METRIC_SCALE,
            zmin=0,
            colorbar=dict(
                x=((side if stacked else pw - COLOURBAR_PX) + 10) / pw,
                thickness=10,
                title="logits",
                y=1 - spread_top / ph,
                len=spread_h / ph,
            ),
            hovertemplate="layer %{y}, head %{x}: spread %{z:.2f}<extra></extra>",
        ),
        1,
        2,
    )
    fig.update_traces(colorbar=dict(xanchor="left", yanchor="top", ypad=0))
    fig.update_xaxes(
        title_text="key position (Tk)", showgrid=False, zeroline=False, domain=[0, side / pw], row=1, col=1
    )
    fig.update_yaxes(
        title_text="query position (T)",
        autorange="reversed",
        showgrid=False,
        domain=[1 - side / ph, 1],
        row=1,
        col=1,
    )
    fig.update_xaxes(
        title_text="head (nh)",
        showgrid=False,
        dtick=1,
        row=1,
        col=2,
        domain=[0, side / pw] if stacked else [x2 / pw, (pw - COLOURBAR_PX) / pw],
    )
    fig.update_yaxes(
        title_text="layer (L)",
        autorange="reversed",
        showgrid=False,
        dtick=1,
        domain=[0, spread_h / ph] if stacked else [0, 1],
        row=1,
        col=2,
    )
    for axis, text in (
        ("x", f"layer {layer}, head {head}: score from position alone"),
        ("x2", "spread of position scores per head"),
    ):
        fig.add_annotation(
            text=text,
            xref=f"{axis} domain",
            yref="paper",
            x=0.5,
            y=spread_h / ph if axis == "x2" and stacked else 1,
            yshift=6,
            showarrow=False,
            yanchor="bottom",
            font_size=12,
        )
    fig.update_layout(
        template=TEMPLATE,
        title=dict(text=title, y=1, yref="container", yanchor="top", pad=dict(t=12)),  # down from the top
        width=width,
        height=top + ph + m["b"],
        margin=dict(m, t=top),
    )
    return fig
