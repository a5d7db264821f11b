"""RoPE, drawn: the rotation angle of every dimension pair at every position, q·k of the same vector turned at two
positions (as a matrix, and against their distance Δ), and a real rotary head's q·k of a token Δ back.

RoPE adds no vector to the residual stream: it turns each pair of q's and k's dimensions by an angle that grows
with the position, so q·k depends only on how far apart two tokens are. The formula views need only the rotary
dim and theta (or a rotary model's config, `gptviz.positions.rope_settings`); the others draw the `RopeScores` /
`RopeHeadScores` records of `gptviz.positions`, which ran the model. Nothing here calls a model's layers.
The views of position vectors (sinusoidal, learned) are `positions`'; these are re-exported there too.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..positions import RopeHeadScores, RopeScores, rope_angles, rope_score_matrix, rope_settings, rope_wavelengths
from .style import (
    TEMPLATE,
    WIDTH,
    add_masked_background,
    signed_heatmap,
    square_layout,
    square_size,
    subtitle,
    title_on_top,
    title_px,
)


def _rope_name(rd: int, theta: float) -> str:
    return f"rd={rd}, θ={theta:g}"


def rope_angle_heatmap(
    source, T: int = 64, theta: float | None = None, value: str = "cos", width: int | None = None
) -> go.Figure:
    """RoPE's rotation angle of every dimension pair at every position (T x rd/2): `value` "cos" draws
    cos(angle) (-1..1, comparable with the sinusoidal heatmap), "angle" the angle mod 2π on a cyclic scale.

    `source` is a rotary GPT, its GPTConfig, or a rotary dim (int) with `theta` (see `gptviz.positions`).
    `width`: the px it will be shown in (the title wraps to it); the figure keeps no width of its own."""
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
        max_px=None if width is None else width - 24,
    )
    if value == "cos":
        fig = signed_heatmap(np.cos(a), title, "dimension pair i", "position (T)", 1.0)
        fig.update_traces(colorbar_title="cos")
    else:
        fig = signed_heatmap(wrapped, title, "dimension pair i", "position (T)", 1.0)
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
    fig = signed_heatmap(
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
        title=title_on_top(title),
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
        title=title_on_top(title),
        height=title_px(title) + 30 + 360 + 90,
        width=width,
        margin=dict(t=title_px(title) + 30, b=90),
        legend=dict(orientation="h", y=-0.2, x=0),
    )
    return fig
