"""Positional-encoding views: the sinusoidal formula (as a heatmap and as waves), a model's learned position
embeddings, the cosine similarity of position vectors, how much positions alone shape attention scores, and
RoPE: its rotation angle per dimension pair, q·k of the same vector against distance, and a real head's q·k.

The formula views (sinusoidal and RoPE) need only sizes and theta; the others draw a (T, C) position matrix
(read from a model's `wpe`/`pe` by `gptviz.positions.position_matrix`: reading a weight table to draw it runs
nothing), the position-only scores (L, nh, T, T) that `gptviz.positions.position_scores` computes with the
model's layers, or the `RopeScores` / `RopeHeadScores` records of `gptviz.positions`. Nothing here calls a
model's layers; colours and sizes come from `style`.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..model import sinusoidal_encoding
from ..positions import (
    RopeHeadScores,
    RopeScores,
    position_matrix,
    rope_angles,
    rope_score_matrix,
    rope_settings,
    rope_wavelengths,
    score_spread,
)
from .style import (
    COLOURBAR_PX,
    DIVERGING_SCALE,
    MAX_TOKENS,
    METRIC_SCALE,
    TEMPLATE,
    WIDTH,
    add_masked_background,
    as_numpy,
    square_layout,
    square_size,
    subtitle,
    title_px,
)


# ---- the sinusoidal formula -------------------------------------------------------------------------------
def _pe_heatmap(z: np.ndarray, title: str, xtitle: str, ytitle: str, zmax: float) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=z,
            zmin=-zmax,
            zmax=zmax,
            zmid=0,
            colorscale=DIVERGING_SCALE,
            hovertemplate=f"{ytitle} %{{y}}, {xtitle} %{{x}}: %{{z:.3f}}<extra></extra>",
            colorbar=dict(thickness=12),
        )
    )
    fig.update_xaxes(title_text=xtitle, showgrid=False, zeroline=False)
    fig.update_yaxes(title_text=ytitle, showgrid=False, zeroline=False, autorange="reversed")
    fig.update_layout(template=TEMPLATE, height=480, title=title)
    return fig


def sinusoidal_heatmap(T: int = 64, C: int = 128) -> go.Figure:
    """The seed's sinusoidal encoding PE (T x C), its sin dimensions (0, 2, 4, ...) on the left and its cos
    dimensions (1, 3, 5, ...) on the right, each by pair i: fast waves at small i, slow ones at large i.

    Side by side, not interleaved as the vector holds them: once a pair's wavelength passes T, its sin column is
    ~0 and its cos column ~1 everywhere, and interleaved they would draw a barcode of alternating stripes.
    Traces: "sin" (PE[:, 0::2]) and "cos" (PE[:, 1::2]), x = the pair index i."""
    pe = sinusoidal_encoding(T, C).numpy()
    fig = make_subplots(
        1,
        2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=("sin: dimensions 2i = 0, 2, 4, …", "cos: dimensions 2i + 1 = 1, 3, 5, …"),
    )
    for col, (name, z, dim) in enumerate((("sin", pe[:, 0::2], "2i"), ("cos", pe[:, 1::2], "2i+1")), start=1):
        fig.add_trace(
            go.Heatmap(
                z=z,
                name=name,
                zmin=-1,
                zmax=1,
                zmid=0,
                colorscale=DIVERGING_SCALE,
                showscale=col == 2,
                colorbar=dict(thickness=12),
                hovertemplate=f"position %{{y}}, {name} of pair i = %{{x}} (dim {dim}): %{{z:.3f}}<extra></extra>",
            ),
            1,
            col,
        )
        fig.update_xaxes(title_text="pair i (C/2 pairs)", showgrid=False, zeroline=False, row=1, col=col)
    fig.update_yaxes(title_text="position (T)", showgrid=False, zeroline=False, autorange="reversed", row=1, col=1)
    fig.update_yaxes(showgrid=False, zeroline=False, autorange="reversed", row=1, col=2)
    fig.update_layout(
        template=TEMPLATE,
        height=480,
        margin=dict(t=110),
        title=subtitle(
            f"Sinusoidal positional encoding (T={T} × C={C})",
            "PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(same)",
            "small i oscillate fast, large i slowly (sin → 0, cos → 1)",
        ),
    )
    return fig


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
    fig.update_layout(
        template=TEMPLATE,
        height=380,
        plot_bgcolor="white",
        legend=dict(orientation="h", y=-0.25),
        title=subtitle(
            "Sinusoidal encoding, one dimension at a time",
            "dots: the values a position gets; dotted: the underlying wave",
        ),
    )
    return fig


# ---- a model's (or any) position vectors ------------------------------------------------------------------
def learned_position_heatmap(model, max_positions: int = MAX_TOKENS) -> go.Figure:
    """The model's learned position embeddings wpe (block_size x C), first max_positions rows."""
    if model.config.pos_encoding != "learned":
        raise ValueError(
            f"this model's positions are {model.config.pos_encoding!r}, not learned; "
            "use sinusoidal_heatmap for the fixed encoding"
        )
    full = position_matrix(model)
    m = full[:max_positions]
    note = f"showing first {len(m)} of {len(full)} positions" if len(m) < len(full) else ""
    return _pe_heatmap(
        m,
        subtitle(
            f"Learned position embeddings (T={len(full)} × C={m.shape[1]})",
            "one row per position, added to the token embedding",
            note,
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
    fig = _pe_heatmap(
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
    heading = "How much do positions alone shape attention scores?"  # ~420 px in the title's font
    title = subtitle(
        heading if width >= 480 else heading.replace(" shape", "<br>shape"),
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


# ---- RoPE: angles that turn q and k ---------------------------------------------------------------------------
def _rope_name(rd: int, theta: float) -> str:
    return f"rd={rd}, θ={theta:g}"


def rope_angle_heatmap(source, T: int = 64, theta: float | None = None, value: str = "cos") -> go.Figure:
    """RoPE's rotation angle of every dimension pair at every position (T x rd/2): `value` "cos" draws
    cos(angle) (-1..1, comparable with the sinusoidal heatmap), "angle" the angle mod 2π on a cyclic scale.

    `source` is a rotary GPT, its GPTConfig, or a rotary dim (int) with `theta` (see `gptviz.positions`)."""
    if value not in ("cos", "angle"):
        raise ValueError(f"value must be 'cos' or 'angle', got {value!r}")
    rd, theta = rope_settings(source, theta)
    a = rope_angles(rd, T, theta)  # (T, rd/2)
    wrapped = np.mod(a, 2 * math.pi)
    lam = rope_wavelengths(rd, theta)
    custom = np.stack([wrapped, np.cos(a), np.broadcast_to(lam, a.shape)], axis=-1)  # (T, rd/2, 3)
    hover = (
        "position %{y}, pair %{x} (dims %{x} and %{x}+" + str(rd // 2) + "): angle %{customdata[0]:.2f} rad "
        "(mod 2π), cos %{customdata[1]:.3f}, a full turn every %{customdata[2]:.3g} positions<extra></extra>"
    )
    title = subtitle(
        f"RoPE rotation angles (T={T} × rd/2={rd // 2}, θ={theta:g})",
        "pair i (dims i and i + rd/2) of q and k turns by t / θ^(2i/rd) at position t",
        f"a full turn every {lam[0]:.1f} positions for pair 0, {lam[-1]:.3g} for the last",
    )
    if value == "cos":
        fig = _pe_heatmap(np.cos(a), title, "dimension pair i", "position (T)", 1.0)
        fig.update_traces(colorbar_title="cos")
    else:
        fig = _pe_heatmap(wrapped, title, "dimension pair i", "position (T)", 1.0)
        fig.update_traces(
            zmin=0,
            zmax=2 * math.pi,
            zmid=None,
            colorscale="Twilight",
            colorbar=dict(
                title="angle",
                tickvals=[0, math.pi / 2, math.pi, 3 * math.pi / 2, 2 * math.pi],
                ticktext=["0", "π/2", "π", "3π/2", "2π"],
            ),
        )
    fig.update_traces(customdata=custom, hovertemplate=hover)
    return fig


def rope_score_heatmap(source, T: int = 64, theta: float | None = None, width: int | None = None) -> go.Figure:
    """q·k / |x|² of the all-ones vector turned at query position i and key position j (T x T, keys up to the
    query): constant along each diagonal, so only the distance i - j matters. A square heatmap with its colour
    bar beside it, in a figure `width` px wide (default: as wide as they need)."""
    rd, theta = rope_settings(source, theta)
    z = rope_score_matrix(rd, T, theta)
    z[np.triu_indices(T, 1)] = np.nan  # keys after the query: masked, as in attention
    side, width = square_size(width, left=70)
    fig = _pe_heatmap(
        z,
        subtitle(
            f"RoPE: q·k of the same vector at every pair of positions ({_rope_name(rd, theta)})",
            "x = all ones, q = x turned at the query's position, k = x turned at the key's",
            "each diagonal is one colour: only the distance query − key matters",
            max_px=width - 24,
        ),
        "key position (Tk)",
        "query position (T)",
        1.0,
    )
    fig.update_traces(
        hoverongaps=False, colorbar_title="q·k / |x|²", hovertemplate="query %{y} → key %{x}: %{z:.3f}<extra></extra>"
    )
    add_masked_background(fig)
    fig.update_xaxes(constrain="domain")
    fig.update_yaxes(scaleanchor="x", constrain="domain")
    square_layout(fig, side, width, bottom=60, left=70)
    return fig


def rope_distance_scores(
    scores: RopeScores | list[RopeScores] | tuple[RopeScores, ...], log_x: bool = True, width: int | None = None
) -> go.Figure:
    """q·k of the same vector Δ positions apart, as a fraction of |x|² (1 at Δ = 0), one panel per `RopeScores`
    (`gptviz.positions.rope_relative_scores`; e.g. θ = 10000 beside θ = 100000): the all-ones vector, the
    random vectors' average, and the band where the middle 80 % of them lie. A marker shows where the ones
    vector first falls below one half. `log_x` spreads Δ = 1..D over decades (Δ = 0 is 1 by definition)."""
    records = [scores] if isinstance(scores, RopeScores) else list(scores)
    if not records:
        raise ValueError("give at least one RopeScores (gptviz.positions.rope_relative_scores)")
    n = len(records)
    fig = make_subplots(
        1,
        n,
        shared_yaxes=True,
        horizontal_spacing=0.06 if n > 1 else 0.0,
        subplot_titles=[_rope_name(r.rotary_dim, r.theta) for r in records],
    )
    blue, orange = TEMPLATE.layout.colorway[0], TEMPLATE.layout.colorway[1]
    low = 0.0
    for col, r in enumerate(records, start=1):
        keep = r.distance >= (1 if log_x else 0)
        d, ones, rnd = r.distance[keep], r.ones_fraction[keep], r.random_fraction[:, keep]
        p10, p90 = np.percentile(rnd, [10, 90], axis=0)
        low = min(low, float(p10.min()), float(ones.min()))
        first = col == 1
        fig.add_trace(
            go.Scatter(
                x=d, y=p90, mode="lines", line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup="band"
            ),
            1,
            col,
        )
        fig.add_trace(
            go.Scatter(
                x=d,
                y=p10,
                mode="lines",
                line=dict(width=0),
                fill="tonexty",
                fillcolor="rgba(230, 85, 13, 0.15)",
                hoverinfo="skip",
                legendgroup="band",
                name=f"middle 80 % of {len(r.random)} random vectors",
                showlegend=first,
            ),
            1,
            col,
        )
        fig.add_trace(
            go.Scatter(
                x=d,
                y=ones,
                mode="lines",
                line=dict(color=blue, width=2),
                name="all-ones vector",
                legendgroup="ones",
                showlegend=first,
                hovertemplate="Δ=%{x}: ones %{y:.3f}<extra></extra>",
            ),
            1,
            col,
        )
        fig.add_trace(
            go.Scatter(
                x=d,
                y=rnd.mean(0),
                mode="lines",
                line=dict(color=orange, width=1.5, dash="dot"),
                name="random vectors, average",
                legendgroup="mean",
                showlegend=first,
                hovertemplate="Δ=%{x}: average %{y:.3f}<extra></extra>",
            ),
            1,
            col,
        )
        half = r.first_below(0.5)
        if half is not None:
            y = float(r.ones_fraction[half])
            fig.add_trace(
                go.Scatter(
                    x=[half],
                    y=[y],
                    mode="markers",
                    showlegend=False,
                    marker=dict(color=blue, size=9, symbol="circle-open", line_width=2),
                    hovertemplate="first below ½: Δ=%{x}, %{y:.3f}<extra></extra>",
                ),
                1,
                col,
            )
            # a log axis places annotations in log10 units; the label sits above the curve, clear of its ripples
            fig.add_annotation(
                x=math.log10(half) if log_x else half,
                y=y,
                text=f"below ½ at Δ={half}",
                showarrow=True,
                arrowhead=0,
                arrowcolor=blue,
                ax=-30,
                ay=-95,
                font_color=blue,
                bgcolor="rgba(255,255,255,0.9)",
                row=1,
                col=col,
            )
        fig.add_hline(y=0, line=dict(color="#9aa0a6", width=1), row=1, col=col)
        fig.update_xaxes(
            type="log" if log_x else "linear",
            title_text="distance Δ = query − key (positions)",
            showgrid=True,
            row=1,
            col=col,
        )
    fig.update_yaxes(range=[low - 0.05, 1.05], row=1, col=1, title_text="q·k / |x|²")
    title = subtitle(
        "RoPE: q·k of the same vector Δ positions apart",
        "each pair adds |x_pair|²·cos(Δ·θ^(-2i/rd)): all in step at Δ=0, drifting apart as Δ grows",
        "decays on average, with ripples; any one vector wanders around the average",
        max_px=(width or WIDTH) - 24,
    )
    top = title_px(title) + 30  # and the subplot titles
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        height=top + 340 + 90,
        width=width,
        margin=dict(t=top, b=90),
        legend=dict(orientation="h", y=-0.2, x=0),
    )
    return fig


def rope_head_distance(scores: RopeHeadScores, width: int | None = None) -> go.Figure:
    """A real head's q·k/√hs of a token and the same token Δ positions back (`gptviz.positions.rope_head_scores`):
    one thin line per token, their average bold. Rising or falling with Δ says where the head looks by distance."""
    r = scores
    blue = TEMPLATE.layout.colorway[0]
    fig = go.Figure()
    for row, t in enumerate(r.token_ids):
        fig.add_trace(
            go.Scatter(
                x=r.distance,
                y=r.scores[row],
                mode="lines",
                line=dict(color="#b8bcc4", width=0.8),
                name=f"token {t}",
                showlegend=row == 0,
                legendgroup="tokens",
                hovertemplate=f"token {t}, Δ=%{{x}}: %{{y:.2f}}<extra></extra>",
            )
        )
    if r.scores.shape[0] > 1:
        fig.data[0].name = f"one token each ({len(r.token_ids)} tokens)"
    fig.add_trace(
        go.Scatter(
            x=r.distance,
            y=r.scores.mean(0),
            mode="lines",
            line=dict(color=blue, width=2.5),
            name="average over tokens",
            hovertemplate="Δ=%{x}: average %{y:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="distance Δ = query − key (positions)")
    fig.update_yaxes(title_text="q·k/√hs (logits)", zeroline=True, zerolinecolor="#9aa0a6")
    kv = f" (reads key/value head {r.kv_head})" if r.kv_head != r.head else ""
    title = subtitle(
        f"Layer {r.layer}, head {r.head}{kv}: score of a token for the same token Δ back",
        "the head's q of the token at position Δ against its k of the token at position 0, turned by the model's RoPE",
        "exact for layer 0, a probe for deeper layers",
        max_px=(width or WIDTH) - 24,
    )
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        height=title_px(title) + 30 + 360 + 90,
        width=width,
        margin=dict(t=title_px(title) + 30, b=90),
        legend=dict(orientation="h", y=-0.2, x=0),
    )
    return fig
