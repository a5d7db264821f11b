"""The lab's panels: thin ipywidgets containers, each with its controls and one plotly figure.

The figure is `_figure.PlotlyFigure`, a small anywidget of ours: the kernel holds a go.Figure and sends its JSON
(binary arrays, patches after the first draw); the browser draws it with the installed plotly.js and sends back
only clicks. (plotly's FigureWidget echoed whole figures back, 10+ MB messages that dropped the connection.)

    from gptviz.widgets import AttentionExplorer
    AttentionExplorer(model, tok, "The quick brown fox jumps over the lazy dog")   # last line of a cell

| panel | module | what it shows |
|---|---|---|
| `AttentionExplorer(model, tokenizer, text)` | `attention` | one head's map, all heads, one token's row/column |
| `PositionalEncodingExplorer(model=None, T, C)` | `positions` | sinusoidal / learned positions, similarity, scores |
| `GenerationExplorer(model, tokenizer, prompt)` | `generation` | step timeline, candidates per stage, forks |
| `TrainingDashboard(trainer)` | `training` | Start/Stop/Resume, loss curves, samples, snapshots |
| `LogitLensPanel(model, tokenizer, text)` | `logit_lens` | the top next token after every layer, or its rank |
| `AttributionPanel(model, tokenizer, prompt)` | `attribution` | which tokens made each generated token |
| `NeuronPanel(model, tokenizer, text, layer)` | `neurons` | a neuron over a text, its top contexts, NMF |
| `EmbeddingMapPanel(model, tokenizer)` | `embeddings` | token / position embeddings on their PCs |
| `FinetunePanel(gpt, tokenizer, train, test, ...)` | `finetune` | fine-tune in chunks, confusion, classify typed text |

Every panel is an `ipywidgets.VBox` (a cell displays it), shows callback errors in its red error line, and
has `export_html(path)`: its current view as a standalone offline page. Each panel is imported on first use.

Views that stand on their own come from `gptviz.plots` (a head's map, the heads grid, a step's candidates, loss
curves, the logit lens, the checkpoint diff). Each panel's own figure (those views side by side in one
figure widget, laid out in pixels, plus what only that panel shows: the explorer's focus and metric bars) is
drawn by a pure function, records in, Figure out: `gptviz.plots.explorer.explorer_figure`,
`gptviz.plots.generation.step_figure`, the fine-tuning panel's `gptviz.plots.finetune` figures, and the
training dashboard's `dashboard_figure` in its own module.
Every panel lays its figure out for the width the browser reports (`Panel.relayout`): titles wrap, and parts
side by side go one under the other in a narrow window. No figure runs
the model (the positional panel's only read its position table): the model runs in the record functions
(`records.record_forward`, `sampling`, `lens`, `positions.position_scores`, `finetune`), and the panels keep
what they return.
"""

from __future__ import annotations

import importlib

_PANELS = {
    "AttentionExplorer": "attention",
    "PositionalEncodingExplorer": "positions",
    "GenerationExplorer": "generation",
    "TrainingDashboard": "training",
    "LogitLensPanel": "logit_lens",
    "FinetunePanel": "finetune",
    "AttributionPanel": "attribution",
    "NeuronPanel": "neurons",
    "EmbeddingMapPanel": "embeddings",
}

__all__ = list(_PANELS)


def __getattr__(name: str):
    if name in _PANELS:
        return getattr(importlib.import_module(f".{_PANELS[name]}", __name__), name)
    raise AttributeError(f"module 'gptviz.widgets' has no attribute {name!r}")
