"""NeuronPanel: what does this MLP neuron fire on? A neuron over a text, its top contexts, NMF factors.

Pick a block and a neuron (default: the neuron of that block that fires hardest on the text). Views:
"over the text" colours the text by the neuron; "top contexts" shows where it fires hardest in a corpus sample
(`gptviz.neurons.top_activations`, computed once per block and neuron, when first shown); "NMF factors" factors
the block's MLP activations over the text into a few non-negative patterns, all of them or one coloured over the
text. The model runs once per text and block (`neuron_record`); the records come from `gptviz.neurons`.
"""

from __future__ import annotations

import ipywidgets as W

from .. import plots
from ..neurons import mlp_factors, neuron_record, top_activations
from ._base import Panel, replace_figure, row, slider

VIEWS = [("over the text", "text"), ("top contexts", "top"), ("NMF factors", "factors")]


class NeuronPanel(Panel):
    """Text + block + neuron + view: one MLP neuron, or the block's NMF factors."""

    title = "MLP neurons"

    def __init__(
        self,
        model,
        tokenizer,
        text: str = "ROMEO:\nBut soft, what light through yonder window breaks?",
        layer: int = 0,
        neuron: int | None = None,
        corpus: str | None = None,
        view: str = "text",
        n_factors: int = 6,
        corpus_tokens: int = 20_000,
    ):
        """`corpus`: the text the top contexts come from (e.g. a few thousand lines of Shakespeare); None: the
        panel's own text. `corpus_tokens`: how many of its tokens to read."""
        self.model, self.tokenizer = model, tokenizer
        self.corpus, self.corpus_tokens = corpus, corpus_tokens
        self._tops: dict[tuple[int, int], object] = {}
        self._factors = None
        L, n_inner = model.config.n_layer, model.config.mlp_width
        st = {"description_width": "initial"}
        self.text = W.Textarea(
            value=text, description="text", continuous_update=False, rows=2, layout=W.Layout(width="95%"), style=st
        )
        self.layer = slider("block", layer, 0, L - 1, width="260px")
        self.record = self._run(text, layer)
        first = self.record.strongest(layer, 1)[0][0] if neuron is None else neuron
        self.neuron = W.BoundedIntText(
            value=first, min=0, max=n_inner - 1, description="neuron", layout=W.Layout(width="170px"), style=st
        )
        self.strongest = W.Button(description="strongest here", tooltip="the neuron of this block that fires hardest")
        self.view = W.ToggleButtons(options=VIEWS, value=view, style={"button_width": "auto"})
        self.n_factors = slider("factors", n_factors, 2, 12, width="240px")
        self.factor = W.Dropdown(description="show", layout=W.Layout(width="200px"))
        self._factor_options()
        self.n_factors.disabled = self.factor.disabled = view != "factors"
        caption = (
            f"A neuron is one of the {n_inner} numbers a block's MLP computes per token (after its nonlinearity). "
            "Red: above 0, blue: below. NMF splits the whole block's activations into a few patterns that add up."
        )
        controls = [
            self.text,
            row(self.layer, self.neuron, self.strongest),
            row(self.view, self.n_factors, self.factor),
        ]
        super().__init__(controls, self._figure(), caption)
        self.text.observe(self.guarded(self._rerun), names="value")
        self.layer.observe(self.guarded(self._rerun), names="value")
        self.n_factors.observe(self.guarded(self._refactor), names="value")
        for w in (self.neuron, self.view, self.factor):
            w.observe(self.guarded(self._redraw), names="value")
        self.strongest.on_click(self.guarded(self._pick_strongest))
        self._describe()

    # ---- records -----------------------------------------------------------------------------------------
    def _run(self, text: str, layer: int):
        if not text:
            raise ValueError("the text is empty; type at least one character")
        self._factors = None
        return neuron_record(self.model, self.tokenizer, text, layer)

    def factors(self):
        """The NMF factors of the current block over the text (made when first needed)."""
        if self._factors is None:
            self._factors = mlp_factors(
                self.model, self.tokenizer, None, self.layer.value, self.n_factors.value, record=self.record
            )
        return self._factors

    def top(self):
        """The current neuron's top contexts in the corpus sample (made once per block and neuron)."""
        key = (self.layer.value, self.neuron.value)
        if key not in self._tops:
            source = self.corpus if self.corpus else self.text.value
            self._tops[key] = top_activations(
                self.model, self.tokenizer, source, key[0], key[1], max_tokens=self.corpus_tokens
            )
        return self._tops[key]

    # ---- drawing -----------------------------------------------------------------------------------------
    def _factor_options(self) -> None:
        options = [("all factors", -1)] + [(f"factor {f}", f) for f in range(self.n_factors.value)]
        keep = self.factor.value if self.factor.value is not None and self.factor.value < self.n_factors.value else -1
        self.factor.options = options
        self.factor.value = keep  # the old factor while it exists, else "all factors"

    def _figure(self):
        view = self.view.value
        if view == "top":
            return plots.top_activations_figure(self.top(), width=self.width)
        if view == "factors":
            return (
                plots.factors_overview(self.factors(), width=self.width)
                if self.factor.value in (None, -1)
                else plots.factor_tokens(self.factors(), self.factor.value, width=self.width)
            )
        return plots.neuron_tokens(self.record, self.layer.value, self.neuron.value, width=self.width)

    def relayout(self) -> None:
        replace_figure(self.figure, self._figure())  # the records are kept: this only redraws

    def _rerun(self, change=None) -> None:
        self.record = self._run(self.text.value, self.layer.value)
        self._redraw()

    def _refactor(self, change=None) -> None:
        self._factors = None
        self._factor_options()
        self._redraw()

    def _pick_strongest(self, button=None) -> None:
        self.neuron.value = self.record.strongest(self.layer.value, 1)[0][0]  # redraws through its observer

    def _redraw(self, change=None) -> None:
        self.n_factors.disabled = self.factor.disabled = self.view.value != "factors"
        replace_figure(self.figure, self._figure())
        self._describe()

    def _describe(self) -> None:
        layer = self.layer.value
        top3 = ", ".join(f"N{n} ({v:.1f})" for n, v in self.record.strongest(layer, 3))
        where = "the corpus sample" if self.corpus else "the text itself (no corpus given)"
        extra = f" · top contexts from {where}" if self.view.value == "top" else ""
        self.set_status(f"{len(self.record.tokens)} tokens · block {layer}: strongest here {top3}{extra}")
