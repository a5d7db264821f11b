"""Move a model between gptviz and TransformerLens: `to_transformer_lens(model)`, `from_transformer_lens(tl_model)`.

The HookedTransformer gets the same function and the same weights, loaded without TransformerLens's weight
processing (no fold_ln, no centring of writing weights or the unembed, no folding of value biases), so every
activation the two name alike agrees 1:1: `gptviz.capture(model, "*")` and `tl_model.run_with_cache(ids)`.
Differences that stay: TransformerLens holds an untied copy of a tied LM head; a sinusoidal table becomes
TransformerLens's (learnable) W_pos; its `unembed.hook_in` / `unembed.hook_out` are gptviz's ln_f output (no
hook) / `hook_logits`.

What one side cannot hold is refused by name, never approximated: a gated MLP with biases before its product
(TransformerLens adds b_in after it), interleaved ("GPT-J") rotary pairs, attention softcaps, QK norms, ...
TransformerLens 3.x is needed (4.x removed HookedTransformer): `pip install 'gptviz[bench]'`. The weights travel
through `gptviz.weights`' views; this module knows nothing about hooks, tokenizers or analysis.
"""

from __future__ import annotations

import math
import warnings

import torch

from .config import TL_ACT_FN, GPTConfig
from .hf import UnsupportedModelError, family_of
from .model import GPT, sinusoidal_encoding
from .weights import AttentionWeights, MLPWeights

__all__ = ["to_transformer_lens", "from_transformer_lens", "config_from_tl"]

_TL_ACT = TL_ACT_FN  # gptviz activation -> TransformerLens act_fn (gptviz.config says why)
# TransformerLens act_fn -> gptviz activation (gelu_new and gelu_fast write the same tanh formula out)
_GPTVIZ_ACT = {
    "gelu_pytorch_tanh": "gelu",
    "gelu_new": "gelu",
    "gelu_fast": "gelu",
    "gelu": "gelu_exact",
    "relu": "relu",
    "silu": "silu",
}
_ARCHITECTURE = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gpt_neox": "GPTNeoXForCausalLM",
}
# HookedTransformerConfig switches gptviz has no counterpart for: each must hold this value, else refused by name.
_TL_MUST_BE = {
    "use_attn_scale": True,
    "scale_attn_by_inverse_layer_idx": False,
    "attention_dir": "causal",
    "use_qk_norm": False,
    "clip_qkv": None,
    "use_logn_attn": False,
    "use_dynamic_ntk_rope": False,
    "use_local_attn": False,
    "rotary_adjacent_pairs": False,  # GPT-J's interleaved pairs; gptviz turns halves (NeoX, Llama)
    "rotary_scaling_factor": 1.0,
    "use_yarn_rope": False,
    "post_embedding_ln": False,
    "use_normalization_before_and_after": False,
    "use_attention_sinks": False,
    "num_experts": None,
    "load_in_4bit": False,
}


def _import_tl():
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as e:
        raise ImportError(
            "gptviz.transformer_lens needs TransformerLens 3.x with HookedTransformer "
            f"({e}); install it with: pip install 'gptviz[bench]'  (transformer-lens>=3.9,<4)"
        ) from None
    return HookedTransformer, HookedTransformerConfig


# ---- the weight table both directions share ------------------------------------------------------------------
def _weight_table(model: GPT, grouped: bool) -> tuple[list[tuple[str, torch.Tensor | None]], list[torch.Tensor]]:
    """([(TransformerLens state-dict key, the gptviz view holding it, or None if gptviz has none: zero)],
    [gptviz tensors TransformerLens has no place for: they must be zero]).

    `grouped`: TransformerLens's GroupedQueryAttention stores its nkv key/value heads as `_W_K`, `_b_K`, ...
    """
    c = model.config
    pairs: list[tuple[str, torch.Tensor | None]] = [("embed.W_E", model.wte.weight)]
    gptviz_only: list[torch.Tensor] = []
    if c.pos_encoding in ("learned", "sinusoidal"):
        pairs.append(("pos_embed.W_pos", model.W_pos))
    elif c.pos_encoding == "none":
        pairs.append(("pos_embed.W_pos", None))  # TransformerLens always adds a table here: zeros add nothing

    def norm(key: str, module) -> None:
        if not c.layer_norm:
            return
        pairs.append((f"{key}.w", module.weight))
        if c.norm == "layernorm":
            pairs.append((f"{key}.b", module.bias))

    kv = "_" if grouped else ""
    for l, block in enumerate(model.blocks):
        p, attn = f"blocks.{l}.", block.attn
        norm(p + "ln1", block.ln_1)
        has_qkv_bias = attn.c_attn.bias is not None
        for name in ("W_Q", f"{kv}W_K", f"{kv}W_V", "W_O"):
            pairs.append((f"{p}attn.{name}", getattr(AttentionWeights, name).fget(attn)))
        for name in ("b_Q", f"{kv}b_K", f"{kv}b_V"):
            pairs.append((f"{p}attn.{name}", getattr(AttentionWeights, name).fget(attn) if has_qkv_bias else None))
        pairs.append((f"{p}attn.b_O", attn.c_proj.bias))
        if block.mlp is None:
            continue
        norm(p + "ln2", block.ln_2)
        mlp = block.mlp
        for name in ("W_in", "W_out") + (("W_gate",) if mlp.gated else ()):
            pairs.append((f"{p}mlp.{name}", getattr(MLPWeights, name).fget(mlp)))
        if mlp.gated:  # TransformerLens adds b_in after act(gate) * up; gptviz's biases sit before the product
            pairs.append((f"{p}mlp.b_in", None))
            if mlp.c_fc.bias is not None:
                gptviz_only.append(mlp.c_fc.bias)
        else:
            pairs.append((f"{p}mlp.b_in", mlp.c_fc.bias))
        pairs.append((f"{p}mlp.b_out", mlp.c_proj.bias))
    norm("ln_final", model.ln_f)
    pairs += [("unembed.W_U", model.W_U), ("unembed.b_U", None)]
    return pairs, gptviz_only


# ---- gptviz -> TransformerLens ---------------------------------------------------------------------------------
def _tl_config(config: GPTConfig) -> dict:
    """HookedTransformerConfig's fields for this GPTConfig. Every GPTConfig has them; what TransformerLens cannot
    hold is a weight's value (a gated MLP's gate/up biases), which to_transformer_lens checks."""
    c = config
    cfg = dict(
        model_name="gptviz",
        d_model=c.n_embd,
        d_head=c.head_size,
        n_heads=c.n_head,
        n_key_value_heads=c.kv_heads if c.kv_heads != c.n_head else None,
        d_mlp=c.mlp_width if c.mlp else None,
        n_layers=c.n_layer,
        n_ctx=c.block_size,
        d_vocab=c.vocab_size,
        act_fn=_TL_ACT[c.activation],
        eps=c.layer_norm_epsilon,
        normalization_type=("RMS" if c.norm == "rmsnorm" else "LN") if c.layer_norm else None,
        positional_embedding_type="rotary" if c.pos_encoding == "rotary" else "standard",
        attn_only=not c.mlp,
        gated_mlp=c.mlp_gated,
        parallel_attn_mlp=c.parallel_residual and c.mlp,
        default_prepend_bos=False,  # gptviz never adds a BOS on its own
        tokenizer_name=None,
        init_weights=False,  # every weight is loaded at once
    )
    if c.pos_encoding == "rotary":
        cfg.update(rotary_dim=c.rotary_size, rotary_base=c.rope_theta, rotary_adjacent_pairs=False)
        if c.rope_scaling == "llama3":  # TransformerLens's name for Llama 3's scaling: NTK-by-parts
            cfg.update(
                use_NTK_by_parts_rope=True,
                NTK_by_parts_factor=c.rope_factor,
                NTK_by_parts_low_freq_factor=c.rope_low_freq_factor,
                NTK_by_parts_high_freq_factor=c.rope_high_freq_factor,
                NTK_original_ctx_len=c.rope_original_max_positions,
            )
        elif c.rope_scaling != "none":
            raise UnsupportedModelError(
                f"TransformerLens has no {c.rope_scaling!r} RoPE scaling (only Llama 3's, its NTK-by-parts)"
            )
    try:
        cfg["original_architecture"] = _ARCHITECTURE[family_of(c)]
    except UnsupportedModelError:
        cfg["original_architecture"] = None  # a toy model of the lessons: no transformers family
    return cfg


def to_transformer_lens(model: GPT):
    """A TransformerLens HookedTransformer computing what `model` computes, with copies of its weights.

    Unprocessed (fold_ln, centring and value-bias folding all off), so activations compare 1:1 by name; call
    TransformerLens's `process_weights_` on the result if you want its folded form. No tokenizer is attached
    (pass ids) and `default_prepend_bos` is False. The GPTConfig rides along as `tl_model.gptviz_config`, so
    `from_transformer_lens` gives the same config back. Needs `pip install 'gptviz[bench]'`.
    """
    HookedTransformer, HookedTransformerConfig = _import_tl()
    c = model.config
    grouped = c.kv_heads != c.n_head
    pairs, gptviz_only = _weight_table(model, grouped)
    nonzero = [t for t in gptviz_only if bool(t.detach().ne(0).any())]
    if nonzero:
        raise UnsupportedModelError(
            "this model's gated MLP has non-zero biases on its gate/up projections; TransformerLens's gated MLP "
            "has none there (it adds b_in after act(gate) * up), so it cannot compute the same function"
        )
    param = model.wte.weight
    cfg = HookedTransformerConfig(**_tl_config(c), device=str(param.device), dtype=param.dtype)
    with warnings.catch_warnings():
        # TransformerLens 3.x warns that HookedTransformer goes away in 4.0; gptviz pins <4 on purpose
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        tl = HookedTransformer(cfg)
    tl_params = dict(tl.named_parameters())
    state = {key: (view.detach() if view is not None else torch.zeros_like(tl_params[key])) for key, view in pairs}
    unknown, missing = sorted(set(state) - set(tl_params)), sorted(set(tl_params) - set(state))
    if unknown or missing:  # a naming slip here would load garbage silently: refuse loudly instead
        raise RuntimeError(f"gptviz -> TransformerLens key mismatch: not in TransformerLens {unknown}, unset {missing}")
    tl.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    tl.gptviz_config = GPTConfig.from_dict(c.to_dict())  # a copy: later edits of model.config do not travel
    return tl.eval()


# ---- TransformerLens -> gptviz ---------------------------------------------------------------------------------
def _refuse_tl(cfg) -> None:
    problems = [
        f"{name}={getattr(cfg, name)!r} (gptviz needs {want!r})"
        for name, want in _TL_MUST_BE.items()
        if hasattr(cfg, name) and getattr(cfg, name) != want
    ]
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        problems.append(f"positional_embedding_type={cfg.positional_embedding_type!r} (gptviz: standard or rotary)")
    if cfg.normalization_type not in ("LN", "LNPre", "RMS", "RMSPre", None):
        problems.append(f"normalization_type={cfg.normalization_type!r}")
    if cfg.final_rms and cfg.normalization_type in ("LN", "LNPre"):
        problems.append("final_rms=True (an RMSNorm after LayerNorm blocks)")
    if cfg.act_fn not in _GPTVIZ_ACT and not cfg.attn_only:
        problems.append(f"act_fn={cfg.act_fn!r} (gptviz: {sorted(_GPTVIZ_ACT)})")
    if cfg.d_vocab_out != cfg.d_vocab:
        problems.append(f"d_vocab_out={cfg.d_vocab_out} differs from d_vocab={cfg.d_vocab}")
    if not math.isclose(cfg.attn_scale, math.sqrt(cfg.d_head), rel_tol=1e-9):
        problems.append(f"attn_scale={cfg.attn_scale} (gptviz divides scores by sqrt(d_head)={math.sqrt(cfg.d_head)})")
    for name in ("attn_scores_soft_cap", "output_logits_soft_cap"):
        value = getattr(cfg, name, None)
        if value is not None and value > 0:
            problems.append(f"{name}={value}")
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # older 3.x: no post-norm architectures to refuse
        POST_NORM_ARCHITECTURES = ()
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        problems.append(f"original_architecture={cfg.original_architecture!r} is post-norm (gptviz is pre-norm)")
    if problems:
        raise UnsupportedModelError(
            "this HookedTransformer cannot become a gptviz GPT: "
            + "; ".join(problems)
            + ". gptviz refuses rather than approximating it."
        )


def _hint(key: str) -> str:
    """What to do about a non-zero TransformerLens weight gptviz has no place for."""
    if key == "unembed.b_U":
        return (
            " (gptviz's LM head has no bias; TransformerLens's fold_ln moves ln_final's bias into b_U, so load the "
            "model with HookedTransformer.from_pretrained_no_processing, or fold_ln=False)"
        )
    if key.endswith("mlp.b_in"):
        return " (TransformerLens's gated MLP adds b_in after act(gate) * up; gptviz's has no bias there)"
    return ""


def _nonzero(t: torch.Tensor) -> bool:
    return bool(t.detach().ne(0).any())


def config_from_tl(tl_model) -> GPTConfig:
    """The GPTConfig of a HookedTransformer's architecture; which biases exist is read from the weights (a bias
    that is zero everywhere is left out), tied embeddings from W_U == W_E.T, positions from W_pos."""
    cfg = tl_model.cfg
    _refuse_tl(cfg)
    sd = tl_model.state_dict()
    L = cfg.n_layers

    def any_nonzero(*suffixes: str) -> bool:
        return any(_nonzero(sd[k]) for k in sd if k.rsplit(".", 1)[-1] in suffixes and k.startswith("blocks."))

    qkv_bias = any_nonzero("b_Q", "b_K", "b_V", "_b_K", "_b_V")
    attn_out_bias = any_nonzero("b_O")
    mlp_bias = any_nonzero("b_out") or (not cfg.gated_mlp and any_nonzero("b_in"))
    norm_bias = cfg.normalization_type == "LN" and any(
        _nonzero(v) for k, v in sd.items() if k.endswith(("ln1.b", "ln2.b")) or k == "ln_final.b"
    )
    parts = {"qkv": qkv_bias, "attn_out": attn_out_bias, "mlp": mlp_bias}
    if cfg.attn_only:
        parts.pop("mlp")
    biases = set(parts.values()) | ({norm_bias} if cfg.normalization_type == "LN" else set())
    if len(biases) == 1:  # one switch says it all (GPT-2: everywhere; Llama: nowhere)
        bias, own = biases.pop(), {}
    else:
        bias, own = norm_bias, {f"{k}_bias": v for k, v in parts.items()}
    pos = "rotary"
    if cfg.positional_embedding_type == "standard":
        w_pos = sd["pos_embed.W_pos"]
        if not _nonzero(w_pos):
            pos = "none"
        elif torch.equal(w_pos, sinusoidal_encoding(cfg.n_ctx, cfg.d_model).to(w_pos)):
            pos = "sinusoidal"
        else:
            pos = "learned"
    C, nh = cfg.d_model, cfg.n_heads
    d_mlp = None if cfg.attn_only or cfg.d_mlp == 4 * C else cfg.d_mlp
    return GPTConfig(
        vocab_size=cfg.d_vocab,
        block_size=cfg.n_ctx,
        n_layer=L,
        n_head=nh,
        n_embd=C,
        bias=bias,
        pos_encoding=pos,
        activation=_GPTVIZ_ACT.get(cfg.act_fn, "gelu"),
        mlp=not cfg.attn_only,
        layer_norm=cfg.normalization_type is not None,
        tie_embeddings=torch.equal(sd["unembed.W_U"], sd["embed.W_E"].T),
        layer_norm_epsilon=cfg.eps,
        norm="rmsnorm" if cfg.normalization_type in ("RMS", "RMSPre") else "layernorm",
        n_kv_head=cfg.n_key_value_heads if cfg.n_key_value_heads not in (None, nh) else None,
        head_dim=None if cfg.d_head * nh == C else cfg.d_head,
        n_inner=d_mlp,
        mlp_gated=cfg.gated_mlp,
        rope_theta=float(cfg.rotary_base) if pos == "rotary" else 10000.0,
        **_rope_scaling_from(cfg, pos),
        rotary_dim=cfg.rotary_dim if pos == "rotary" and cfg.rotary_dim != cfg.d_head else None,
        parallel_residual=cfg.parallel_attn_mlp and not cfg.attn_only,
        **own,
    )


def _rope_scaling_from(cfg, pos: str) -> dict:
    if pos != "rotary" or not getattr(cfg, "use_NTK_by_parts_rope", False):
        return {}
    return dict(
        rope_scaling="llama3",
        rope_factor=float(cfg.NTK_by_parts_factor),
        rope_low_freq_factor=float(cfg.NTK_by_parts_low_freq_factor),
        rope_high_freq_factor=float(cfg.NTK_by_parts_high_freq_factor),
        rope_original_max_positions=int(cfg.NTK_original_ctx_len),
    )


def _check_matches(config: GPTConfig, tl_cfg) -> None:
    """A config handed in (or carried by the TransformerLens model) must describe the same architecture."""
    c = config
    want = {
        "d_vocab": c.vocab_size,
        "n_ctx": c.block_size,
        "n_layers": c.n_layer,
        "n_heads": c.n_head,
        "d_model": c.n_embd,
        "d_head": c.head_size,
        "n_key_value_heads": c.kv_heads,
        "attn_only": not c.mlp,
        "gated_mlp": c.mlp_gated,
        "parallel_attn_mlp": c.parallel_residual and c.mlp,
        "normalization_type": ("RMS" if c.norm == "rmsnorm" else "LN") if c.layer_norm else None,
        "positional_embedding_type": "rotary" if c.pos_encoding == "rotary" else "standard",
        "eps": c.layer_norm_epsilon,
    }
    got = {k: getattr(tl_cfg, k) for k in want}
    got["n_key_value_heads"] = tl_cfg.n_key_value_heads or tl_cfg.n_heads
    got["normalization_type"] = {"LNPre": "LN", "RMSPre": "RMS"}.get(
        tl_cfg.normalization_type, tl_cfg.normalization_type
    )
    if c.mlp:
        want["d_mlp"], got["d_mlp"] = c.mlp_width, tl_cfg.d_mlp
        want["act_fn"], got["act_fn"] = c.activation, _GPTVIZ_ACT.get(tl_cfg.act_fn)
    if c.pos_encoding == "rotary":
        want["rotary_dim"], got["rotary_dim"] = c.rotary_size, tl_cfg.rotary_dim
        want["rotary_base"], got["rotary_base"] = float(c.rope_theta), float(tl_cfg.rotary_base)
    wrong = [f"{k}: config says {want[k]!r}, TransformerLens has {got[k]!r}" for k in want if want[k] != got[k]]
    if wrong:
        raise ValueError("the GPTConfig does not describe this HookedTransformer: " + "; ".join(wrong))


def from_transformer_lens(tl_model, config: GPTConfig | None = None) -> GPT:
    """A gptviz GPT computing what the HookedTransformer computes, with copies of its weights (eval mode).

    The config is `config` if given, else the one `to_transformer_lens` left on the model (so a round trip is
    exact), else read from TransformerLens's config and weights (`config_from_tl`). Either way every weight must
    land somewhere: a non-zero TransformerLens weight gptviz has no place for (b_U, a gated MLP's b_in, a bias
    the config leaves out, an untied W_U under tie_embeddings=True) is refused by name. Folded models
    (normalization_type "LNPre"/"RMSPre", as `HookedTransformer.from_pretrained` gives) load with norm weights of 1.
    """
    _import_tl()
    cfg = tl_model.cfg
    _refuse_tl(cfg)
    if config is None:
        config = getattr(tl_model, "gptviz_config", None) or config_from_tl(tl_model)
    _check_matches(config, cfg)
    sd = {k: v.detach() for k, v in tl_model.state_dict().items()}
    model = GPT.empty(config)
    pairs, gptviz_only = _weight_table(model, grouped=cfg.n_key_value_heads is not None)
    pre_norm = cfg.normalization_type in ("LNPre", "RMSPre")
    problems = []
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # every parameter must be written below; a NaN left over is a mapping slip
        for t in gptviz_only:
            t.zero_()
        for key, view in pairs:
            if key not in sd:
                if pre_norm and key.rsplit(".", 1)[-1] in ("w", "b"):  # folded: its weight lives in W_Q, W_in ...
                    if view is not None:
                        view.fill_(1.0 if key.endswith(".w") else 0.0)
                    continue
                raise RuntimeError(f"TransformerLens state dict has no {key!r}")
            value = sd[key]
            if view is None:
                if _nonzero(value):
                    problems.append(f"{key} is non-zero but this gptviz config has no such weight" + _hint(key))
            elif key == "unembed.W_U" and config.tie_embeddings:
                if not torch.equal(value, sd["embed.W_E"].T):
                    problems.append("unembed.W_U differs from embed.W_E.T but tie_embeddings=True")
            elif key == "pos_embed.W_pos" and config.pos_encoding == "sinusoidal":
                if not torch.equal(value, sinusoidal_encoding(cfg.n_ctx, cfg.d_model).to(value)):
                    problems.append("pos_embed.W_pos is not the sinusoidal table but pos_encoding='sinusoidal'")
            else:
                view.copy_(value)
    if problems:
        raise UnsupportedModelError(
            "these TransformerLens weights do not fit the gptviz config: "
            + "; ".join(problems)
            + ". Where a gptviz config can hold the part (a bias, an untied W_U), config_from_tl reads one from the "
            "weights themselves: from_transformer_lens(tl, config=config_from_tl(tl))"
        )
    unset = [name for name, p in model.named_parameters() if bool(p.isnan().any())]
    if unset:
        raise RuntimeError(f"TransformerLens -> gptviz left parameters unset: {unset}")
    return model.to(device=sd["embed.W_E"].device, dtype=cfg.dtype).eval()
