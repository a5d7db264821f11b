"""A GPT decoder in PyTorch with named hook points and a KV cache: GPT-2, and the Llama, Qwen2 and GPT-NeoX families.

The blocks (attention, MLP, the pre-norm block) are `gptviz.block`'s and importable from here too; positional
encodings, the KV cache and the norms are `gptviz.layers`'s.
Shape legend used everywhere in gptviz: B batch, T query positions, Tk key positions (past + T), C embedding
width, nh heads, nkv key/value heads (nh unless grouped-query attention), hs head size, L layers, V vocabulary.

This module knows nothing about tokenizers, sampling or training: `GPT.forward` maps ids to logits (its
transformers and TransformerLens output keywords are `gptviz.outputs`'; TransformerLens's calls, `gptviz.tl_calls`'),
and `GPT.loss` gives the mean next-token cross-entropy. What the architecture is comes from `gptviz.config`;
generation lives in `gptviz.sampling`, which the thin `GPT.generate` calls; transformers interop in `gptviz.hf`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .block import MLP, Block, CausalSelfAttention, causal_mask, norm_layer
from .config import ACTIVATIONS, POS_ENCODINGS, GPTConfig
from .errors import InputError
from .generation import GenerationConfig, drop_ids_outside
from .hooks import HookPoint, hook_points
from .layers import (
    KVCache,
    LayerNorm,
    RMSNorm,
    apply_rotary,
    rope_frequencies,
    rotary_tables,
    sinusoidal_encoding,
)
from .outputs import ELSEWHERE, as_logits
from .tl_calls import TransformerLensCalls
from .weights import WeightViews

__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "LayerNorm",
    "RMSNorm",
    "POS_ENCODINGS",
    "ACTIVATIONS",
    "sinusoidal_encoding",
    "rotary_tables",
    "apply_rotary",
    "causal_mask",
    "CausalSelfAttention",
    "MLP",
    "Block",
    "evaluating",
    "default_device",
]


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Run the block in eval mode (no dropout) and restore the module's train/eval mode afterwards, even on error."""
    was_training = module.training
    if was_training:
        module.eval()
    try:
        yield module
    finally:
        if was_training:
            module.train()


def _public_name(module_path: str) -> str:
    """A hook point's module path -> its public name: TransformerLens spells the norms ln1, ln2, ln_final."""
    return (
        module_path.replace(".ln_1.", ".ln1.").replace(".ln_2.", ".ln2.").replace("ln_f.", "ln_final.", 1)
        if "ln_" in module_path
        else module_path
    )


def _shortcut_children(root: nn.Module) -> None:
    """Let `self.child` skip nn.Module.__getattr__ (a slow Python fallback) by also storing children in __dict__.

    On a one-token decode step the model touches ~15 submodules per layer, and that fallback was most of
    what idle hook points cost. Safe: assigning a new child through nn.Module.__setattr__ drops the copy.
    """
    for module in root.modules():
        for name, child in module._modules.items():
            if child is not None and not isinstance(module, (nn.ModuleList, nn.Sequential)):
                module.__dict__[name] = child


def store_weights_transposed(model: nn.Module) -> None:
    """Every nn.Linear weight keeps its (out, in) shape, but its memory holds the (in, out) transpose.

    Shapes, state-dict keys, values and every computation stay as they were: only the strides change, to what
    GPT-2's Conv1D stores. What it buys is one-token decoding on a CPU, which streams each weight from memory once
    per token: MKL's matrix-vector product runs on this layout at ~16 GB/s on the project's AMD EPYC against
    ~10-12 GB/s on the row layout (the tied 50257-row GPT-2 head: 16 -> 9 ms a token), so GPT-2-small greedy
    generation is ~1.2-1.3x faster. Small models, whose weights stay in cache, decode as fast either way (measured);
    GPU kernels take either layout. A tied head is the embedding, which then reads its rows from columns: one gather
    per token. Called by GPT(); a checkpoint load reads each file's matrix straight into this layout
    (checkpoint._read_transposed). Optimizer state must follow the same strides: the fused AdamW kernels read
    memory flat (train_resume.match_state_layout).
    """
    for module in model.modules():
        if isinstance(module, nn.Linear) and not stored_transposed(module.weight):
            module.weight.data = transposed_storage(module.weight.data)


def stored_transposed(t: torch.Tensor) -> bool:
    """Whether a matrix holds its transpose in memory (vectors and 1-wide matrices count as laid out)."""
    return t.dim() != 2 or min(t.shape) <= 1 or t.stride() == (1, t.shape[0])


def transposed_storage(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`t`'s values (cast to `dtype` on the way), shape (out, in), in memory as the (in, out) transpose: one copy."""
    return torch.empty(t.shape[::-1], dtype=dtype or t.dtype, device=t.device).copy_(t.t()).t()


def transposed_names(model: nn.Module) -> set[str]:
    """State-dict names of the weights store_weights_transposed lays out (a tied head's embedding included)."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    return {name for name, p in model.named_parameters(remove_duplicate=False) if id(p) in linear}


class GPT(TransformerLensCalls, WeightViews, nn.Module):
    """Token embeddings (+ learned or sinusoidal positions), L pre-norm blocks, final norm, LM head.

    GPT-2 by default: the LM head is tied to the token embedding. GPTConfig chooses the family's parts (RMSNorm,
    RoPE inside attention, grouped-query heads, SwiGLU, parallel residual) and the toy models of notebook 06 (no
    norms, untied head, wider init); `gptviz.hf` says which configs transformers can load back.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        # Modules are declared in forward order, so hook points are listed (and fire) in that order.
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.hook_embed = HookPoint()  # (B, T, C) token embeddings
        if config.pos_encoding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif config.pos_encoding == "sinusoidal":
            self.register_buffer("pe", sinusoidal_encoding(config.block_size, config.n_embd), persistent=False)
        elif config.pos_encoding == "rotary":  # no vector is added: attention turns q and k by these angles
            cos, sin = rope_tables(config)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, rd)
            self.register_buffer("rope_sin", sin, persistent=False)  # (block_size, rd)
        self.hook_pos_embed = HookPoint()  # (B, T, C) position embeddings (learned or sinusoidal)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = norm_layer(config)
        if config.tie_embeddings:
            # created on the meta device: its weight is replaced by the embedding's at once (weight tying, as
            # in GPT-2), so a real (V, C) matrix would only be a temporary (150 MB at GPT-2 size)
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False, device="meta")
            self.lm_head.weight = self.wte.weight
        else:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.hook_logits = HookPoint()  # (B, T, V)
        # forward order, under TransformerLens's names (ln_1 -> ln1, ln_f -> ln_final); capture() looks them up here
        self.hook_dict = {_public_name(name): point for name, point in hook_points(self).items()}
        for name, point in self.hook_dict.items():
            point.name = name
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))
        self._past_len = 0
        # transformers' defaults for model.generate; gptviz.load / from_pretrained fill eos, bos and pad
        self.generation_config = GenerationConfig()
        _shortcut_children(self)
        store_weights_transposed(self)

    @classmethod
    def empty(cls, config: GPTConfig) -> GPT:
        """A model whose parameters are uninitialised memory, for loading weights into at once.

        Skips the random init (2-3 s at 135M parameters on a laptop CPU). Every parameter must then be loaded:
        gptviz.checkpoint and gptviz.hf check that none is missing. The fixed tables (sinusoidal, RoPE) are real.
        """
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device="cpu")
        if config.tie_embeddings:  # leaving the meta device made the head a parameter of its own: tie it again
            model.lm_head.weight = model.wte.weight
        fresh = {}
        if config.pos_encoding == "sinusoidal":
            fresh["pe"] = sinusoidal_encoding(config.block_size, config.n_embd)
        elif config.pos_encoding == "rotary":
            fresh["rope_cos"], fresh["rope_sin"] = rope_tables(config)
        for name, value in fresh.items():
            getattr(model, name).copy_(value)
        return model

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    # ---- forward -------------------------------------------------------------------------------------
    def trunk(
        self, idx: torch.Tensor, kv_cache: KVCache | None = None, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Ids (B, T) -> final hidden states (B, T, C), after ln_f. Used by the LM head and classifiers.

        `attention_mask` (B, past + T), 1 for real tokens and 0 for padding, as transformers takes it: padded
        keys are never attended to, and positions count real tokens only (cumsum of the mask), so a left-padded
        row gets exactly what it gets alone. A padding query attends to itself only, which keeps it finite.
        """
        past = kv_cache.pos if kv_cache is not None else 0
        self._check_input(idx, past)
        B, T = idx.size()
        pos, mask = None, None
        if attention_mask is not None:
            pos, mask = self._padding(attention_mask, B, T, past, idx.device)
        if self.hook_embed.fns:
            self._past_len = past  # read by capture's memory-budget check
        x, rope = self.embed_input(idx, past, pos)
        if self.training and self.config.dropout:  # skipping the call matters for one-token decode steps
            x = self.drop(x)
        for block in self.blocks:
            x = block(x, kv_cache, rope, mask)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.ln_f(x)  # (B, T, C); ln_final.hook_normalized sees it

    def embed_input(
        self, idx: torch.Tensor, past: int = 0, pos: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The residual stream entering block 0 for ids (B, T) at positions past.. (or `pos` (B, T), a padded
        batch's), and the RoPE tables the blocks turn queries and keys with (None unless rotary): (x (B, T, C),
        (cos, sin)). The first part of `trunk`; the fine-tuning feature cache runs the blocks from here itself."""
        B, T = idx.size()
        x = self.hook_embed(self.wte(idx))  # (B, T, C)
        kind = self.config.pos_encoding
        if kind == "learned":
            where = torch.arange(past, past + T, device=idx.device) if pos is None else pos  # (T,) or (B, T)
            x = x + self.hook_pos_embed(self.wpe(where).expand(B, T, -1))  # (B, T, C), a view
        elif kind == "sinusoidal":
            pe = (self.pe[past : past + T] if pos is None else self.pe[pos]).to(x.dtype)  # (T, C) or (B, T, C)
            x = x + self.hook_pos_embed(pe.expand(B, T, -1))  # (B, T, C), a view
        return x, self.rope_tables(T, past, pos, x.dtype)

    def rope_tables(
        self, T: int, past: int = 0, pos: torch.Tensor | None = None, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """RoPE's (cos, sin) for positions past..past+T ((T, rd) each) or `pos` (B, T) ((B, 1, T, rd) each), in
        `dtype` (default: the embeddings'); None unless the model is rotary. The float32 tables are cast to the
        model's dtype, as transformers does."""
        if self.config.pos_encoding != "rotary":
            return None
        dtype = dtype or self.wte.weight.dtype
        if pos is None:
            return self.rope_cos[past : past + T].to(dtype), self.rope_sin[past : past + T].to(dtype)
        return self.rope_cos[pos][:, None].to(dtype), self.rope_sin[pos][:, None].to(dtype)

    def _padding(
        self, attention_mask: torch.Tensor, B: int, T: int, past: int, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(positions (B, T), attention mask (B, 1, T, Tk)) of a padded batch; (None, None) if nothing is padded."""
        m = torch.as_tensor(attention_mask, device=device)
        if m.dim() == 1:
            m = m[None]
        if m.dim() != 2 or m.shape[0] != B or m.shape[1] != past + T:
            raise InputError(
                f"attention_mask must have shape (B, past + T) = ({B}, {past + T}) with 1 for real "
                f"tokens and 0 for padding, got {tuple(m.shape)}"
            )
        m = m.bool()
        if bool(m.all()):
            return None, None  # no padding: the fast, mask-free path, identical results
        pos = (m.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T) real tokens counted from 0
        if int(pos.max()) >= self.config.block_size:
            raise InputError(
                f"a row has {int(pos.max()) + 1} real tokens, more than block_size={self.config.block_size}"
            )
        allowed = causal_mask(T, past, device)[None] & m[:, None, :]  # (B, T, Tk)
        keys, queries = torch.arange(past + T, device=device), torch.arange(past, past + T, device=device)
        allowed |= (keys[None, :] == queries[:, None])[None]  # a padding query sees itself, so no row is empty
        return pos, allowed[:, None]  # (B, 1, T, Tk)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        idx: torch.Tensor | None = None,
        **hf_kwargs,
    ) -> torch.Tensor:
        """Ids (B, T) -> logits (B, T, V) for every position. `attention_mask` as in `trunk` (padded batches).

        Accepts transformers' spelling too: `model(input_ids=..., attention_mask=...)`, `model(**tok(texts, ...))`,
        `model(ids).logits`, and its output keywords (`labels=`, `output_attentions=`, `output_hidden_states=`,
        `return_dict=`, `use_cache=`, `past_key_values=`), which return a CausalLMOutput (gptviz.outputs).
        """
        if idx is not None:
            if input_ids is not None:
                raise InputError("pass the ids once: as input_ids (or the first argument), not also as idx")
            input_ids = idx
        if not isinstance(input_ids, torch.Tensor) and hasattr(input_ids, "keys") and "input_ids" in input_ids:
            if attention_mask is None:  # model(tok(text, return_tensors="pt")) without the **
                attention_mask = input_ids.get("attention_mask")
            input_ids = input_ids["input_ids"]
        if hf_kwargs:
            from . import outputs

            outputs.check_keywords(hf_kwargs)
        if input_ids is None:
            raise InputError("no token ids given; call model(ids) with a (B, T) integer tensor")
        if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 1:  # one sequence, as transformers and
            input_ids = input_ids[None]  # TransformerLens take it: a batch of one, (1, T, V) back
            if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 1:
                attention_mask = attention_mask[None]
        if hf_kwargs:
            if any(k in outputs.TL_KNOWN for k in hf_kwargs):
                return outputs.tl_forward(self, input_ids, kv_cache, attention_mask, **hf_kwargs)
            return outputs.forward(self, input_ids, kv_cache, attention_mask, **hf_kwargs)
        return as_logits(self.hook_logits(self.lm_head(self.trunk(input_ids, kv_cache, attention_mask))))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean cross-entropy of predicting `targets` (B, T) from `idx` (B, T); a scalar tensor."""
        logits = self(idx)
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=ignore_index)

    def _check_input(self, idx: torch.Tensor, past: int) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.long, torch.int32):
            got = (
                f"{type(idx).__name__} {tuple(idx.shape)} {idx.dtype}"
                if isinstance(idx, torch.Tensor)
                else type(idx).__name__
            )
            hint = (
                "gptviz models take ids, not text: encode first, model(tok(text, return_tensors='pt')['input_ids'])"
                if isinstance(idx, str) or (isinstance(idx, (list, tuple)) and idx and isinstance(idx[0], str))
                else "for one sequence use torch.tensor([ids])"
            )
            raise InputError(f"expected token ids as an integer tensor of shape (B, T), got {got}; {hint}")
        T = idx.size(1)
        if T == 0:
            raise InputError("got an empty sequence (T=0); give at least one token")
        if past + T > self.config.block_size:
            raise InputError(
                f"sequence of {past + T} positions is longer than block_size="
                f"{self.config.block_size}; crop it to the last {self.config.block_size} tokens "
                "(model.generate and gptviz.sampling do this for you)"
            )
        # Out-of-range ids crash deep inside the embedding (a device-side assert on CUDA). Checking costs a
        # sync on GPU, so it runs on CPU always and elsewhere outside training.
        if (idx.device.type == "cpu" or not self.training) and not torch.compiler.is_compiling():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.config.vocab_size:
                bad = lo if lo < 0 else hi
                raise InputError(
                    f"token id {bad} is outside the vocabulary (0..{self.config.vocab_size - 1}); "
                    "was the text encoded with this model's tokenizer?"
                )

    # ---- introspection -------------------------------------------------------------------------------
    def hook_shapes(self, batch_size: int, seq_len: int, past_len: int = 0) -> dict[str, tuple[int, ...]]:
        """Shape of every hook's activation for one forward of (batch_size, seq_len) new tokens."""
        c = self.config
        B, T, Tk, C, nh, nkv, hs = batch_size, seq_len, past_len + seq_len, c.n_embd, c.n_head, c.kv_heads, c.head_size
        by_leaf = {
            "hook_scale": (B, T, 1),
            "hook_logits": (B, T, c.vocab_size),
            "hook_pre": (B, T, c.mlp_width),
            "hook_pre_linear": (B, T, c.mlp_width),
            "hook_post": (B, T, c.mlp_width),
            "hook_attn_scores": (B, nh, T, Tk),
            "hook_pattern": (B, nh, T, Tk),
            "hook_q": (B, T, nh, hs),
            "hook_rot_q": (B, T, nh, hs),
            "hook_z": (B, T, nh, hs),
            "hook_result": (B, T, nh, C),
            "hook_k": (B, T, nkv, hs),
            "hook_rot_k": (B, T, nkv, hs),
            "hook_v": (B, T, nkv, hs),
        }
        return {name: by_leaf.get(name.rsplit(".", 1)[-1], (B, T, C)) for name in hook_points(self)}

    @property
    def hook_names(self) -> list[str]:
        return list(hook_points(self))

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    @property
    def cfg(self) -> GPTConfig:
        """The config under TransformerLens's name; it answers TransformerLens's field names (d_model, n_layers)."""
        return self.config

    @property
    def dtype(self) -> torch.dtype:
        return self.wte.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers and submodules live in nn.Module's dicts
        except AttributeError:
            if name not in ELSEWHERE:
                raise
        raise AttributeError(f"GPT has no {name!r}: {ELSEWHERE[name]}") from None

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings and self.config.pos_encoding == "learned":
            n -= self.wpe.weight.numel()
        return n

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        c = self.config
        p = self.wte.weight
        return KVCache(
            c.n_layer,
            batch_size,
            c.kv_heads,
            min(max_len or c.block_size, c.block_size),
            c.head_size,
            p.device,
            p.dtype,
        )

    # ---- generation (thin; the translation is gptviz.generation's, the decoding gptviz.sampling's) ------------
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """Prompt ids (B, T) -> prompt + new ids, with transformers' keywords, meanings and defaults.

        `model.generate(ids, max_length=50)`, `model.generate(input_ids=ids, attention_mask=mask,
        max_new_tokens=20, do_sample=True, temperature=0.7)`, `model.generate(**tok(texts, return_tensors="pt",
        padding=True))`, `num_beams`, `no_repeat_ngram_size`, `repetition_penalty`, `num_return_sequences`,
        `min_new_tokens`, `eos_token_id`, `pad_token_id`, `output_scores`, `return_dict_in_generate`, ... and
        gptviz's `seed=`. Defaults are transformers' (max_length=20 including the prompt; top_k=50 when
        sampling); see `gptviz.generation`.
        """
        from .generation import generate

        return generate(self, inputs, generation_config, **kwargs)

    # ---- transformers interop (the translation is gptviz.hf's; it never imports this module) --------------
    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, **hf_kwargs) -> GPT:
        """Load a transformers checkpoint of a supported family (GPT-2, Llama, Qwen2, GPT-NeoX/Pythia).

        `name_or_dir` is a local folder (config.json + weights) or, online, a hub id such as "gpt2" or
        "EleutherAI/pythia-70m". The architecture comes from config.json; a setting gptviz does not implement
        (a rope scaling type, sliding-window attention, ...) is refused with its name, never approximated.
        """
        from . import hf

        config, weights, dtype = hf.read_pretrained(name_or_dir, **hf_kwargs)
        model = cls.empty(config)
        hf.load_weights(model, weights)
        if "gguf_file" not in hf_kwargs:  # a GGUF's generation defaults come with its tokenizer (gptviz.load)
            model.generation_config = GenerationConfig.from_transformers(
                hf.read_generation_config(name_or_dir), strict=False
            )
            drop_ids_outside(model.generation_config, config.vocab_size, str(name_or_dir))
        return model.to(dtype).eval()

    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """Write a folder that transformers' `AutoModelForCausalLM.from_pretrained(directory)` loads."""
        from . import hf

        return hf.write_pretrained(self.config, self.state_dict(), directory, **kwargs)


def rope_tables(config: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's (cos, sin) for every position of a rotary config, (block_size, rotary_dim) each, scaling included."""
    inv_freq = rope_frequencies(
        config.rotary_size,
        config.rope_theta,
        config.rope_scaling,
        config.rope_factor,
        config.rope_low_freq_factor,
        config.rope_high_freq_factor,
        config.rope_original_max_positions,
    )
    return rotary_tables(config.block_size, config.rotary_size, inv_freq=inv_freq)


def default_device() -> str:
    """'cuda' if a GPU is there, else 'mps' on Apple silicon, else 'cpu'."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        # MPS is known to give silently wrong results for some ops in older torch (TransformerLens #1178);
        # tell the user once rather than choosing silently.
        warnings.warn("using Apple MPS; compare with device='cpu' if numbers look odd", stacklevel=2)
        return "mps"
    return "cpu"
