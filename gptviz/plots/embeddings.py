"""The embedding map, drawn: token or position vectors as points on their first principal components.

Reads a `gptviz.embedding_map.EmbeddingMap` and returns a Figure: `embedding_map_figure(emap, colour_by, dims)`,
2-D (PC1, PC2) or 3-D (PC1..PC3), hover for the token, coloured by a numeric property (a colour bar) or a
category (one trace per category, in the legend). Positions are joined in order by a thin line, so a smooth
path means nearby positions have nearby vectors. Axis titles say how much of the variance each component holds.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..embedding_map import EmbeddingMap
from .style import METRIC_SCALE, NARROW_PX, TEMPLATE, subtitle, title_on_top, top_margin

PALETTE = ["#2166ac", "#e6550d", "#31a354", "#756bb1", "#d6616b", "#636363", "#8c6d31", "#17becf"]


def _hover(emap: EmbeddingMap, colour_by: str) -> list[str]:
    values = emap.properties[colour_by]
    near = [emap.labels[j] for j in emap.nearest]
    out = []
    for i, label in enumerate(emap.labels):
        v = values[i]
        shown = v if isinstance(v, str) else f"{v:.3g}"
        out.append(f"{label!r} (id {emap.ids[i]})<br>{colour_by}: {shown}<br>nearest in all dims: {near[i]!r}")
    return out


def embedding_map_figure(
    emap: EmbeddingMap, colour_by: str | None = None, dims: int = 2, width: int | None = None
) -> go.Figure:
    """Scatter of the map's points in `dims` (2 or 3) principal components, coloured by `colour_by` (a name in
    `emap.properties`; default: class for tokens, position for positions). `width`: the px it will be shown in
    (a panel's): the title wraps to it, and under NARROW_PX the legend goes under the plot (which then keeps the
    whole width); the figure keeps no width of its own."""
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    colour_by = colour_by or ("class" if emap.kind == "tokens" else "position")
    if colour_by not in emap.properties:
        raise KeyError(f"no property {colour_by!r} to colour by; this map has {sorted(emap.properties)}")
    values = emap.properties[colour_by]
    p = emap.points
    hover = np.array(_hover(emap, colour_by), dtype=object)
    show_text = emap.kind == "tokens" and len(emap.labels) <= 200
    scatter = go.Scatter3d if dims == 3 else go.Scatter
    size = 4 if dims == 3 else (9 if show_text else 6)

    def coords(mask):
        c = dict(x=p[mask, 0], y=p[mask, 1])
        return c | dict(z=p[mask, 2]) if dims == 3 else c

    fig = go.Figure()
    if emap.kind == "positions":  # the path through positions in order
        fig.add_trace(
            scatter(
                **coords(np.ones(len(p), bool)),
                mode="lines",
                line=dict(color="#c7cbd3", width=1),
                hoverinfo="skip",
                showlegend=False,
            )
        )
    mode = "markers+text" if show_text else "markers"
    text = list(emap.labels)
    if values.dtype == object:  # categories: one trace each, in the legend
        for i, cat in enumerate(sorted(set(values.tolist()))):
            m = values == cat
            fig.add_trace(
                scatter(
                    **coords(m),
                    mode=mode,
                    name=f"{cat} ({int(m.sum())})",
                    text=np.array(text, dtype=object)[m],
                    textposition="top center",
                    textfont=dict(size=10),
                    customdata=hover[m],
                    hovertemplate="%{customdata}<extra></extra>",
                    marker=dict(size=size, color=PALETTE[i % len(PALETTE)], opacity=0.85),
                )
            )
    else:
        fig.add_trace(
            scatter(
                **coords(np.ones(len(p), bool)),
                mode=mode,
                text=text,
                textposition="top center",
                textfont=dict(size=10),
                customdata=hover,
                hovertemplate="%{customdata}<extra></extra>",
                showlegend=False,
                marker=dict(
                    size=size,
                    color=values.astype(float),
                    colorscale=METRIC_SCALE,
                    opacity=0.9,
                    colorbar=dict(thickness=12, title=colour_by),
                ),
            )
        )
    ev = emap.explained
    axis = [f"PC{i + 1} ({ev[i]:.0%} of variance)" for i in range(3)]
    what = "token embeddings (wte)" if emap.kind == "tokens" else "position vectors"
    title = subtitle(
        f"Embedding map: {len(p)} {what}, PCA to {dims}-D",
        f"the {dims} components hold {ev[:dims].sum():.0%} of the variance",
        f"colour = {colour_by}",
        emap.note,
        max_px=None if width is None else width - 24,
    )
    if dims == 3:
        fig.update_layout(scene=dict(xaxis_title=axis[0], yaxis_title=axis[1], zaxis_title=axis[2]))
    else:
        fig.update_xaxes(title_text=axis[0], zeroline=False)
        fig.update_yaxes(title_text=axis[1], zeroline=False)
    legend = dict(itemsizing="constant")
    if width is not None and width < NARROW_PX:
        legend.update(orientation="h", x=0, y=-0.14 if dims == 2 else 0, yanchor="top")
    top = top_margin(title)
    fig.update_layout(
        template=TEMPLATE, height=620 + top - 90, title=title_on_top(title), margin=dict(t=top), legend=legend
    )
    return fig
