"""Hugging Face GPT-2 interop: load a `transformers` GPT-2 checkpoint into `gptviz.GPT`, and write one back.

The mapping is mechanical because gptviz keeps GPT-2's parameter names: strip `transformer.`, rename `h.` to
`blocks.`, and transpose the four Conv1D weights (HF stores them as (in, out); nn.Linear wants (out, in)).
This module knows nothing about tokenizers; `transformers` is imported only when these functions run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import GPT, GPTConfig

# HF Conv1D layers whose weight is stored transposed relative to nn.Linear.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_HF_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}


def config_from_hf(hf_config) -> GPTConfig:
    """GPTConfig for a `transformers.GPT2Config`; refuses variants gptviz does not implement."""
    act = _HF_ACTIVATIONS.get(hf_config.activation_function)
    unsupported = []
    if act is None:
        unsupported.append(f"activation_function={hf_config.activation_function!r} "
                           f"(supported: {sorted(_HF_ACTIVATIONS)})")
    if hf_config.n_inner not in (None, 4 * hf_config.n_embd):
        unsupported.append(f"n_inner={hf_config.n_inner} (gptviz uses 4 * n_embd)")
    for flag, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                     ("reorder_and_upcast_attn", False)):
        if getattr(hf_config, flag, ok) != ok:
            unsupported.append(f"{flag}={getattr(hf_config, flag)}")
    if unsupported:
        raise ValueError("this GPT-2 variant is not supported by gptviz: " + "; ".join(unsupported))
    return GPTConfig(vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions, n_layer=hf_config.n_layer,
                     n_head=hf_config.n_head, n_embd=hf_config.n_embd, dropout=hf_config.resid_pdrop,
                     bias=True, pos_encoding="learned", activation=act,
                     layer_norm_epsilon=hf_config.layer_norm_epsilon)


def state_dict_from_hf(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in hf_sd.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # old causal-mask buffers, not weights
            continue
        name = key.removeprefix("transformer.").replace("h.", "blocks.", 1) if key.startswith("transformer.h.") \
            else key.removeprefix("transformer.")
        if name.endswith(_CONV1D):
            value = value.t()
        out[name] = value.contiguous()
    return out


def state_dict_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in sd.items():
        if name.endswith(_CONV1D):
            value = value.t()
        key = name if name == "lm_head.weight" else "transformer." + name.replace("blocks.", "h.", 1)
        out[key] = value.contiguous()
    return out


def from_pretrained(name_or_dir: str | Path, **hf_kwargs) -> GPT:
    try:
        from transformers import GPT2LMHeadModel
    except ImportError as e:  # pragma: no cover - transformers is a dependency
        raise ImportError("GPT.from_pretrained needs `transformers`: pip install transformers") from e
    path = Path(name_or_dir)
    if str(name_or_dir).startswith((".", "/", "~")) and not path.exists():
        raise FileNotFoundError(f"no such folder: {path}; give a folder with config.json + model.safetensors "
                                "(from save_pretrained) or a hub id such as 'gpt2' when online")
    try:
        hf = GPT2LMHeadModel.from_pretrained(str(name_or_dir), **hf_kwargs)
    except OSError as e:
        raise OSError(f"could not load GPT-2 weights from {name_or_dir!r}: {e}\n"
                      "Offline, pass a local folder written by save_pretrained (config.json + "
                      "model.safetensors); hub ids like 'gpt2' need internet the first time.") from e
    config = config_from_hf(hf.config)
    model = GPT(config)
    sd = state_dict_from_hf(hf.state_dict())
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to wte
    if missing or unexpected:
        raise ValueError(f"weights do not match a GPT-2 layout: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(next(hf.parameters()).dtype).eval()


def save_pretrained(model: GPT, directory: str | Path, eos_token_id: int | None = None) -> Path:
    """Write config.json + model.safetensors in GPT-2's layout.

    Only GPT-2-shaped models can be written: learned positions, biases, MLP blocks. `eos_token_id` defaults to
    50256 for GPT-2's vocabulary and to none for small vocabularies (HF's default would point past them).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    problems = []
    if c.pos_encoding != "learned":
        problems.append(f"pos_encoding={c.pos_encoding!r} (GPT-2 has learned positions)")
    if not c.bias:
        problems.append("bias=False (GPT-2 has biases)")
    if not c.mlp:
        problems.append("mlp=False (GPT-2 blocks have an MLP)")
    if not c.layer_norm:
        problems.append("layer_norm=False (GPT-2 has LayerNorms)")
    if not c.tie_embeddings:
        problems.append("tie_embeddings=False (GPT-2's LM head is its token embedding)")
    if problems:
        raise ValueError("cannot save as a transformers GPT-2 model: " + "; ".join(problems)
                         + ". Use gptviz.checkpoint.save for any gptviz model.")
    if eos_token_id is None and c.vocab_size > 50256:
        eos_token_id = 50256
    hf_config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                           n_head=c.n_head, activation_function="gelu_new" if c.activation == "gelu" else "relu",
                           resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                           layer_norm_epsilon=c.layer_norm_epsilon, bos_token_id=eos_token_id,
                           eos_token_id=eos_token_id)
    hf = GPT2LMHeadModel(hf_config)
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state_dict_to_hf(sd), strict=False)
    missing = [m for m in missing if not m.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:  # pragma: no cover - would be a mapping bug
        raise RuntimeError(f"internal mapping error: missing {missing[:5]}, unexpected {unexpected[:5]}")
    directory = Path(directory)
    hf.save_pretrained(directory)
    return directory
