"""Activation patching and head ablation, drawn: an (L, T) table over layers x positions, an (L, nh) over heads.

Reads the tensors `gptviz.patching` returns (`patch_resid`, `patch_heads`, `ablate_heads`) and returns Figures;
running the patched model is that module's job. Signed values on a diverging scale centred on 0 (white), layer 0
on top as in `head_metrics_heatmap`; every title says what 1 and 0 mean for the table it draws.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .style import DIVERGING_SCALE, TEMPLATE, WIDTH, as_numpy, short, subtitle, ticks, title_px

HEADS_PX = 640  # width of a layer x head figure with up to 16 heads

# what the colours of a normalised patching table mean (gptviz.patching.normalized_metric)
RESTORED_NOTE = "1 = patching restores the clean answer, 0 = no better than the corrupted run (white)"
RAW_NOTE = "colour = the metric after patching; white = 0"
SITE_LABELS = {
    "resid_pre": "the residual stream entering each layer (resid_pre)",
    "resid_mid": "the residual stream between attention and MLP (resid_mid)",
    "resid_post": "the residual stream leaving each layer (resid_post)",
    "attn_out": "what each layer's attention adds (attn_out)",
    "mlp_out": "what each layer's MLP adds (mlp_out)",
    "z": "one head's output (z)",
    "result": "one head's output (result)",
    "pattern": "one head's attention pattern",
}


def _table(values, dims: int, what: str) -> np.ndarray:
    z = as_numpy(values)
    if z.ndim != dims:
        raise ValueError(f"{what}; got shape {z.shape}")
    return z


def _range(z: np.ndarray, normalized: bool) -> float:
    """Half-width of a colour range centred on 0: at least 1 for a normalised table, so 1 is always full red."""
    top = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    return max(top, 1.0) if normalized else max(top, 1e-6)


def _heatmap(z: np.ndarray, half: float, label: str, hover: np.ndarray, show_text: bool) -> go.Heatmap:
    return go.Heatmap(
        z=z,
        zmid=0,
        zmin=-half,
        zmax=half,
        colorscale=DIVERGING_SCALE,
        colorbar=dict(thickness=12, title=label),
        customdata=hover,
        texttemplate="%{z:.2f}" if show_text else None,
        textfont=dict(size=10),
        hoverongaps=False,
        hovertemplate="%{customdata}<br>" + label + " %{z:.3f}<extra></extra>",
    )


def patching_heatmap(
    values, tokens: list[str] | None = None, site: str = "resid_pre", normalized: bool = True, title: str | None = None
) -> go.Figure:
    """The (L, T) table of `patch_resid`: one cell per (layer, position) patched, token strings along the bottom.

    `normalized`: the table went through `normalized_metric` (0 = corrupted, 1 = clean); False: raw metric values.
    """
    z = _table(values, 2, "patching_heatmap draws an (L, T) table, one value per layer and position")
    L, T = z.shape
    tokens = [str(t) for t in range(T)] if tokens is None else list(tokens)
    if len(tokens) != T:
        raise ValueError(f"{len(tokens)} token strings for a table of {T} positions; give one per position")
    hover = np.array(
        [[f"layer {l} · position {t} {short(tokens[t], 16)!r}" for t in range(T)] for l in range(L)], dtype=object
    )
    label = "restored" if normalized else "metric"
    fig = go.Figure(_heatmap(z, _range(z, normalized), label, hover, show_text=T <= 24 and L <= 16))
    if T <= 48:  # every position labelled: its token, and under it its number (inputs often repeat tokens)
        axis = dict(
            tickmode="array",
            tickvals=list(range(T)),
            ticktext=[f"{short(tok, 6)}<br>{t}" for t, tok in enumerate(tokens)],
            tickfont=dict(size=11 if T <= 32 else 9),
        )
    else:
        axis = ticks(tokens, 0, 64)
    fig.update_xaxes(title_text="position patched (T)", showgrid=False, **axis)
    fig.update_yaxes(title_text="layer (L)", dtick=1 if L <= 16 else None, autorange="reversed", showgrid=False)
    where = SITE_LABELS.get(site, site)
    fig.update_layout(
        template=TEMPLATE,
        height=max(300, 190 + 30 * L),
        title=subtitle(
            title or f"Activation patching: {where}, one layer and position at a time",
            RESTORED_NOTE if normalized else RAW_NOTE,
        ),
    )
    return fig


def head_patching_heatmap(
    values,
    site: str = "z",
    normalized: bool = True,
    title: str | None = None,
    note: str | None = None,
    label: str | None = None,
) -> go.Figure:
    """The (L, nh) table of `patch_heads`: one cell per head patched (at every position).

    `title`, `note` (the line that says what the colours mean) and `label` (the colour bar's) replace the
    patching ones; `head_ablation_heatmap` uses them.
    """
    z = _table(values, 2, "head_patching_heatmap draws an (L, nh) table, one value per layer and head")
    L, nh = z.shape
    hover = np.array([[f"layer {l}, head {h}" for h in range(nh)] for l in range(L)], dtype=object)
    label = label or ("restored" if normalized else "metric")
    fig = go.Figure(_heatmap(z, _range(z, normalized), label, hover, show_text=L * nh <= 144))
    fig.update_xaxes(title_text="head (nh)", dtick=1 if nh <= 16 else None, showgrid=False)
    fig.update_yaxes(title_text="layer (L)", dtick=1 if L <= 16 else None, autorange="reversed", showgrid=False)
    width = HEADS_PX if nh <= 16 else None  # a few heads: a compact figure; many: the page's width
    parts = [] if title else [f"{SITE_LABELS.get(site, site)} copied from the clean run, at every position"]
    text = subtitle(
        title or "Activation patching, one head at a time",
        *parts,
        note or (RESTORED_NOTE if normalized else RAW_NOTE),
        max_px=(width or WIDTH) - 40,
    )
    top = title_px(text) + 24  # the title's lines, then room before the heatmap
    fig.update_layout(template=TEMPLATE, height=top + 130 + 40 * L, width=width, margin=dict(t=top), title=text)
    return fig


def head_ablation_heatmap(values, kind: str = "zero", metric: str = "loss") -> go.Figure:
    """The (L, nh) table of `ablate_heads`: how much `metric` (default: the loss) changes without each head."""
    what = "set to zero" if kind == "zero" else "replaced by its mean" if kind == "mean" else kind
    return head_patching_heatmap(
        values,
        normalized=False,
        title=subtitle(
            "Head ablation: one head knocked out at a time", f"its output {what}; colour = change in {metric}"
        ),
        note=f"0 = the head does not matter here (white); red = the {metric} goes up without it",
        label=f"Δ {metric}" if len(metric) <= 6 else "change",
    )
