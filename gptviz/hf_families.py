"""How each transformers family maps onto gptviz's GPT: GPT-2, Llama, Qwen2 and GPT-NeoX, in both directions.

Each family is three small translations: its config to a GPTConfig (refusing what gptviz does not implement,
by name), its parameter names to gptviz's GPT-2 names (`wte`, `blocks.i.attn.c_attn`, `mlp.c_fc`, `ln_f`...),
and back. The only reshuffles: GPT-2's Conv1D weights are stored (in, out) and are transposed; Llama/Qwen2's
separate q/k/v (and gate/up) projections are stacked into one matmul; GPT-NeoX interleaves q, k, v per head.

Pure translations of configs and state dicts already in memory: reading and writing model folders (and turning
transformers' and safetensors' errors into gptviz's) is `gptviz.hf`'s, which re-exports everything here. This
module never imports `gptviz.model` and knows nothing about tokenizers; `transformers` is imported only when a
function that needs it runs.
"""

from __future__ import annotations

import torch

from .config import GPTConfig
from .errors import UnsupportedModelError

FAMILIES = ("gpt2", "llama", "qwen2", "gpt_neox")
# GPT-2's Conv1D layers store their weight transposed relative to nn.Linear.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# transformers' GPT-2 activation_function -> gptviz activation ("gelu" is the erf form, gelu_new / gelu_fast /
# gelu_pytorch_tanh the tanh approximation written three ways, equal within float rounding)
_GPT2_ACTIVATIONS = {
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_fast": "gelu",
    "gelu": "gelu_exact",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_GPT2_ACTIVATION_NAMES = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "silu": "silu"}  # and back
_NEOX_ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}


def _refuse(what: str, problems: list[str]) -> None:
    if problems:
        raise UnsupportedModelError(
            f"this {what} is not supported by gptviz: "
            + "; ".join(problems)
            + ". gptviz refuses rather than approximating it."
        )


# ---- configs ---------------------------------------------------------------------------------------------
def _rope(hf_config) -> tuple[float, float, dict, list[str]]:
    """(theta, partial rotary factor, GPTConfig's rope scaling fields, problems) from a transformers 5
    `rope_parameters` or the older fields. Plain, linear and Llama 3 RoPE are gptviz's; other scalings are refused."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", getattr(hf_config, "rotary_emb_base", 10000.0)))
    factor = params.get(
        "partial_rotary_factor", getattr(hf_config, "partial_rotary_factor", getattr(hf_config, "rotary_pct", 1.0))
    )
    knobs = {**scaling, **params}
    fields, problems = {}, []
    needs = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor")}
    if rope_type == "llama3":
        knobs.setdefault(
            "original_max_position_embeddings", getattr(hf_config, "original_max_position_embeddings", None)
        )
        needs["llama3"] += ("original_max_position_embeddings",)
    missing = [k for k in needs.get(rope_type, ()) if knobs.get(k) is None]
    if missing:
        problems.append(f"rope scaling {rope_type!r} without {', '.join(missing)}")
    elif rope_type == "linear":
        fields = {"rope_scaling": "linear", "rope_factor": float(knobs["factor"])}
    elif rope_type == "llama3":
        fields = {
            "rope_scaling": "llama3",
            "rope_factor": float(knobs["factor"]),
            "rope_low_freq_factor": float(knobs["low_freq_factor"]),
            "rope_high_freq_factor": float(knobs["high_freq_factor"]),
            "rope_original_max_positions": int(knobs["original_max_position_embeddings"]),
        }
    elif rope_type != "default":
        problems.append(f"rope scaling type {rope_type!r} (gptviz has plain, linear and llama3 RoPE)")
    return float(theta), float(factor), fields, problems


def _rotary_dim(head_size: int, factor: float) -> int | None:
    rd = int(head_size * factor)
    return None if rd == head_size else rd


def config_from_hf(hf_config) -> GPTConfig:
    """GPTConfig for a transformers config of a supported family; refuses what gptviz does not implement."""
    family = getattr(hf_config, "model_type", None)
    if family not in FAMILIES:
        raise UnsupportedModelError(
            f"model_type {family!r} is not supported by gptviz; supported: "
            f"{', '.join(FAMILIES)} (GPT-2, Llama/SmolLM2, Qwen2, GPT-NeoX/Pythia)"
        )
    return {"gpt2": _gpt2_config, "llama": _llama_config, "qwen2": _llama_config, "gpt_neox": _neox_config}[family](
        hf_config
    )


def _gpt2_config(c) -> GPTConfig:
    act = _GPT2_ACTIVATIONS.get(c.activation_function)
    problems = []
    if act is None:
        problems.append(f"activation_function={c.activation_function!r} (supported: {sorted(_GPT2_ACTIVATIONS)})")
    for flag, ok in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("reorder_and_upcast_attn", False),
    ):
        if getattr(c, flag, ok) != ok:
            problems.append(f"{flag}={getattr(c, flag)}")
    _refuse("GPT-2 variant", problems)
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.n_positions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=c.resid_pdrop,
        bias=True,
        pos_encoding="learned",
        activation=act,
        n_inner=None if c.n_inner in (None, 4 * c.n_embd) else c.n_inner,
        layer_norm_epsilon=c.layer_norm_epsilon,
        tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)),  # GPT2Config ties by default; False is allowed
    )


def _llama_config(c) -> GPTConfig:
    """Llama and Qwen2 (Qwen2 is Llama with q/k/v biases and optional sliding windows)."""
    theta, factor, scaling, problems = _rope(c)
    if c.hidden_act != "silu":
        problems.append(f"hidden_act={c.hidden_act!r} (gptviz's gated MLP uses silu)")
    qwen = c.model_type == "qwen2"
    if qwen and (
        getattr(c, "use_sliding_window", False) or "sliding_attention" in (getattr(c, "layer_types", None) or [])
    ):
        problems.append("sliding-window attention (use_sliding_window=True)")
    if getattr(c, "attn_logit_softcapping", None) or getattr(c, "final_logit_softcapping", None):
        problems.append("logit soft-capping")
    _refuse(f"{c.model_type} model", problems)
    n_head = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // n_head
    attn_bias = True if qwen else bool(getattr(c, "attention_bias", False))
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=n_head,
        n_embd=c.hidden_size,
        n_kv_head=c.num_key_value_heads or n_head,
        head_dim=None if head_dim * n_head == c.hidden_size else head_dim,
        n_inner=c.intermediate_size,
        dropout=float(getattr(c, "attention_dropout", 0.0) or 0.0),
        bias=False,
        norm="rmsnorm",
        layer_norm_epsilon=c.rms_norm_eps,
        pos_encoding="rotary",
        rope_theta=theta,
        **scaling,
        rotary_dim=_rotary_dim(head_dim, factor),
        activation="silu",
        mlp_gated=True,
        qkv_bias=attn_bias,
        attn_out_bias=False if qwen else attn_bias,
        mlp_bias=bool(getattr(c, "mlp_bias", False)),
        tie_embeddings=bool(c.tie_word_embeddings),
    )


def _neox_config(c) -> GPTConfig:
    theta, factor, scaling, problems = _rope(c)
    act = _NEOX_ACTIVATIONS.get(c.hidden_act)
    if act is None:
        problems.append(f"hidden_act={c.hidden_act!r} (supported: {sorted(_NEOX_ACTIVATIONS)})")
    _refuse("GPT-NeoX model", problems)
    head_dim = c.hidden_size // c.num_attention_heads
    attn_bias = bool(getattr(c, "attention_bias", True))
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_embd=c.hidden_size,
        n_inner=c.intermediate_size,
        dropout=float(getattr(c, "hidden_dropout", 0.0) or 0.0),
        bias=True,
        norm="layernorm",
        layer_norm_epsilon=c.layer_norm_eps,
        pos_encoding="rotary",
        rope_theta=theta,
        **scaling,
        rotary_dim=_rotary_dim(head_dim, factor),
        activation=act,
        qkv_bias=attn_bias,
        attn_out_bias=attn_bias,
        mlp_bias=True,
        parallel_residual=bool(c.use_parallel_residual),
        tie_embeddings=bool(c.tie_word_embeddings),
    )


def family_of(config: GPTConfig) -> str:
    """The transformers family that can hold this config, or UnsupportedModelError saying what does not fit."""
    c = config
    if c.pos_encoding == "learned" and c.norm == "layernorm" and not c.mlp_gated:
        problems = [
            p
            for bad, p in (
                (
                    not c.bias or c.qkv_bias is False or c.attn_out_bias is False or c.mlp_bias is False,
                    "a part without biases (GPT-2 has biases everywhere)",
                ),
                (not c.mlp, "mlp=False (GPT-2 blocks have an MLP)"),
                (not c.layer_norm, "layer_norm=False (GPT-2 has LayerNorms)"),
                (c.kv_heads != c.n_head, "grouped-query attention"),
                (c.head_dim is not None, "head_dim set apart"),
                (c.parallel_residual, "parallel_residual=True"),
            )
            if bad
        ]
        _refuse("model as a transformers GPT-2", problems)
        return "gpt2"
    if (
        c.pos_encoding == "rotary"
        and c.norm == "rmsnorm"
        and c.mlp_gated
        and c.activation == "silu"
        and c.layer_norm
        and not c.parallel_residual
    ):
        return "qwen2" if c.has_bias("qkv") and not c.has_bias("attn_out") and not c.has_bias("mlp") else "llama"
    if (
        c.pos_encoding == "rotary"
        and c.norm == "layernorm"
        and not c.mlp_gated
        and c.bias
        and c.has_bias("mlp")
        and c.layer_norm
        and c.mlp
        and c.kv_heads == c.n_head
        and c.head_dim is None
        and c.has_bias("qkv") == c.has_bias("attn_out")
        and c.activation in ("gelu", "gelu_exact", "relu")
    ):
        return "gpt_neox"
    raise UnsupportedModelError(
        f"no transformers family holds this combination (pos_encoding={c.pos_encoding!r}, norm={c.norm!r}, "
        f"mlp_gated={c.mlp_gated}, activation={c.activation!r}, parallel_residual={c.parallel_residual}). "
        "GPT-2: learned positions + layernorm; Llama/Qwen2: rotary + rmsnorm + gated silu; GPT-NeoX: rotary + "
        "layernorm with biases. Use gptviz.checkpoint.save for any gptviz model."
    )


def hf_config_for(config: GPTConfig, eos_token_id: int | None = None, bos_token_id: int | None = None):
    """The transformers config (GPT2Config, LlamaConfig, Qwen2Config or GPTNeoXConfig) of a gptviz config."""
    import transformers

    c, family = config, family_of(config)
    if family == "gpt2":
        if eos_token_id is None and c.vocab_size > 50256:
            eos_token_id = 50256
        return transformers.GPT2Config(
            vocab_size=c.vocab_size,
            n_positions=c.block_size,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
            activation_function=_GPT2_ACTIVATION_NAMES[c.activation],
            n_inner=None if c.mlp_width == 4 * c.n_embd else c.mlp_width,
            tie_word_embeddings=c.tie_embeddings,
            resid_pdrop=c.dropout,
            embd_pdrop=c.dropout,
            attn_pdrop=c.dropout,
            layer_norm_epsilon=c.layer_norm_epsilon,
            bos_token_id=eos_token_id if bos_token_id is None else bos_token_id,
            eos_token_id=eos_token_id,
        )
    rope = {"rope_type": "default", "rope_theta": float(c.rope_theta)}
    if c.rope_scaling == "linear":
        rope.update(rope_type="linear", factor=c.rope_factor)
    elif c.rope_scaling == "llama3":
        rope.update(
            rope_type="llama3",
            factor=c.rope_factor,
            low_freq_factor=c.rope_low_freq_factor,
            high_freq_factor=c.rope_high_freq_factor,
            original_max_position_embeddings=c.rope_original_max_positions,
        )
    if c.rotary_size != c.head_size:
        rope["partial_rotary_factor"] = c.rotary_size / c.head_size
    common = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        intermediate_size=c.mlp_width,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        max_position_embeddings=c.block_size,
        tie_word_embeddings=c.tie_embeddings,
        rope_parameters=rope,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=None,
    )
    if family == "gpt_neox":
        act = {"gelu_exact": "gelu", "gelu": "gelu_pytorch_tanh", "relu": "relu"}[c.activation]
        return transformers.GPTNeoXConfig(
            **common,
            hidden_act=act,
            layer_norm_eps=c.layer_norm_epsilon,
            use_parallel_residual=c.parallel_residual,
            attention_bias=c.has_bias("qkv"),
            hidden_dropout=c.dropout,
            attention_dropout=c.dropout,
        )
    gqa = dict(
        num_key_value_heads=c.kv_heads,
        head_dim=c.head_size,
        rms_norm_eps=c.layer_norm_epsilon,
        hidden_act="silu",
        attention_dropout=c.dropout,
    )
    if family == "qwen2":
        return transformers.Qwen2Config(**common, **gqa, use_sliding_window=False)
    return transformers.LlamaConfig(**common, **gqa, attention_bias=c.has_bias("qkv"), mlp_bias=c.has_bias("mlp"))


# ---- weights -------------------------------------------------------------------------------------------
_LLAMA_NAMES = {
    "input_layernorm": "ln_1",
    "post_attention_layernorm": "ln_2",
    "self_attn.o_proj": "attn.c_proj",
    "mlp.down_proj": "mlp.c_proj",
}
_NEOX_NAMES = {
    "input_layernorm": "ln_1",
    "post_attention_layernorm": "ln_2",
    "attention.dense": "attn.c_proj",
    "attention.query_key_value": "attn.c_attn",
    "mlp.dense_h_to_4h": "mlp.c_fc",
    "mlp.dense_4h_to_h": "mlp.c_proj",
}
SKIP_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")


def state_dict_from_hf(
    hf_sd: dict[str, torch.Tensor], config: GPTConfig | None = None, family: str = "gpt2"
) -> dict[str, torch.Tensor]:
    """transformers parameter names and layouts -> gptviz's (GPT-2 by default; other families need `config`)."""
    if family == "gpt2":
        out = {}
        for key, value in hf_sd.items():
            if key.endswith(SKIP_SUFFIXES):  # old causal-mask buffers, not weights
                continue
            name = key.removeprefix("transformer.")
            name = name.replace("h.", "blocks.", 1) if name.startswith("h.") else name
            out[name] = (value.t() if name.endswith(_CONV1D) else value).contiguous()
        return out
    if config is None:
        raise ValueError(f"state_dict_from_hf needs the GPTConfig for family {family!r}")
    prefix, names, top = (
        ("gpt_neox.", _NEOX_NAMES, {"embed_in.weight": "wte.weight", "final_layer_norm": "ln_f"})
        if family == "gpt_neox"
        else ("model.", _LLAMA_NAMES, {"embed_tokens.weight": "wte.weight", "norm": "ln_f"})
    )
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, torch.Tensor] = {}  # q/k/v and gate/up pieces, stacked below
    for key, value in hf_sd.items():
        if key.endswith(SKIP_SUFFIXES):
            continue
        if key in ("lm_head.weight", "embed_out.weight"):  # NeoX's head is embed_out before transformers 5
            out["lm_head.weight"] = value
            continue
        name = key.removeprefix(prefix)
        if name.startswith("layers."):
            _, i, rest = name.split(".", 2)
            part, leaf = rest.rsplit(".", 1)
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
                pending[f"{i}.{part}.{leaf}"] = value
                continue
            if part not in names:
                raise ValueError(f"unexpected parameter {key!r} for family {family!r}")
            value = _neox_qkv_from_hf(value, config) if part == "attention.query_key_value" else value
            out[f"blocks.{i}.{names[part]}.{leaf}"] = value
        else:
            base, _, leaf = name.rpartition(".")
            mapped = top.get(name) or (f"{top[base]}.{leaf}" if base in top else None)
            if mapped is None:
                raise ValueError(f"unexpected parameter {key!r} for family {family!r}")
            out[mapped] = value
    for i in range(config.n_layer):
        for leaf in ("weight", "bias"):
            qkv = [pending.pop(f"{i}.self_attn.{p}_proj.{leaf}", None) for p in "qkv"]
            if all(t is not None for t in qkv):
                out[f"blocks.{i}.attn.c_attn.{leaf}"] = torch.cat(qkv)  # ((nh + 2 nkv) hs, C)
            gate_up = [pending.pop(f"{i}.mlp.{p}_proj.{leaf}", None) for p in ("gate", "up")]
            if all(t is not None for t in gate_up):
                out[f"blocks.{i}.mlp.c_fc.{leaf}"] = torch.cat(gate_up)  # (2 n_inner, C)
    if pending:
        raise ValueError(f"incomplete q/k/v or gate/up parameters: {sorted(pending)[:4]}")
    return {k: v.contiguous() for k, v in out.items()}


def _neox_qkv_from_hf(w: torch.Tensor, c: GPTConfig) -> torch.Tensor:
    """GPT-NeoX stores [q_h, k_h, v_h] per head; gptviz stores all q, then all k, then all v."""
    rest = w.shape[1:]
    return w.view(c.n_head, 3, c.head_size, *rest).transpose(0, 1).reshape(3 * c.n_head * c.head_size, *rest)


def _neox_qkv_to_hf(w: torch.Tensor, c: GPTConfig) -> torch.Tensor:
    rest = w.shape[1:]
    return w.view(3, c.n_head, c.head_size, *rest).transpose(0, 1).reshape(3 * c.n_head * c.head_size, *rest)


def state_dict_to_hf(
    sd: dict[str, torch.Tensor], config: GPTConfig | None = None, family: str = "gpt2"
) -> dict[str, torch.Tensor]:
    """gptviz parameter names -> the family's transformers names and layouts (inverse of state_dict_from_hf)."""
    out = {}
    if family == "gpt2":
        for name, value in sd.items():
            key = name if name == "lm_head.weight" else "transformer." + name.replace("blocks.", "h.", 1)
            out[key] = (value.t() if name.endswith(_CONV1D) else value).contiguous()
        return out
    if config is None:
        raise ValueError(f"state_dict_to_hf needs the GPTConfig for family {family!r}")
    neox = family == "gpt_neox"
    prefix = "gpt_neox." if neox else "model."
    back = {v: k for k, v in (_NEOX_NAMES if neox else _LLAMA_NAMES).items()}
    q, kv = config.n_head * config.head_size, config.kv_heads * config.head_size
    for name, value in sd.items():
        if name == "wte.weight":
            out[prefix + ("embed_in.weight" if neox else "embed_tokens.weight")] = value
        elif name == "lm_head.weight":
            out["lm_head.weight"] = value  # GPT-NeoX's embed_out, renamed lm_head in transformers 5
        elif name.startswith("ln_f."):
            out[prefix + ("final_layer_norm." if neox else "norm.") + name.split(".", 1)[1]] = value
        else:
            _, i, rest = name.split(".", 2)
            part, leaf = rest.rsplit(".", 1)
            layer = f"{prefix}layers.{i}."
            if part == "attn.c_attn" and not neox:
                for p, piece in zip("qkv", value.split((q, kv, kv))):
                    out[f"{layer}self_attn.{p}_proj.{leaf}"] = piece
            elif part == "mlp.c_fc" and not neox:
                gate, up = value.chunk(2)
                out[f"{layer}mlp.gate_proj.{leaf}"], out[f"{layer}mlp.up_proj.{leaf}"] = gate, up
            else:
                value = _neox_qkv_to_hf(value, config) if neox and part == "attn.c_attn" else value
                out[f"{layer}{back[part]}.{leaf}"] = value
    return {k: v.contiguous() for k, v in out.items()}
