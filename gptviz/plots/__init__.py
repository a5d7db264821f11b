"""Pure plots: a record in, a new `plotly.graph_objects.Figure` out. Views never run the model; records do.

    from gptviz import plots
    record = gptviz.record_forward(model, tok, "ROMEO: But soft")
    plots.attention_heatmap(record, layer=0, head=1).show()

| module | draws | from |
|---|---|---|
| `style` | nothing: template, colour scales, token ticks, titles, windowing, pixel layout | — |
| `attention` | one head's map, all heads as thumbnails, what each head does | `records.ForwardRecord` |
| `positions` | sinusoidal PE, waves, learned PE, similarity, position-only scores | `positions` (see below) |
| `rope` | RoPE: angles per pair, q·k against distance, a rotary head's q·k | `positions`' RoPE records |
| `generation` | one step's candidates per sampling stage, where the new token looked | `steps.StepRecord` |
| `training` | train/val loss and learning rate | `train.Trainer.history` |
| `lens` | the logit lens, and each token's rank after every layer | `lens.LogitLensRecord` |
| `tokens` | tokens coloured by any scalar (loss, entropy, attribution, a neuron, ...) | token strings + values |
| `attribution` | one step's attribution as coloured tokens, every step as a matrix | `attribution.AttributionRecord` |
| `neurons` | a neuron over a text, its top corpus contexts, NMF factors | `neurons`' records |
| `embeddings` | token / position embeddings on their principal components | `embedding_map.EmbeddingMap` |
| `diff` | checkpoint diff, and `head_change`, its one definition | two `ForwardRecord`s of one prompt |
| `finetune` | a classifier's loss, accuracy and confusion; an LM's loss and head change; one text | `finetune`'s jobs |
| `patching` | activation patching (layers x positions, layers x heads), head ablation | `patching`'s tables |

The records come from `gptviz.records`, `gptviz.sampling`, `gptviz.lens` (the logit lens runs the model there)
and `gptviz.positions` (position scores from a model's layers). The only model a view takes is one whose position
table it draws (`learned_position_heatmap`, `position_similarity`): reading a weight table runs nothing.

Every public function returns a new Figure and changes nothing; the widgets show these figures and update the
few arrays that change with the same helpers (`add_*`, `attention_matrix`, `grid_image`, ...), so a panel and
its static export always agree. Every name is re-exported here: `plots.attention_heatmap(...)`. Nothing here
builds widgets, trains, samples or tokenizes; token strings come from the records.

The views a panel shows take `width`, the px the panel has: titles wrap to it (`style.subtitle(max_px=...)`) and,
when narrow, parts side by side go one under the other. A view laid out in pixels (a square heatmap beside its
colour bar) takes that width as its own; the others keep none and fill their container.
"""

from __future__ import annotations

from .attention import (
    GRID_MARGIN,
    GRID_THUMB,
    HEATMAP_BOTTOM_PX,
    METRIC_LABELS,
    add_attention,
    add_grid,
    attention_grid,
    attention_heatmap,
    attention_matrix,
    attention_title,
    grid_cells,
    grid_image,
    head_metrics_heatmap,
    metric_text,
    pair_text,
    prepare_attention,
    selected_head_shape,
)
from .attribution import attribution_matrix, attribution_tokens
from .diff import DIFF_HEADS_PX, DIFF_MARGIN, DIFF_PX, checkpoint_diff, head_change
from .embeddings import embedding_map_figure
from .finetune import classifier_figure, lm_figure, prediction_figure
from .generation import (
    STAGE_LABELS,
    add_attention_row,
    add_candidates,
    attention_row,
    row_title,
    row_values,
    step_candidates,
    step_title,
)
from .lens import logit_lens_figure, rank_figure
from .neurons import factor_tokens, factors_overview, neuron_tokens, top_activations_figure
from .patching import head_ablation_heatmap, head_patching_heatmap, patching_heatmap
from .positions import (
    SCORES_MARGIN,
    SCORES_SIDE_PX,
    learned_position_heatmap,
    position_score_contribution,
    position_similarity,
    rope_angle_heatmap,
    rope_distance_scores,
    rope_head_distance,
    rope_score_heatmap,
    sine_waves,
    sinusoidal_heatmap,
    wavelength,
)
from .style import (
    ATTENTION_SCALE,
    CHOSEN,
    COLOURBAR_PX,
    DIVERGING_SCALE,
    FILTERED,
    FONT,
    MASKED,
    MASKED_NOTE,
    MAX_TOKENS,
    METRIC_SCALE,
    SQUARE_PX,
    STAGE_COLOURS,
    SUB_CHAR_PX,
    TEMPLATE,
    WIDTH,
    add_masked_background,
    as_numpy,
    colourbar_beside,
    short,
    square_layout,
    square_size,
    subtitle,
    ticks,
    title_on_top,
    title_px,
    top_margin,
    window_note,
    window_start,
)
from .tokens import token_colours
from .training import add_loss_curves, loss_curves, loss_title

__all__ = [
    # style
    "FONT",
    "TEMPLATE",
    "MASKED_NOTE",
    "ATTENTION_SCALE",
    "METRIC_SCALE",
    "DIVERGING_SCALE",
    "STAGE_COLOURS",
    "FILTERED",
    "CHOSEN",
    "MASKED",
    "MAX_TOKENS",
    "WIDTH",
    "SQUARE_PX",
    "COLOURBAR_PX",
    "SUB_CHAR_PX",
    "as_numpy",
    "short",
    "ticks",
    "window_start",
    "window_note",
    "subtitle",
    "title_px",
    "title_on_top",
    "top_margin",
    "colourbar_beside",
    "square_size",
    "square_layout",
    "add_masked_background",
    # attention
    "GRID_THUMB",
    "METRIC_LABELS",
    "HEATMAP_BOTTOM_PX",
    "GRID_MARGIN",
    "prepare_attention",
    "attention_matrix",
    "pair_text",
    "attention_title",
    "add_attention",
    "attention_heatmap",
    "grid_cells",
    "grid_image",
    "metric_text",
    "add_grid",
    "selected_head_shape",
    "attention_grid",
    "head_metrics_heatmap",
    # positions
    "SCORES_MARGIN",
    "SCORES_SIDE_PX",
    "sinusoidal_heatmap",
    "wavelength",
    "sine_waves",
    "learned_position_heatmap",
    "position_similarity",
    "position_score_contribution",
    "rope_angle_heatmap",
    "rope_score_heatmap",
    "rope_distance_scores",
    "rope_head_distance",
    # generation
    "STAGE_LABELS",
    "step_title",
    "add_candidates",
    "step_candidates",
    "row_values",
    "row_title",
    "add_attention_row",
    "attention_row",
    # training
    "loss_title",
    "add_loss_curves",
    "loss_curves",
    # lens
    "logit_lens_figure",
    "rank_figure",
    # tokens, attribution, neurons, embeddings
    "token_colours",
    "attribution_tokens",
    "attribution_matrix",
    "neuron_tokens",
    "top_activations_figure",
    "factor_tokens",
    "factors_overview",
    "embedding_map_figure",
    # finetune
    "classifier_figure",
    "lm_figure",
    "prediction_figure",
    # diff
    "DIFF_MARGIN",
    "DIFF_HEADS_PX",
    "DIFF_PX",
    "head_change",
    "checkpoint_diff",
    # patching
    "patching_heatmap",
    "head_patching_heatmap",
    "head_ablation_heatmap",
]
