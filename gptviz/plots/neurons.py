"""MLP neurons, drawn: a neuron over a text, a neuron's strongest contexts in a corpus, NMF factors.

Reads the records of `gptviz.neurons` and returns Figures (the model ran there):
`neuron_tokens(rec, layer, neuron)` colours the text by one neuron; `top_activations_figure(top)` shows each of
the neuron's top contexts as a row of coloured tokens, the firing token in the middle column (CircuitsVis's
top-k view); `factor_tokens(fac, k)` colours the text by one NMF factor and `factors_overview(fac)` shows all
factors over the text at once (rows = factors), with the neurons each factor leans on in its hover.

Every function takes `width`, the px its figure will be shown in (a panel's): titles wrap and cells or labels
thin out to fit; the figure keeps no width of its own (it fills its container).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..neurons import FactorRecord, NeuronRecord, TopActivations
from .style import METRIC_SCALE, TEMPLATE, as_numpy, colourbar_title, short, subtitle, ticks, title_on_top, top_margin
from .tokens import colour_range, token_cells, token_colours


def neuron_label(layer: int, neuron: int, hook: str = "post") -> str:
    return f"L{layer} N{neuron}" + ("" if hook == "post" else " (pre)")


CONTEXT_CELL_PX = 18  # the narrowest cell of a top-contexts row: narrower windows show fewer tokens around it


def _room(width: int | None) -> float | None:
    return None if width is None else width - 24


def neuron_tokens(
    rec: NeuronRecord,
    layer: int,
    neuron: int,
    zrange: tuple[float, float] | None = None,
    width: int | None = None,
) -> go.Figure:
    """The text coloured by one neuron's activation (red above 0, blue below)."""
    v = as_numpy(rec.neuron(layer, neuron))
    peak = int(np.argmax(v))
    where = "after the nonlinearity" if rec.hook == "post" else "before the nonlinearity"
    return token_colours(
        rec.tokens,
        v,
        title=f"Neuron {neuron} of block {layer}'s MLP over the text",
        label=neuron_label(layer, neuron, rec.hook),
        notes=(where, f"largest {v.max():.2f} at {rec.tokens[peak]!r} (position {peak})", f"mean {v.mean():.2f}"),
        highlight={peak: "the neuron's largest value in this text"},
        zrange=zrange,
        width=width,
    )


def top_activations_figure(top: TopActivations, width: int | None = None) -> go.Figure:
    """One row per top example (strongest on top): its context tokens, coloured by the neuron, aligned so the
    firing token is the middle column. In a narrow `width` fewer tokens around it are shown (cells stay
    CONTEXT_CELL_PX wide at least)."""
    if not top.examples:
        raise ValueError("no examples to draw; the corpus sample was empty")
    left = max(e.focus for e in top.examples)
    right = max(len(e.tokens) - e.focus for e in top.examples)
    n = len(top.examples)
    z = np.full((n, left + right), np.nan)
    text = np.full((n, left + right), "", dtype=object)
    hover = np.full((n, left + right), "", dtype=object)
    for r, e in enumerate(top.examples):
        for i, (t, v) in enumerate(zip(e.tokens, e.values)):
            c = left - e.focus + i
            z[r, c], text[r, c] = v, short(t, 6)
            hover[r, c] = f"example {r + 1} (corpus position {e.position - e.focus + i})<br>{t!r}: {v:.3f}"
    colours = colour_range(z)  # of every value, so the colours do not depend on the width
    if width is not None:  # the cells that fit beside the labels and the colour bar, centred on the firing one
        keep = max(7, int((width - 190) / CONTEXT_CELL_PX))
        before = min(left, keep // 2)
        after = min(right - 1, keep - before - 1)
        z, text, hover = (a[:, left - before : left + after + 1] for a in (z, text, hover))
        left = before
    colorbar = dict(thickness=12, title=neuron_label(top.layer, top.neuron, top.hook))
    fig = go.Figure(token_cells(z, text, hover, colours, colorbar, font_size=11))
    fig.add_shape(type="rect", x0=left - 0.5, x1=left + 0.5, y0=-0.5, y1=n - 0.5, line=dict(color="#e6550d", width=2))
    likes = ", ".join(f"{t!r} {m:.2f}" for t, m, _ in top.token_means[:5])
    fig.update_xaxes(
        title_text="tokens around the firing token (outlined)",
        tickmode="array",
        tickvals=[left],
        ticktext=["firing token"],
        showgrid=False,
    )
    fig.update_yaxes(
        autorange="reversed",
        tickmode="array",
        tickvals=list(range(n)),
        ticktext=[f"{e.value:.2f}" for e in top.examples],
        title_text="activation",
        showgrid=False,
    )
    title = subtitle(
        f"Where neuron {top.neuron} of block {top.layer} fires most: top {n} of {top.n_tokens:,} corpus tokens",
        f"mean {top.mean:.2f}, max {top.max:.2f}",
        f"highest mean by token: {likes}",
        max_px=_room(width),
    )
    top_px = top_margin(title)
    fig.update_layout(
        template=TEMPLATE, height=170 + 24 * n + top_px - 90, title=title_on_top(title), margin=dict(t=top_px)
    )
    return fig


def factor_tokens(fac: FactorRecord, factor: int, width: int | None = None) -> go.Figure:
    """The text coloured by how much NMF factor `factor` is on at each token."""
    if not 0 <= factor < fac.weights.shape[1]:
        raise IndexError(f"factor {factor} does not exist: the factors are 0..{fac.weights.shape[1] - 1}")
    w = as_numpy(fac.weights[:, factor])
    leans = ", ".join(f"L{l} N{n}" for l, n, _ in fac.top_neurons(factor, 3))
    return token_colours(
        fac.tokens,
        w,
        title=f"NMF factor {factor} of {fac.weights.shape[1]} over the text",
        label=f"factor {factor}",
        notes=(f"layers {_layers(fac.layers)}", f"its strongest neurons: {leans}", _fit_note(fac)),
        signed=False,
        width=width,
    )


def factors_overview(fac: FactorRecord, width: int | None = None) -> go.Figure:
    """All factors (rows) over the text (columns), each row scaled to its own maximum."""
    w = as_numpy(fac.weights).T  # (k, T)
    k, T = w.shape
    scaled = w / w.max(1, keepdims=True).clip(1e-12)
    leans = [", ".join(f"L{l} N{n}" for l, n, _ in fac.top_neurons(f, 3)) for f in range(k)]
    hover = np.array(
        [
            [f"factor {f} at {j} {fac.tokens[j]!r}: {w[f, j]:.3f}<br>neurons: {leans[f]}" for j in range(T)]
            for f in range(k)
        ],
        dtype=object,
    )
    fig = go.Figure(
        go.Heatmap(
            z=scaled,
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale=METRIC_SCALE,
            zmin=0,
            zmax=1,
            colorbar=dict(thickness=12, title=colourbar_title("share of row max", width)),
        )
    )
    axis_px = None if width is None else width - 200  # the factor labels, the colour bar
    fig.update_xaxes(
        title_text="position (T)",
        showgrid=False,
        **ticks(fac.tokens, 0, 80 if axis_px is None else max(8, axis_px // 9), length_px=axis_px),
    )
    fig.update_yaxes(
        autorange="reversed", tickmode="array", tickvals=list(range(k)), ticktext=[f"factor {f}" for f in range(k)]
    )
    title = subtitle(
        f"{k} NMF factors of the MLP activations over the text",
        f"layers {_layers(fac.layers)}",
        _fit_note(fac),
        max_px=_room(width),
    )
    top = top_margin(title)
    fig.update_layout(template=TEMPLATE, height=200 + 28 * k + top - 90, title=title_on_top(title), margin=dict(t=top))
    return fig


def _layers(layers: list[int]) -> str:
    return (
        f"{layers[0]}-{layers[-1]}"
        if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1))
        else (", ".join(map(str, layers)))
    )


def _fit_note(fac: FactorRecord) -> str:
    return f"the factors explain {fac.explained:.0%} of the (clipped) activations; {fac.clipped:.0%} was below 0"
