"""`GPTConfig`: every architectural choice of a gptviz GPT, with GPT-2's values as defaults.

One config covers the decoder families people explore (hf.py maps each family's transformers config onto it):

| family        | norm      | positions        | MLP                  | attention                       | residual |
|---------------|-----------|------------------|----------------------|---------------------------------|----------|
| GPT-2         | layernorm | learned          | gelu (tanh), 4C      | nh heads, biases                | serial   |
| GPT-NeoX/Pythia | layernorm | rotary (partial) | gelu_exact, 4C     | nh heads, biases                | parallel |
| Llama/SmolLM2 | rmsnorm   | rotary           | gated silu (SwiGLU)  | grouped-query (n_kv_head), no bias | serial |
| Qwen2         | rmsnorm   | rotary           | gated silu (SwiGLU)  | grouped-query, q/k/v bias only  | serial   |

Plus the toy-model switches of the lessons (no MLP, no LayerNorm, sinusoidal positions, ReLU). This module only
describes; `gptviz.model` builds the network from it and `gptviz.hf` translates to and from transformers.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ._config import DictConfig
from .errors import ConfigError

POS_ENCODINGS = ("learned", "sinusoidal", "rotary", "none")
# "gelu" is GPT-2's tanh approximation (its "gelu_new"); "gelu_exact" is the erf form (GPT-NeoX, BERT).
ACTIVATIONS = ("gelu", "gelu_exact", "relu", "silu")
NORMS = ("layernorm", "rmsnorm")


# other libraries' names for GPTConfig's sizes, readable on a config (config.n_positions is its block_size)
_ALIASES = {
    "n_positions": "block_size",  # transformers' GPT-2
    "n_ctx": "block_size",  # GPT-2's older name, and TransformerLens's
    "max_position_embeddings": "block_size",  # Llama, Qwen2, GPT-NeoX
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "num_key_value_heads": "kv_heads",
    "intermediate_size": "mlp_width",
    "d_model": "n_embd",  # TransformerLens
    "n_layers": "n_layer",
    "n_heads": "n_head",
    "n_key_value_heads": "kv_heads",
    "d_head": "head_size",
    "d_mlp": "mlp_width",
    "d_vocab": "vocab_size",
    "d_vocab_out": "vocab_size",
    "eps": "layer_norm_epsilon",
}
# gptviz activation -> TransformerLens act_fn ("gelu" is GPT-2's tanh form, TransformerLens's gelu_pytorch_tanh,
# the same F.gelu call; its "gelu_new" writes the formula out, ~1e-7 off)
TL_ACT_FN = {"gelu": "gelu_pytorch_tanh", "gelu_exact": "gelu", "relu": "relu", "silu": "silu"}


_TOKEN_IDS = (
    "gptviz keeps them on model.generation_config (e.g. model.generation_config.eos_token_id) and the tokenizer"
)
# transformers config fields that gptviz keeps somewhere else
_KEPT_ELSEWHERE = {
    "eos_token_id": _TOKEN_IDS + " (tok.eos_token_id)",
    "bos_token_id": _TOKEN_IDS + " (tok.bos_token_id)",
    "pad_token_id": _TOKEN_IDS + " (tok.pad_token_id)",
    "use_cache": "a KV cache is asked for per call: model(ids, use_cache=True), model.generate(..., use_cache=...)",
    "output_attentions": "asked for per call: model(ids, output_attentions=True)",
    "output_hidden_states": "asked for per call: model(ids, output_hidden_states=True)",
    "model_type": "gptviz.hf.family_of(model.config) names the family ('gpt2', 'llama', 'qwen2', 'gpt_neox')",
    "torch_dtype": "the model says it: model.dtype",
}


@dataclass
class GPTConfig(DictConfig):
    vocab_size: int = 50257  # GPT-2's BPE; a char model has ~65-100
    block_size: int = 1024  # longest context the model sees (positions 0..block_size-1)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768  # C; must be divisible by n_head unless head_dim is given
    dropout: float = 0.0  # embeddings, attention weights and residual branches
    bias: bool = True  # biases in Linear and LayerNorm (GPT-2: True); the three switches below override it
    pos_encoding: str = "learned"  # "learned" (GPT-2) | "sinusoidal" (fixed sin/cos) | "rotary" (RoPE) | "none"
    activation: str = "gelu"  # "gelu" (tanh, GPT-2) | "gelu_exact" (NeoX) | "relu" (the original FFN) | "silu"
    mlp: bool = True  # False: attention-only blocks (the induction-head lesson)
    layer_norm: bool = True  # False: no normalisation anywhere (interpretability toy models; notebook 06)
    tie_embeddings: bool = True  # the LM head reuses the token embedding (GPT-2); False: a matrix of its own
    init_std: float = 0.02  # std of the normal init of embeddings and Linear weights (GPT-2: 0.02)
    layer_norm_epsilon: float = 1e-5  # epsilon of every norm, LayerNorm or RMSNorm
    # ---- the families beyond GPT-2 (defaults keep GPT-2 exactly) ----
    norm: str = "layernorm"  # "layernorm" (GPT-2, NeoX) | "rmsnorm" (Llama, Qwen2: no mean, no bias)
    n_kv_head: int | None = None  # key/value heads; fewer than n_head is grouped-query attention. None: n_head
    head_dim: int | None = None  # hs; None: n_embd // n_head (Llama-style configs may set it apart)
    n_inner: int | None = None  # MLP hidden width; None: 4 * n_embd
    mlp_gated: bool = False  # True: c_proj(act(gate(x)) * up(x)), SwiGLU with activation="silu" (Llama, Qwen2)
    rope_theta: float = 10000.0  # RoPE base: pair i of a head turns by pos / theta^(2i/rotary_dim)
    rope_scaling: str = "none"  # "none" | "linear" (frequencies / rope_factor) | "llama3" (Llama 3.1/3.2's)
    rope_factor: float = 1.0  # the scaling's factor (Llama 3.2: 32)
    rope_low_freq_factor: float = 1.0  # llama3: wavelengths past original / low_freq_factor are divided by factor
    rope_high_freq_factor: float = 4.0  # llama3: wavelengths under original / high_freq_factor are kept
    rope_original_max_positions: int | None = None  # llama3: the pretraining context (Llama 3: 8192)
    rotary_dim: int | None = None  # how many of each head's hs dims RoPE turns (NeoX: a quarter); None: all
    qkv_bias: bool | None = None  # bias of the q/k/v projection; None: `bias` (Qwen2: True, Llama: False)
    attn_out_bias: bool | None = None  # bias of the attention output projection; None: `bias`
    mlp_bias: bool | None = None  # biases of the MLP; None: `bias`
    parallel_residual: bool = False  # x + attn(ln_1(x)) + mlp(ln_2(x)) in one step (GPT-NeoX, Pythia)

    def __post_init__(self) -> None:
        problems = self.check_field_types()  # numeric strings -> floats; ints, bools, strings strict (gptviz._config)
        if problems:
            raise ConfigError("invalid GPTConfig: " + "; ".join(problems))
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_kv_head", "head_dim", "n_inner", "rotary_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                problems.append(f"{name} must be a positive integer or None, got {value!r}")
        if not problems and self.head_dim is None and self.n_embd % self.n_head:
            problems.append(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if not problems and self.n_head % self.kv_heads:
            problems.append(
                f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head}): each "
                "key/value head serves the same number of query heads"
            )
        if self.pos_encoding not in POS_ENCODINGS:
            problems.append(f"pos_encoding must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}")
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2:
            problems.append(f"sinusoidal positions need an even n_embd, got {self.n_embd}")
        if (
            not problems
            and self.pos_encoding == "rotary"
            and (self.rotary_size % 2 or self.rotary_size > self.head_size)
        ):
            problems.append(
                f"rotary_dim must be even and at most the head size {self.head_size}, got {self.rotary_size}"
            )
        if self.rope_scaling not in ("none", "linear", "llama3"):
            problems.append(f"rope_scaling must be 'none', 'linear' or 'llama3', got {self.rope_scaling!r}")
        if self.rope_factor <= 0:
            problems.append(f"rope_factor must be > 0, got {self.rope_factor!r}")
        if self.rope_scaling == "llama3" and (
            self.rope_original_max_positions is None or not self.rope_high_freq_factor > self.rope_low_freq_factor > 0
        ):
            problems.append(
                "rope_scaling='llama3' needs rope_original_max_positions and rope_high_freq_factor > "
                f"rope_low_freq_factor > 0, got {self.rope_original_max_positions!r}, {self.rope_high_freq_factor!r}, "
                f"{self.rope_low_freq_factor!r}"
            )
        if self.rope_theta <= 1:
            problems.append(f"rope_theta must be a number above 1, got {self.rope_theta!r} (Llama: 10000)")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            problems.append(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.mlp_gated and not self.mlp:
            problems.append("mlp_gated=True needs mlp=True")
        if not 0.0 < self.init_std <= 1.0:
            problems.append(f"init_std must be in (0, 1], got {self.init_std!r} (GPT-2 uses 0.02)")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 < self.layer_norm_epsilon < 1.0:
            problems.append(f"layer_norm_epsilon must be in (0, 1), got {self.layer_norm_epsilon!r} (GPT-2 uses 1e-5)")
        if problems:
            raise ConfigError("invalid GPTConfig: " + "; ".join(problems))

    def __setattr__(self, name: str, value) -> None:
        if name in _ALIASES:
            raise AttributeError(
                f"config.{name} is another library's name for GPTConfig.{_ALIASES[name]}, read-only here; set "
                f"{_ALIASES[name]} on a config before building a model (a built model's sizes are fixed)"
            )
        if name in _KEPT_ELSEWHERE:
            raise AttributeError(f"GPTConfig has no {name!r}: {_KEPT_ELSEWHERE[name]}")
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        """transformers' and TransformerLens's names for the same sizes (read-only): n_positions, hidden_size,
        num_hidden_layers, d_model, n_layers, d_head, d_mlp, ..."""
        target = _ALIASES.get(name)
        if target is not None:
            return getattr(self, target)
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _KEPT_ELSEWHERE:
            raise AttributeError(f"GPTConfig has no {name!r}: {_KEPT_ELSEWHERE[name]}")
        known = [f for f in type(self).__dataclass_fields__] + list(_ALIASES)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = (
            f"; did you mean {close[0]!r}?" if close else f"; its fields: {', '.join(type(self).__dataclass_fields__)}"
        )
        raise AttributeError(f"GPTConfig has no {name!r}{hint}")

    # ---- TransformerLens's descriptive names (read-only) ----
    @property
    def attn_only(self) -> bool:
        return not self.mlp

    @property
    def act_fn(self) -> str:
        return TL_ACT_FN[self.activation]

    @property
    def normalization_type(self) -> str | None:
        return None if not self.layer_norm else ("RMS" if self.norm == "rmsnorm" else "LN")

    @property
    def positional_embedding_type(self) -> str:
        return {"learned": "standard"}.get(self.pos_encoding, self.pos_encoding)

    # ---- derived sizes: read these, never the Optional fields ----
    @property
    def head_size(self) -> int:
        """hs, the width of one attention head."""
        return self.head_dim or self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads (n_head unless grouped-query attention)."""
        return self.n_kv_head or self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @property
    def rotary_size(self) -> int:
        """Dims of each head that RoPE turns (the rest pass through unchanged, as in GPT-NeoX)."""
        return self.rotary_dim or self.head_size

    def has_bias(self, part: str) -> bool:
        """Whether a part ("qkv", "attn_out", "mlp") has biases: its own switch, else `bias`."""
        own = {"qkv": self.qkv_bias, "attn_out": self.attn_out_bias, "mlp": self.mlp_bias}[part]
        return self.bias if own is None else own
