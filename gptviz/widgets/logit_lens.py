"""LogitLensPanel: what would the model predict if it stopped after each layer?

Every block's output (and the embeddings) goes through the final LayerNorm and the LM head
(`gptviz.lens.logit_lens_record`, one forward pass per text); the heatmap shows the top next token per layer and
position. Colour: the top token's probability, or the probability of the token that really comes next; or the
rank view (ecco's rankings): the rank of the true next token after every layer, 1 = the layer's top guess. Give
it a prompt plus its generation and the columns past the prompt are the generation's steps.
The model runs when the text changes; switching the colour or the window only redraws.
"""

from __future__ import annotations

import ipywidgets as W

from .. import plots
from ..lens import logit_lens_record
from ._base import Panel, replace_figure, row, slider


class LogitLensPanel(Panel):
    """Text box + colour mode (probabilities or ranks) + window: the logit lens of a model on a text."""

    title = "Logit lens"

    def __init__(
        self,
        model,
        tokenizer,
        text: str = "The quick brown fox jumps over the lazy dog",
        max_positions: int = 32,
        record=None,
        colour: str = "top",
    ):
        """`record`: a `gptviz.lens.logit_lens_record` of `text` already made (the panel then runs nothing)."""
        self.model, self.tokenizer = model, tokenizer
        self.lens = self._run(text) if record is None else record
        st = {"description_width": "initial"}
        self.text = W.Textarea(
            value=text, description="text", continuous_update=False, rows=2, layout=W.Layout(width="95%"), style=st
        )
        self.colour = W.ToggleButtons(
            options=[
                ("top token's probability", "top"),
                ("true next token's probability", "next"),
                ("true next token's rank", "rank"),
            ],
            value=colour,
            style={"button_width": "auto"},
        )
        self.positions = slider("positions shown", max_positions, 4, 64, width="320px")
        caption = (
            "Rows: the residual stream after the embeddings and after each block, read out through ln_f "
            "and the LM head. Text in a cell: the top next token there; the last row is the model's "
            "real prediction."
        )
        super().__init__([self.text, row(self.colour, self.positions)], self._figure(), caption)
        self.text.observe(self.guarded(self._on_text), names="value")
        for w in (self.colour, self.positions):
            w.observe(self.guarded(self._redraw), names="value")
        self._describe()

    def _run(self, text: str):
        if not text:
            raise ValueError("the text is empty; type at least one character")
        return logit_lens_record(self.model, self.tokenizer, self.tokenizer.encode(text))

    def _figure(self):
        if self.colour.value == "rank":
            return plots.rank_figure(self.lens, self.positions.value, width=self.width)
        return plots.logit_lens_figure(self.lens, self.colour.value, self.positions.value, width=self.width)

    def relayout(self) -> None:
        replace_figure(self.figure, self._figure())  # the lens record is kept: this only redraws

    def _on_text(self, change) -> None:
        self.lens = self._run(change["new"])
        self._redraw()
        self._describe()

    def _redraw(self, change=None) -> None:
        replace_figure(self.figure, self._figure())
        self._describe()

    def _describe(self) -> None:
        T = len(self.lens.tokens)
        start = plots.window_start(T, self.positions.value)
        self.set_status(
            f"{T} tokens · {len(self.lens.layers)} read-outs (embed + L={len(self.lens.layers) - 1} "
            "blocks)" + (f" · showing the last {T - start} positions" if start else "")
        )
