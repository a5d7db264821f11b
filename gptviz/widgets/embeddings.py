"""EmbeddingMapPanel: where do tokens and positions sit in the model's embedding space?

The token embedding table (or the position table) projected on its first principal components
(`gptviz.embedding_map.embedding_map`), 2-D or 3-D, hover for the token and its nearest neighbour in all C
dimensions, coloured by a property (character class, frequency in a text, id; position, offset to the nearest
neighbour). Each table is mapped once; switching dimensions or colour only redraws.
"""

from __future__ import annotations

import ipywidgets as W

from .. import plots
from ..embedding_map import embedding_map, neighbour_summary
from ._base import Panel, replace_figure, row


class EmbeddingMapPanel(Panel):
    """Kind (tokens / positions) + 2-D / 3-D + colour: the embedding tables on their principal components."""

    title = "Embedding map"

    def __init__(self, model, tokenizer, kind: str = "tokens", dims: int = 2, text: str | None = None):
        """`text`: a sample to count tokens in (adds a `log count` colour); e.g. some of the training corpus."""
        self.model, self.tokenizer, self.text = model, tokenizer, text
        self._maps: dict[str, object] = {}
        kinds = [("token embeddings", "tokens")]
        if model.config.pos_encoding in ("learned", "sinusoidal"):
            kinds.append(("position vectors", "positions"))
        self.kind = W.ToggleButtons(options=kinds, value=kind, style={"button_width": "auto"})
        self.dims = W.ToggleButtons(options=[("2-D", 2), ("3-D", 3)], value=dims, style={"button_width": "auto"})
        self.colour = W.Dropdown(description="colour by", layout=W.Layout(width="260px"))
        self._colour_options()
        caption = (
            "Each point is one row of an embedding table, projected on the directions where the rows differ most "
            "(PCA). The axis titles say how much of the variance the picture keeps; the hover names each point's "
            "nearest neighbour in all dimensions."
        )
        super().__init__([row(self.kind, self.dims, self.colour)], self._figure(), caption)
        self.kind.observe(self.guarded(self._on_kind), names="value")
        for w in (self.dims, self.colour):
            w.observe(self.guarded(self._redraw), names="value")
        self._describe()

    @property
    def map(self):
        """The map of the current kind (made once)."""
        kind = self.kind.value
        if kind not in self._maps:
            self._maps[kind] = embedding_map(self.model, self.tokenizer, kind, text=self.text)
        return self._maps[kind]

    def _colour_options(self) -> None:
        self._switching = True  # the value follows the new options: one redraw, by _on_kind, not two
        try:
            self.colour.options = list(self.map.properties)
            self.colour.value = self.colour.options[0]
        finally:
            self._switching = False

    def _figure(self):
        return plots.embedding_map_figure(self.map, self.colour.value, self.dims.value, width=self.width)

    def relayout(self) -> None:
        replace_figure(self.figure, self._figure())  # the maps are kept: this only redraws

    def _on_kind(self, change=None) -> None:
        self._colour_options()
        self._redraw()

    def _redraw(self, change=None) -> None:
        if getattr(self, "_switching", False):
            return
        replace_figure(self.figure, self._figure())
        self._describe()

    def _describe(self) -> None:
        m = self.map
        ev = m.explained[: self.dims.value].sum()
        text = f"{len(m.labels)} points · {self.dims.value} components keep {ev:.0%} of the variance"
        if m.kind == "positions":
            s = neighbour_summary(m)
            text += f" · {s['adjacent']:.0%} of positions have the next or previous position as nearest neighbour"
        self.set_status(text + (f" · {m.note}" if m.note else ""))
