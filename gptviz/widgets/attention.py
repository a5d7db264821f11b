"""AttentionExplorer: type a text, pick a layer and head, see where every token looks.

One figure (`plots.explorer.explorer_figure`): the chosen head's heatmap with its colour bar, the all-heads
grid (click a thumbnail to open that head; hover it for its metrics) above the chosen head's scores, and the
focus token's row ("where it looks") and column ("who looks at it") as bars; click a heatmap row or a bar to
focus that token. The figure is laid out in pixels to fill the panel (`plots.explorer.explorer_layout`); a deep
model's grid (SmolLM2: 30 layers x 9 heads) runs down the whole right side, so its thumbnails stay big enough to
read.
Changing the layer or head only replaces the arrays that change, so it stays fast (~10 ms server side for
12 x 12 heads, T = 128). Under grouped-query attention (SmolLM2: 3 key/value heads, each read by 3 query
heads) the grid marks which heads share a kv head, and the title, hovers, status and caption say it.

The model runs once per text (`records.record_forward`); everything else reads that record. Long texts are
cropped to what the capture budget allows and the heatmap shows a window; the status line says both.
"""

from __future__ import annotations

import math
import warnings

import ipywidgets as W

from .. import plots
from ..plots.attention import (
    attention_hover,
    gqa_note,
    kv_note,
    record_kv_groups,
)
from ..plots.explorer import (
    TRACES,
    explorer_figure,
    focus_shapes,
    focus_title,
    focus_values,
    metric_values,
    metrics_title,
)
from ..records import record_forward
from ._base import FIGURE_WIDTH, Panel, check_index, encode_for_panel, packed, replace_figure, row, slider

CAPTURE_BUDGET_BYTES = 256 * 2**20  # attention of every head for the text: L * nh * T^2 float32


class AttentionExplorer(Panel):
    """Attention heatmap + all-heads grid + one token's row/column, for a text typed into the panel."""

    title = "Attention explorer"

    def __init__(
        self,
        model,
        tokenizer,
        text: str = "The quick brown fox jumps over the lazy dog",
        layer: int = 0,
        head: int = 0,
        max_tokens: int = plots.MAX_TOKENS,
    ):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        self._quiet = False  # True while the panel sets its own controls (one figure update, not several)
        c = model.config
        layer = check_index("layer", layer, c.n_layer, "AttentionExplorer")
        head = check_index("head", head, c.n_head, "AttentionExplorer")
        # the longest text whose full attention (L, nh, T, T) fits the budget, within the model's context
        self.record_limit = min(c.block_size, int(math.sqrt(CAPTURE_BUDGET_BYTES / (4 * c.n_layer * c.n_head))))
        self.record = self._record(text)
        self.metrics = self.record.head_metrics()
        self.text = W.Textarea(
            value=text,
            description="text",
            continuous_update=False,
            rows=2,
            layout=W.Layout(width="95%"),
            style={"description_width": "initial"},
        )
        self.layer = slider("layer", layer, 0, c.n_layer - 1, width="260px")
        self.head = slider("head", head, 0, c.n_head - 1, width="260px")
        self.hide_first = W.Checkbox(
            value=False,
            description="hide first-token sink (renormalise rows)",
            indent=False,
            layout=W.Layout(width="320px"),
        )
        self.token = W.Dropdown(
            description="focus token", style={"description_width": "initial"}, layout=W.Layout(width="260px")
        )
        self.head_info = W.HTML()
        self._set_focus_options()
        fig = self._full_figure()
        caption = (
            "Each row is a query token; colour = how much it attends to each earlier token (rows sum to "
            "1). Click a thumbnail in the grid to open that head, a heatmap row or a bar to focus a token."
        )
        self.kv_groups = record_kv_groups(self.record)  # None unless the model uses grouped-query attention
        if self.kv_groups:
            caption += (
                f" Grouped-query attention: the query heads between two lines of the grid share one "
                f"key/value head (head h reads kv head h // {len(self.kv_groups[0])})."
            )
        super().__init__(
            [self.text, row(self.layer, self.head, self.hide_first), row(self.token, self.head_info)], fig, caption
        )
        self._wire()
        self._describe()

    # ---- model runs and figures ----------------------------------------------------------------------
    def _record(self, text: str):
        if not text.strip():
            raise ValueError("The text is empty: type a sentence (a few words) to see where its tokens look.")
        encode_for_panel(self.tokenizer, text)  # a student's message for characters the model cannot read
        with warnings.catch_warnings():  # cropping is reported in the status line instead
            warnings.simplefilter("ignore")
            return record_forward(self.model, self.tokenizer, text, max_tokens=self.record_limit)

    @property
    def start(self) -> int:
        return plots.window_start(self.record.T, self.max_tokens)

    def _full_figure(self):
        return explorer_figure(
            self.record,
            self.layer.value,
            self.head.value,
            self.token.value,
            self.hide_first.value,
            self.max_tokens,
            self.metrics,
            width=self.width if hasattr(self, "plot") else FIGURE_WIDTH,
        )

    def relayout(self) -> None:
        replace_figure(self.figure, self._full_figure())

    def _set_focus_options(self) -> None:
        toks = self.record.tokens
        self._quiet = True
        try:
            self.token.options = [(f"{i}: {plots.short(toks[i], 16)}", i) for i in range(self.start, len(toks))]
            self.token.value = len(toks) - 1
        finally:
            self._quiet = False

    def _wire(self) -> None:
        self.text.observe(self.guarded(self._on_text), names="value")
        for w in (self.layer, self.head):
            w.observe(self.guarded(self._on_head), names="value")
        self.hide_first.observe(self.guarded(self._on_hide), names="value")
        self.token.observe(self.guarded(self._on_focus), names="value")
        for callback, names in (
            (self._click_grid, ["heads"]),
            (self._click_query, ["attention"]),
            (self._click_bar, ["looks_at", "looked_at_by"]),
        ):
            self.plot.on_click(self.guarded(callback), traces=[TRACES.index(n) for n in names])

    def trace(self, name: str):
        """A trace of the figure by short name: attention, grid, frame, heads, looks_at, looked_at_by."""
        return self.figure.data[TRACES.index(name)]

    # ---- callbacks -----------------------------------------------------------------------------------
    def _on_text(self, change) -> None:
        record = self._record(change["new"])  # raises (shown in the panel) before anything changes
        self.record, self.metrics = record, record.head_metrics()
        self._set_focus_options()
        replace_figure(self.figure, self._full_figure())
        self._describe()

    def _on_head(self, change=None) -> None:
        if self._quiet:
            return
        l, h, hide = self.layer.value, self.head.value, self.hide_first.value
        matrix = plots.attention_matrix(self.record, l, h, hide)
        _, values, labels = metric_values(self.metrics, l, h)
        with self.figure.batch_update():
            self.trace("attention").update(
                z=packed(matrix[self.start :, self.start :]),
                hovertemplate=attention_hover(self.record, l, h, self.start),
            )
            self.figure.layout.title.text = plots.attention_title(
                self.record, l, h, hide, self.start, max_px=(self.figure.layout.width or FIGURE_WIDTH) - 40
            )
            self.trace("metrics").update(x=values, text=labels)
            self.figure.layout.xaxis3.title.text = metrics_title(l, h)
            self._update_focus(matrix)
        self._describe_head()

    def _update_focus(self, matrix) -> None:
        """Bars and outlines for the focus token; the selected-head outline is redrawn with them (3 shapes)."""
        f, start, T = self.token.value, self.start, self.record.T
        row, col = focus_values(matrix, f, start)
        self.trace("looks_at").y = row
        self.trace("looked_at_by").y = col
        self.figure.layout.shapes = [
            plots.selected_head_shape(self.layer.value, self.head.value, plots.grid_cells(T), "x2", "y2"),
            *focus_shapes(f, start, T),
            *self.figure.layout.shapes[3:],
        ]
        self.figure.layout.legend.title.text = focus_title(self.record.tokens, f)

    def _on_hide(self, change) -> None:
        image, _ = plots.grid_image(self.record, self.hide_first.value)
        with self.figure.batch_update():
            self.trace("grid").z = packed(image)
            self._on_head()

    def _on_focus(self, change) -> None:
        if self._quiet or change["new"] is None:
            return
        matrix = plots.attention_matrix(self.record, self.layer.value, self.head.value, self.hide_first.value)
        with self.figure.batch_update():
            self._update_focus(matrix)

    def _click_grid(self, trace, points, state) -> None:
        if not points.point_inds:
            return
        layer, head = (int(v) for v in trace.customdata[points.point_inds[0]])
        self.select(layer, head)

    def _click_query(self, trace, points, state) -> None:
        if points.ys:
            self.token.value = int(points.ys[0])

    def _click_bar(self, trace, points, state) -> None:
        if points.xs:
            self.token.value = int(points.xs[0])

    # ---- public --------------------------------------------------------------------------------------
    def select(self, layer: int, head: int) -> None:
        """Show one head (what a click on its thumbnail does); one figure update for both values."""
        layer = check_index("layer", layer, self.record.n_layer, "AttentionExplorer")
        head = check_index("head", head, self.record.n_head, "AttentionExplorer")
        self._quiet = True
        try:
            self.layer.value, self.head.value = layer, head
        finally:
            self._quiet = False
        self._on_head()

    def _describe_head(self) -> None:
        l, h = self.layer.value, self.head.value
        kv = f" · {kv_note(self.kv_groups, h)}" if self.kv_groups else ""
        self.head_info.value = (
            f"<span style='font-size:13px;color:#4a5160'>&nbsp; layer {l}, head {h}{kv}: "
            f"{plots.metric_text(self.metrics, l, h, ' · ')}</span>"
        )

    def _describe(self) -> None:
        r = self.record
        parts = [f"{r.T} tokens · L={r.n_layer} layers × nh={r.n_head} heads"]
        if self.kv_groups:
            parts.append(f"{gqa_note(self.kv_groups)} (lines in the grid)")
        if r.meta.get("cropped"):
            parts.append(f"input cropped: kept the last {r.T} tokens, {r.meta['cropped']} left out")
        if self.start:
            parts.append(f"heatmap shows the last {r.T - self.start} of {r.T} tokens")
        S = plots.grid_cells(r.T)
        if S < r.T:
            parts.append(f"grid thumbnails max-pool {r.T} tokens into {S} cells")
        self.set_status(" · ".join(parts))
        self._describe_head()
