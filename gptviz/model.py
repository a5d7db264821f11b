"""A GPT-2 style decoder in PyTorch with named hook points, a KV cache, and Hugging Face GPT-2 interop.

Read top to bottom in forward order: positional encodings, attention, MLP, block, config, GPT.
Shape legend used everywhere in gptviz: B batch, T query positions, Tk key positions (past + T), C embedding
width, nh heads, hs head size (C // nh), L layers, V vocabulary.

This module knows nothing about tokenizers, sampling or training: `GPT.forward` maps ids to logits, and
`GPT.loss` gives the mean next-token cross-entropy. Generation lives in `gptviz.sampling`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._config import DictConfig
from .hooks import HookPoint, hook_points

POS_ENCODINGS = ("learned", "sinusoidal", "none")
ACTIVATIONS = ("gelu", "relu")


def sinusoidal_encoding(n_positions: int, dim: int) -> torch.Tensor:
    """The seed's formula: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (T, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float32)  # (C/2,)
    angle = pos / (10000.0 ** (two_i / dim))  # (T, C/2)
    pe = torch.zeros(n_positions, dim)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return pe


class KVCache:
    """Keys and values of past positions for every layer, preallocated: (L, B, nh, max_len, hs) each.

    Each attention layer writes its new keys/values at [pos, pos + T); the model advances `pos` once per
    forward. Beam search reorders the batch with `reorder`.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_size: int,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (n_layer, batch_size, n_head, max_len, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new (B, nh, T, hs) keys/values; return all keys/values so far, (B, nh, Tk, hs)."""
        end = self.pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; cannot add {k.shape[2]} at {self.pos}. "
                             "Crop the context (gptviz.sampling slides the window for you).")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (e.g. the beams that survived a beam-search step)."""
        if torch.equal(index, torch.arange(self.batch_size, device=index.device)):
            return  # beams kept their order: nothing to move
        # only the filled part moves; the rest of the preallocated buffer is overwritten later anyway
        self.k[:, :, :, :self.pos] = self.k[:, index, :, :self.pos]
        self.v[:, :, :, :self.pos] = self.v[:, index, :, :self.pos]

    def reset(self) -> None:
        self.pos = 0


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


def causal_mask(T: int, past: int, device: torch.device) -> torch.Tensor:
    """(T, past + T) booleans, True where query past + i may look at key j (j <= past + i)."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


def _shortcut_children(root: nn.Module) -> None:
    """Let `self.child` skip nn.Module.__getattr__ (a slow Python fallback) by also storing children in __dict__.

    On a one-token decode step the model touches ~15 submodules per layer, and that fallback was most of
    what idle hook points cost. Safe: assigning a new child through nn.Module.__setattr__ drops the copy.
    """
    for module in root.modules():
        for name, child in module._modules.items():
            if child is not None and not isinstance(module, (nn.ModuleList, nn.Sequential)):
                module.__dict__[name] = child


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, softmax(QK^T / sqrt(hs)) V.

    Fast path: `scaled_dot_product_attention` (flash on GPU). When someone listens to `hook_scores` or
    `hook_pattern`, this layer runs the explicit path instead, so the attention map exists to be recorded.
    """

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.hook_q = HookPoint()  # (B, nh, T, hs)
        self.hook_k = HookPoint()  # (B, nh, T, hs) new positions only
        self.hook_v = HookPoint()  # (B, nh, T, hs) new positions only
        self.hook_scores = HookPoint()  # (B, nh, T, Tk) masked (-inf), pre-softmax
        self.hook_pattern = HookPoint()  # (B, nh, T, Tk) post-softmax, pre-dropout
        self.hook_z = HookPoint()  # (B, nh, T, hs) attention-weighted values, before c_proj

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = self.hook_q(q.view(B, T, self.n_head, hs).transpose(1, 2))  # (B, nh, T, hs)
        k = self.hook_k(k.view(B, T, self.n_head, hs).transpose(1, 2))  # (B, nh, T, hs)
        v = self.hook_v(v.view(B, T, self.n_head, hs).transpose(1, 2))  # (B, nh, T, hs)
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer, k, v)  # (B, nh, Tk, hs)
        Tk = past + T

        if self.hook_scores.fns or self.hook_pattern.fns:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, Tk)
            scores = self.hook_scores(scores.masked_fill(~causal_mask(T, past, q.device), float("-inf")))
            pattern = self.hook_pattern(F.softmax(scores, dim=-1))  # (B, nh, T, Tk)
            z = (self.attn_dropout(pattern) if self.training and self.dropout else pattern) @ v  # (B, nh, T, hs)
        else:
            p = self.dropout if self.training else 0.0
            if past == 0:
                z = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            elif T == 1:  # one new query sees every cached key: no mask needed
                z = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:
                z = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, past, q.device), dropout_p=p)
        z = self.hook_z(z)  # (B, nh, T, hs)
        y = self.c_proj(z.transpose(1, 2).contiguous().view(B, T, C))  # heads side by side again
        return self.resid_dropout(y) if self.training and self.dropout else y


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.p_dropout = config.dropout
        # GPT-2's "gelu_new" is GELU's tanh approximation; exact erf GELU would break parity at ~1e-4.
        self.activation = config.activation
        self.hook_post = HookPoint()  # (B, T, 4C) after the nonlinearity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        h = F.gelu(h, approximate="tanh") if self.activation == "gelu" else F.relu(h)
        y = self.c_proj(self.hook_post(h))
        return self.dropout(y) if self.training and self.p_dropout else y


def _layer_norm(config: GPTConfig) -> nn.Module:
    if not config.layer_norm:
        return nn.Identity()
    return nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.hook_resid_pre = HookPoint()  # (B, T, C)
        self.ln_1 = _layer_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.hook_resid_mid = HookPoint()  # (B, T, C) after attention
        self.mlp: MLP | None = None
        if config.mlp:
            self.ln_2 = _layer_norm(config)
            self.mlp = MLP(config)
        self.hook_resid_post = HookPoint()  # (B, T, C) after the MLP

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.attn(self.ln_1(x), kv_cache))
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return self.hook_resid_post(x)


@dataclass
class GPTConfig(DictConfig):
    vocab_size: int = 50257  # GPT-2's BPE; a char model has ~65-100
    block_size: int = 1024  # longest context the model sees (positions 0..block_size-1)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768  # C; must be divisible by n_head
    dropout: float = 0.0  # embeddings, attention weights and residual branches
    bias: bool = True  # biases in Linear and LayerNorm (GPT-2: True)
    pos_encoding: str = "learned"  # "learned" (GPT-2) | "sinusoidal" (fixed sin/cos) | "none"
    activation: str = "gelu"  # "gelu" (tanh approximation, GPT-2) | "relu" (the original FFN)
    mlp: bool = True  # False: attention-only blocks (the induction-head lesson)
    layer_norm: bool = True  # False: no LayerNorm anywhere (interpretability toy models; notebook 06)
    tie_embeddings: bool = True  # the LM head reuses the token embedding (GPT-2); False: a matrix of its own
    init_std: float = 0.02  # std of the normal init of embeddings and Linear weights (GPT-2: 0.02)
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not problems and self.n_embd % self.n_head:
            problems.append(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                            f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}")
        if self.pos_encoding not in POS_ENCODINGS:
            problems.append(f"pos_encoding must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}")
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2:
            problems.append(f"sinusoidal positions need an even n_embd, got {self.n_embd}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not isinstance(self.init_std, (int, float)) or not 0.0 < self.init_std <= 1.0:
            problems.append(f"init_std must be in (0, 1], got {self.init_std!r} (GPT-2 uses 0.02)")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head



class GPT(nn.Module):
    """Token + position embeddings, L pre-LN blocks, final LayerNorm, LM head tied to the token embedding.

    GPTConfig can drop the LayerNorms, untie the LM head and widen the init (the toy models of notebook 06);
    such a model saves and loads as a gptviz checkpoint but not as a transformers GPT-2.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        # Modules are declared in forward order, so hook points are listed (and fire) in that order.
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.hook_tok_emb = HookPoint()  # (B, T, C)
        if config.pos_encoding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif config.pos_encoding == "sinusoidal":
            self.register_buffer("pe", sinusoidal_encoding(config.block_size, config.n_embd), persistent=False)
        self.hook_pos_emb = HookPoint()  # (T, C)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = _layer_norm(config)
        self.hook_final_ln = HookPoint()  # (B, T, C)
        if config.tie_embeddings:
            # created on the meta device: its weight is replaced by the embedding's at once (weight tying, as
            # in GPT-2), so a real (V, C) matrix would only be a temporary (150 MB at GPT-2 size)
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False, device="meta")
            self.lm_head.weight = self.wte.weight
        else:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.hook_logits = HookPoint()  # (B, T, V)
        self.hook_dict = hook_points(self)  # forward order; capture() looks names up here
        for name, point in self.hook_dict.items():
            point.name = name
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))
        self._past_len = 0
        _shortcut_children(self)


    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    # ---- forward -------------------------------------------------------------------------------------
    def trunk(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Ids (B, T) -> final hidden states (B, T, C), after ln_f. Used by the LM head and classifiers."""
        past = kv_cache.pos if kv_cache is not None else 0
        self._check_input(idx, past)
        B, T = idx.size()
        if self.hook_tok_emb.fns:
            self._past_len = past  # read by capture's memory-budget check
        x = self.hook_tok_emb(self.wte(idx))  # (B, T, C)
        if self.config.pos_encoding == "learned":
            pos = torch.arange(past, past + T, device=idx.device)
            x = x + self.hook_pos_emb(self.wpe(pos))  # (T, C) broadcast over B
        elif self.config.pos_encoding == "sinusoidal":
            x = x + self.hook_pos_emb(self.pe[past:past + T].to(x.dtype))  # (T, C)
        if self.training and self.config.dropout:  # skipping the call matters for one-token decode steps
            x = self.drop(x)
        for block in self.blocks:
            x = block(x, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.hook_final_ln(self.ln_f(x))  # (B, T, C)

    def forward(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Ids (B, T) -> logits (B, T, V) for every position."""
        return self.hook_logits(self.lm_head(self.trunk(idx, kv_cache)))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean cross-entropy of predicting `targets` (B, T) from `idx` (B, T); a scalar tensor."""
        logits = self(idx)
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                               ignore_index=ignore_index)

    def _check_input(self, idx: torch.Tensor, past: int) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.long, torch.int32):
            got = f"{type(idx).__name__} {tuple(idx.shape)} {idx.dtype}" if isinstance(idx, torch.Tensor) \
                else type(idx).__name__
            raise ValueError(f"expected token ids as an integer tensor of shape (B, T), got {got}; "
                             "for one sequence use torch.tensor([ids])")
        T = idx.size(1)
        if T == 0:
            raise ValueError("got an empty sequence (T=0); give at least one token")
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} positions is longer than block_size="
                             f"{self.config.block_size}; crop it to the last {self.config.block_size} tokens "
                             "(model.generate and gptviz.sampling do this for you)")
        # Out-of-range ids crash deep inside the embedding (a device-side assert on CUDA). Checking costs a
        # sync on GPU, so it runs on CPU always and elsewhere outside training.
        if (idx.device.type == "cpu" or not self.training) and not torch.compiler.is_compiling():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.config.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is outside the vocabulary (0..{self.config.vocab_size - 1}); "
                                 "was the text encoded with this model's tokenizer?")

    # ---- introspection -------------------------------------------------------------------------------
    def hook_shapes(self, batch_size: int, seq_len: int, past_len: int = 0) -> dict[str, tuple[int, ...]]:
        """Shape of every hook's activation for one forward of (batch_size, seq_len) new tokens."""
        c = self.config
        B, T, Tk, C, nh, hs = batch_size, seq_len, past_len + seq_len, c.n_embd, c.n_head, c.head_size
        shapes: dict[str, tuple[int, ...]] = {}
        for name in hook_points(self):
            leaf = name.rsplit(".", 1)[-1]
            shapes[name] = {
                "hook_pos_emb": (T, C), "hook_logits": (B, T, c.vocab_size), "hook_post": (B, T, 4 * C),
                "hook_scores": (B, nh, T, Tk), "hook_pattern": (B, nh, T, Tk),
                "hook_q": (B, nh, T, hs), "hook_k": (B, nh, T, hs), "hook_v": (B, nh, T, hs),
                "hook_z": (B, nh, T, hs),
            }.get(leaf, (B, T, C))
        return shapes

    @property
    def hook_names(self) -> list[str]:
        return list(hook_points(self))

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings and self.config.pos_encoding == "learned":
            n -= self.wpe.weight.numel()
        return n

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        c = self.config
        p = self.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, min(max_len or c.block_size, c.block_size),
                       c.head_size, p.device, p.dtype)

    # ---- generation (thin; the work is in gptviz.sampling) ----------------------------------------------
    def generate(self, idx: torch.Tensor, max_new_tokens: int = 20, **kwargs) -> torch.Tensor:
        """Prompt ids (B, T) -> prompt + new ids (B, T + n), with the knobs of transformers' generate.

        See `gptviz.sampling.generate` for every keyword (do_sample, temperature, top_k, top_p, num_beams,
        repetition_penalty, no_repeat_ngram_size, num_return_sequences, eos_token_id, seed, use_cache).
        """
        from .sampling import generate  # sampling imports model; import here to keep the graph one-way

        return generate(self, idx, max_new_tokens=max_new_tokens, **kwargs)

    # ---- Hugging Face GPT-2 interop ------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, **hf_kwargs) -> GPT:
        """Load a transformers GPT-2 checkpoint: a local folder (config.json + weights) or a hub id ("gpt2")."""
        from . import hf

        return hf.from_pretrained(name_or_dir, **hf_kwargs)

    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """Write a folder that `transformers.GPT2LMHeadModel.from_pretrained(directory)` loads."""
        from . import hf

        return hf.save_pretrained(self, directory, **kwargs)


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
