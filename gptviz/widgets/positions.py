"""PositionalEncodingExplorer: how a GPT knows where each token sits.

Views (a toggle): the seed's sinusoidal encoding as a T x C heatmap; its columns as waves (a dimension
slider picks the sin/cos pair); the model's learned position embeddings; the cosine similarity of position
vectors; and, for a model, how much positions alone shape each head's attention scores
(`gptviz.positions.position_scores` defines it). Without a model only the sinusoidal views are offered.

The figures come from `plots` (at the panel's width, `FIGURE_WIDTH`); this panel holds the controls and swaps
the view in its one FigureWidget.
Position scores are computed once per (model, T) and cached, so moving the layer/head sliders is cheap.
"""

from __future__ import annotations

import ipywidgets as W

from .. import plots
from ..model import sinusoidal_encoding
from ..positions import position_scores
from ._base import FIGURE_WIDTH, Panel, replace_figure, slider

VIEWS = {"sinusoidal": "sinusoidal PE", "waves": "sine waves", "learned": "learned PE",
         "similarity": "similarity", "scores": "score contribution"}


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
        views = ["sinusoidal", "waves"] + (["learned"] if kind == "learned" else [])
        views += ["similarity"] + (["scores"] if kind in ("learned", "sinusoidal") else [])
        self.view = W.ToggleButtons(options=[(VIEWS[v], v) for v in views], value=views[0],
                                    style={"button_width": "130px"})
        self.T = slider("positions T", min(T, t_max), 2, t_max, width="320px")
        self.C = slider("width C", C, 2, 1024, step=2, width="320px", disabled=model is not None)
        self.dim = slider("dimension d", 0, 0, C - 2, step=2, width="320px")
        self.layer = slider("layer", 0, 0, model.config.n_layer - 1 if model is not None else 0, width="260px")
        self.head = slider("head", 0, 0, model.config.n_head - 1 if model is not None else 0, width="260px")
        self._scores = None  # (T, tensor (L, nh, T, T)) cached position scores
        about = ("Positions enter a GPT as vectors added to the token embeddings. Sinusoidal: a fixed formula, "
                 "a different wavelength per dimension pair. Learned: a trained table (GPT-2).")
        if model is not None and kind == "none":
            about += " This model has no position vectors: order reaches it only through the causal mask."
        super().__init__([self.view, W.HBox([self.T, self.C]), W.HBox([self.dim]),
                          W.HBox([self.layer, self.head])], self._build(), about)
        for w in (self.view, self.T, self.C, self.dim, self.layer, self.head):
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
            return plots.sinusoidal_heatmap(T, C)
        if v == "waves":
            d = min(self.dim.value, C - 2)
            return plots.sine_waves(T, C, (d, d + 1))
        if v == "learned":
            return plots.learned_position_heatmap(self.model, max_positions=min(T, plots.MAX_TOKENS))
        if v == "similarity":
            src = self._source()
            return plots.position_similarity(src if src is not None else sinusoidal_encoding(T, C), T,
                                             width=FIGURE_WIDTH)
        T = min(T, plots.MAX_TOKENS)  # L * nh * T^2 scores: keep them (and the heatmap) small
        if self._scores is None or self._scores[0] != T:
            self._scores = (T, position_scores(self.model, T))
        return plots.position_score_contribution(self._scores[1], self.layer.value, self.head.value,
                                                 width=FIGURE_WIDTH)

    def _refresh(self, change=None) -> None:
        if change is not None and change["owner"] is self.C:
            self.dim.max = self.C.value - 2
        self._show_controls()
        replace_figure(self.figure, self._build())

    def _show_controls(self) -> None:
        v = self.view.value
        shown = {self.C: v in ("sinusoidal", "waves") or (v == "similarity" and self._source() is None),
                 self.dim: v == "waves", self.layer: v == "scores", self.head: v == "scores"}
        for w, on in shown.items():
            w.layout.display = "" if on else "none"
        notes = {"sinusoidal": "PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(pos / 10000^(2i/C))",
                 "waves": f"dimensions {self.dim.value} (sin) and {self.dim.value + 1} (cos): same wavelength, "
                          "a quarter period apart",
                 "learned": "one trained vector per position; look for smooth stripes (nearby positions alike)",
                 "similarity": "cosine similarity of every pair of position vectors",
                 "scores": "position-only attention score of one head (left) and every head's spread (right)"}
        self.set_status(notes[v])
