"""PositionalEncodingExplorer: how a GPT knows where each token sits.

Views (a toggle): the seed's sinusoidal encoding as a T x C heatmap; its columns as waves (a dimension
slider picks the sin/cos pair); the model's learned position embeddings; the cosine similarity of position
vectors; for a model with position vectors, how much positions alone shape each head's attention scores
(`gptviz.positions.position_scores` defines it); and RoPE, which adds no vector but turns q and k: its angle
per dimension pair, q·k of the same vector against distance (rotary dim and theta on sliders, or a rotary
model's own), and, for a rotary model, one head's q·k of a token against the same token Δ back
(`gptviz.positions.rope_head_scores`). Without a model the formula views (sinusoidal and RoPE) are offered.

The figures come from `plots` (at the panel's width, `Panel.width`, laid out again when it changes); this panel
holds the controls and swaps the view in its one figure widget.
Position scores are computed once per (model, T) and cached, so moving the layer/head sliders is cheap.
"""

from __future__ import annotations

import ipywidgets as W
import numpy as np

from .. import plots
from ..model import sinusoidal_encoding
from ..positions import position_matrix, position_scores, rope_head_scores, rope_relative_scores
from ._base import Panel, replace_figure, row, slider

VIEWS = {
    "sinusoidal": "sinusoidal PE",
    "waves": "sine waves",
    "learned": "learned PE",
    "similarity": "similarity",
    "scores": "score contribution",
    "rotary": "RoPE angles",
    "rotary_scores": "RoPE q·k vs Δ",
    "rotary_head": "head q·k vs Δ",
}
ROTARY_VIEWS = ("rotary", "rotary_scores", "rotary_head")


class PositionalEncodingExplorer(Panel):
    """Sinusoidal formula, learned embeddings, their similarity, and their share in attention scores."""

    title = "Positional encoding explorer"

    def __init__(self, model=None, T: int = 64, C: int | None = None):
        self.model = model
        kind = model.config.pos_encoding if model is not None else None
        if model is not None and C is not None and C != model.config.n_embd:
            raise ValueError(f"C={C} differs from the model's n_embd={model.config.n_embd}; leave C out")
        C = model.config.n_embd if model is not None else (C or 128)
        if C % 2:
            raise ValueError(f"the sinusoidal encoding needs an even C, got {C}")
        t_max = model.config.block_size if model is not None else 512
        if isinstance(T, bool) or not isinstance(T, int) or not 2 <= T <= t_max:
            raise ValueError(
                f"PositionalEncodingExplorer: T={T!r} positions cannot be shown; pick T from 2 to {t_max} "
                + ("(the model's block size)" if model is not None else "")
            )
        views = ["sinusoidal", "waves"] + (["learned"] if kind == "learned" else []) + ["rotary", "rotary_scores"]
        views += ["similarity"] + (["scores"] if kind in ("learned", "sinusoidal") else [])
        views += ["rotary_head"] if kind == "rotary" else []
        self.view = W.ToggleButtons(
            options=[(VIEWS[v], v) for v in views],
            value="rotary" if kind == "rotary" else views[0],
            style={"button_width": "auto"},  # each label whole ("score contribution"); the row wraps
            layout=W.Layout(flex_flow="row wrap", width="100%"),
        )
        self.T = slider("positions T", T, 2, t_max, width="320px")
        fixed = model is not None  # the model's own width: shown, not changeable, and the label says why
        self.C = slider(
            "width C = the model's n_embd (fixed)" if fixed else "width C", C, 2, 1024, step=2, disabled=fixed
        )
        self.C.layout.width = "420px" if fixed else "320px"
        self.dim = slider("dimension d", 0, 0, C - 2, step=2, width="320px")
        self.layer = slider("layer", 0, 0, model.config.n_layer - 1 if model is not None else 0, width="260px")
        self.head = slider("head", 0, 0, model.config.n_head - 1 if model is not None else 0, width="260px")
        # RoPE: a rotary model's own settings (fixed), else Llama's head (rd=64, θ=10000) to play with
        rotary = kind == "rotary"
        rd, theta = (model.config.rotary_size, model.config.rope_theta) if rotary else (64, 10000.0)
        self.rd = slider("rotary dim rd", rd, 2, max(256, rd), step=2, width="320px", disabled=rotary)
        self.theta = W.FloatLogSlider(
            value=theta,
            base=10,
            min=2,
            max=6.5,
            step=0.05,
            description="theta θ",
            readout_format=".3g",
            continuous_update=False,
            disabled=rotary,
            style={"description_width": "initial"},
            layout=W.Layout(width="320px"),
        )
        self.distance = slider(
            "max distance Δ", min(1024, t_max - 1) if rotary else 1024, 16, 16384, step=16, width="320px"
        )
        self.log_x = W.Checkbox(value=True, description="log Δ axis", indent=False, layout=W.Layout(width="120px"))
        self._scores = None  # (T, tensor (L, nh, T, T)) cached position scores
        self._head = None  # ((layer, head, D), RopeHeadScores) cached head scores of a rotary model
        about = (
            "Positions enter a GPT as vectors added to the token embeddings. Sinusoidal: a fixed formula, "
            "a different wavelength per dimension pair. Learned: a trained table (GPT-2). Rotary (RoPE: "
            "Llama, SmolLM2): no vector is added; each pair of q's and k's dims is turned by an angle that "
            "grows with the position, so q·k depends only on how far apart two tokens are."
        )
        if model is not None and kind == "none":
            about += " This model has no position vectors: order reaches it only through the causal mask."
        if rotary:
            about += (
                f" This model uses RoPE: it turns {rd} of each head's {model.config.head_size} dims with "
                f"θ={theta:g} (the rotary views show its own settings)."
            )
        super().__init__(
            [
                self.view,
                row(self.T, self.C),
                row(self.dim),
                row(self.rd, self.theta),
                row(self.distance, self.log_x),
                row(self.layer, self.head),
            ],
            self._build(),
            about,
        )
        for w in (
            self.view,
            self.T,
            self.C,
            self.dim,
            self.layer,
            self.head,
            self.rd,
            self.theta,
            self.distance,
            self.log_x,
        ):
            w.observe(self.guarded(self._refresh), names="value")
        self._show_controls()

    # ---- figures -------------------------------------------------------------------------------------
    def _source(self):
        """The model when it has position vectors, else None (the sinusoidal formula with this T, C)."""
        ok = self.model is not None and self.model.config.pos_encoding in ("learned", "sinusoidal")
        return self.model if ok else None

    def _build(self):
        v, T, C = self.view.value, self.T.value, self.C.value
        if v == "sinusoidal":
            return plots.sinusoidal_heatmap(T, C, width=self.width)
        if v == "waves":
            d = min(self.dim.value, C - 2)
            return plots.sine_waves(T, C, (d, d + 1), width=self.width)
        if v == "learned":
            return plots.learned_position_heatmap(self.model, max_positions=min(T, plots.MAX_TOKENS), width=self.width)
        if v == "similarity":
            src = self._source()
            return plots.position_similarity(src if src is not None else sinusoidal_encoding(T, C), T, width=self.width)
        if v in ROTARY_VIEWS:
            return self._build_rotary(v, T)
        T = min(T, plots.MAX_TOKENS)  # L * nh * T^2 scores: keep them (and the heatmap) small
        if self._scores is None or self._scores[0] != T:
            self._scores = (T, position_scores(self.model, T))
        return plots.position_score_contribution(self._scores[1], self.layer.value, self.head.value, width=self.width)

    def _rope(self):
        """What the RoPE formula views draw: the rotary model itself (its own rd and θ), else (rd, θ) from the
        sliders, as (source, theta) for `gptviz.positions`' rope functions."""
        if self.model is not None and self.model.config.pos_encoding == "rotary":
            return self.model, None
        return self.rd.value, self.theta.value

    def _build_rotary(self, v: str, T: int):
        source, theta = self._rope()
        if v == "rotary":
            return plots.rope_angle_heatmap(source, T, theta, width=self.width)
        if v == "rotary_scores":
            return plots.rope_distance_scores(
                rope_relative_scores(source, self.distance.value, theta), log_x=self.log_x.value, width=self.width
            )
        key = (self.layer.value, self.head.value, self.distance.value)
        if self._head is None or self._head[0] != key:
            self._head = (key, rope_head_scores(self.model, self.distance.value, self.layer.value, self.head.value))
        return plots.rope_head_distance(self._head[1], width=self.width)

    def relayout(self) -> None:
        replace_figure(self.figure, self._build())

    def _refresh(self, change=None) -> None:
        if change is not None and change["owner"] is self.C:
            self.dim.max = self.C.value - 2
        self._show_controls()
        replace_figure(self.figure, self._build())

    def _show_controls(self) -> None:
        v = self.view.value
        shown = {
            self.C: v in ("sinusoidal", "waves") or (v == "similarity" and self._source() is None),
            self.dim: v == "waves",
            self.layer: v in ("scores", "rotary_head"),
            self.head: v in ("scores", "rotary_head"),
            self.T: v not in ("rotary_scores", "rotary_head"),
            self.rd: v in ("rotary", "rotary_scores"),
            self.theta: v in ("rotary", "rotary_scores"),
            self.distance: v in ("rotary_scores", "rotary_head"),
            self.log_x: v == "rotary_scores",
        }
        for w, on in shown.items():
            w.layout.display = "" if on else "none"
        notes = {
            "sinusoidal": "PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(pos / 10000^(2i/C))",
            "waves": f"dimensions {self.dim.value} (sin) and {self.dim.value + 1} (cos): same wavelength, "
            "a quarter period apart",
            "learned": learned_note(self.model) if v == "learned" else "",
            "similarity": "cosine similarity of every pair of position vectors",
            "scores": "position-only attention score of one head, and every head's spread (beside it, or under it "
            "in a narrow window)",
            "rotary": "pair i (dims i and i + rd/2) of q and k turns by t / θ^(2i/rd) at position t: the "
            "first pairs spin fast (nearby positions differ), the last ones barely move",
            "rotary_head": "the head's q·k/√hs of a token for the same token Δ back, for 32 tokens spread "
            "over the vocabulary (max distance cropped to the block size)",
        }
        if v == "rotary_scores":
            source, theta = self._rope()
            half = rope_relative_scores(source, self.distance.value, theta, n_random=1).first_below(0.5)
            notes[v] = (
                "q·k of the same vector Δ apart, as a fraction of |x|²: the all-ones vector first falls "
                + (f"below ½ at Δ={half}" if half is not None else "not below ½ within this distance")
                + (
                    "; raise θ and it decays more slowly"
                    if theta is not None
                    else f" with this model's θ={self.theta.value:g}"
                )
            )
        self.set_status(notes[v])


def learned_note(model, far: int = 32) -> str:
    """What the learned table shows, measured: how alike neighbouring positions' vectors are (cosine), against
    positions `far` or more apart; and what that means to look for in the heatmap."""
    m = position_matrix(model)  # (T, C)
    unit = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T  # (T, T)
    T = len(m)
    near = float(np.mean([sim[i, i + 1] for i in range(T - 1)]))
    apart = [sim[i, j] for i in range(0, T, 4) for j in range(i + far, T, 4)]
    far_mean = float(np.mean(apart)) if apart else float("nan")
    measured = (
        f"one trained vector per position: neighbours' vectors have cosine similarity {near:.2f} on average, "
        f"positions {far}+ apart {far_mean:.2f}"
    )
    if not apart or near - far_mean < 0.1:
        return measured + (
            " · neighbours are hardly more alike than distant positions, so the heatmap looks like noise: "
            "this small model learned little about position (the similarity view shows the same)"
        )
    return measured + (
        " · so down a column the colour drifts slowly from row to row while across a row it jumps from dimension "
        "to dimension; the similarity view shows it as a band along the diagonal"
    )
