"""gptviz: a Jupyter-first lab for GPT language models.

    import gptviz
    model, tok = gptviz.load("lab/models/shakespeare-char")       # the lab's default model
    with gptviz.capture(model, "blocks.*.attn.hook_pattern") as cap:
        model(torch.tensor([tok.encode("ROMEO:")]))
    cap["blocks.0.attn.hook_pattern"]                                # (B, nh, T, T)

The core (model, hooks) is imported eagerly; everything else on first use, so `import gptviz` stays fast
and a notebook that only samples never imports plotly or the training loop.
"""

from __future__ import annotations

import importlib

from .hooks import CaptureBudgetError, HookNameError, HookPoint, capture, hooks, run_with_cache
from .model import GPT, GPTConfig, KVCache, default_device, sinusoidal_encoding

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily)
_LAZY = {
    "ForwardRecord": "records",
    "record_forward": "records",
    "ActivationCache": "cache",
    "act_name": "cache",
    "LogitLensRecord": "lens",
    "logit_lens_record": "lens",
    "position_scores": "positions",
    "head_metrics": "heads",
    "generate": "sampling",
    "generate_steps": "steps",
    "StepRecord": "steps",
    "Stage": "steps",
    "get_tokenizer": "tokenizers",
    "load_tokenizer": "tokenizers",
    "load_corpus": "data",
    "load": "pretrained",
    "GptvizError": "errors",
    "save": "checkpoint",
    "to_bertviz": "bertviz",
    "to_transformer_lens": "transformer_lens",
    "from_transformer_lens": "transformer_lens",
    "AttentionExplorer": "widgets",
    "PositionalEncodingExplorer": "widgets",
    "GenerationExplorer": "widgets",
    "TrainingDashboard": "widgets",
    "LogitLensPanel": "widgets",
    "FinetunePanel": "widgets",
    "AttributionPanel": "widgets",
    "NeuronPanel": "widgets",
    "EmbeddingMapPanel": "widgets",
    "attribute": "attribution",
    "attribution_record": "attribution",
    "AttributionRecord": "attribution",
    "neuron_record": "neurons",
    "top_activations": "neurons",
    "mlp_factors": "neurons",
    "default_model": "paths",
    "model_path": "paths",
    "preset_path": "paths",
}


def hook_names(model: GPT) -> list[str]:
    """Every hook point of `model`, in forward order."""
    return model.hook_names


# modules used as namespaces, e.g. gptviz.patching.patch_resid(...), gptviz.plots.attention_heatmap(...)
_SUBMODULES = (
    "attribution",
    "neurons",
    "patching",
    "plots",
    "heads",
    "hooks",
    "sampling",
    "steps",
    "tokenizers",
    "widgets",
    "bertviz",
    "hf",
)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gptviz' has no attribute {name!r}")


__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "HookPoint",
    "HookNameError",
    "CaptureBudgetError",
    "capture",
    "hooks",
    "run_with_cache",
    "hook_names",
    "default_device",
    "sinusoidal_encoding",
    *_LAZY,
]
