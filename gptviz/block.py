"""One transformer block and its two halves: causal self-attention and the MLP, with their hook points.

Read top to bottom in forward order: attention, MLP, block. Shapes as in `gptviz.model`'s legend (B batch, T query
positions, Tk key positions, C width, nh heads, nkv key/value heads, hs head size).

This module knows nothing of embeddings, the LM head, the loss or generation (`gptviz.model` assembles blocks into
a GPT); positional tables, the KV cache and the norms are `gptviz.layers`'s, weight views `gptviz.weights`'s.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTConfig
from .hooks import HookPoint
from .layers import KVCache, LayerNorm, RMSNorm, apply_rotary, newest_attention_row
from .weights import AttentionWeights, MLPWeights

__all__ = ["Block", "CausalSelfAttention", "MLP", "causal_mask", "norm_layer"]


def causal_mask(T: int, past: int, device: torch.device) -> torch.Tensor:
    """(T, past + T) booleans, True where query past + i may look at key j (j <= past + i)."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


def norm_layer(config: GPTConfig) -> nn.Module:
    """The norm a block (or the final ln_f) uses: LayerNorm, RMSNorm, or none (nn.Identity) for toy models."""
    if not config.layer_norm:
        return nn.Identity()
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.layer_norm_epsilon)
    return LayerNorm(config.n_embd, config.layer_norm_epsilon, bias=config.bias)


class CausalSelfAttention(AttentionWeights, nn.Module):
    """Multi-head causal self-attention, softmax(QK^T / sqrt(hs)) V, with grouped-query heads and RoPE when asked.

    Fast path: `scaled_dot_product_attention` (flash on GPU). When someone listens to `hook_attn_scores` or
    `hook_pattern`, this layer runs the explicit path instead, so the attention map exists to be recorded.
    Hook shapes are TransformerLens's: q/k/v/z (B, T, heads, hs), the hooks see views (no copy on the fast path).
    With grouped-query attention query head h reads key/value head h // (nh / nkv), as in transformers.
    """

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.kv_heads, config.head_size
        self.q_size, self.kv_size = self.n_head * self.head_size, self.n_kv_head * self.head_size
        # q, k, v of all heads in one matmul: (nh + 2 nkv) * hs outputs
        self.c_attn = nn.Linear(config.n_embd, self.q_size + 2 * self.kv_size, bias=config.has_bias("qkv"))
        self.c_proj = nn.Linear(self.q_size, config.n_embd, bias=config.has_bias("attn_out"))
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.hook_q = HookPoint()  # (B, T, nh, hs)
        self.hook_k = HookPoint()  # (B, T, nkv, hs) new positions only
        self.hook_v = HookPoint()  # (B, T, nkv, hs) new positions only
        if config.pos_encoding == "rotary":
            self.hook_rot_q = HookPoint()  # (B, T, nh, hs) after RoPE
            self.hook_rot_k = HookPoint()  # (B, T, nkv, hs) after RoPE, new positions only
        self.hook_attn_scores = HookPoint()  # (B, nh, T, Tk) masked (-inf), pre-softmax
        self.hook_pattern = HookPoint()  # (B, nh, T, Tk) post-softmax, pre-dropout
        self.hook_z = HookPoint()  # (B, T, nh, hs) attention-weighted values, before c_proj
        self.hook_result = HookPoint()  # (B, T, nh, C) each head's output; computed only when someone listens
        # Generation sets a list here for one forward: the newest query's attention row (B, nh, Tk) is appended,
        # computed beside the fast path (gptviz.layers.newest_attention_row), so recording needs no explicit path.
        self.row_sink: list[torch.Tensor] | None = None

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`mask`: (B, 1, T, Tk) booleans, True where a query may look (causal and padding together), or None."""
        B, T, C = x.size()
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_size
        q, k, v = self.c_attn(x).split((self.q_size, self.kv_size, self.kv_size), dim=2)
        q = self.hook_q(q.view(B, T, nh, hs)).transpose(1, 2)  # (B, nh, T, hs)
        k = self.hook_k(k.view(B, T, nkv, hs)).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.hook_v(v.view(B, T, nkv, hs)).transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:  # cos, sin: (T, rd), or (B, 1, T, rd) when padding shifts each row's positions
            q = self.hook_rot_q(apply_rotary(q, *rope).transpose(1, 2)).transpose(1, 2)  # (B, nh, T, hs)
            k = self.hook_rot_k(apply_rotary(k, *rope).transpose(1, 2)).transpose(1, 2)  # (B, nkv, T, hs)
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer, k, v)  # (B, nkv, Tk, hs)

        if self.hook_attn_scores.fns or self.hook_pattern.fns:
            if nkv != nh:  # every query head gets its group's key/value head
                k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)  # (B, nh, Tk, hs)
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, Tk)
            allowed = causal_mask(T, past, q.device) if mask is None else mask  # (T, Tk) or (B, 1, T, Tk)
            scores = self.hook_attn_scores(scores.masked_fill(~allowed, float("-inf")))
            pattern = self.hook_pattern(F.softmax(scores, dim=-1))  # (B, nh, T, Tk)
            if self.row_sink is not None:  # the row as listeners left it (they may have edited scores or pattern)
                self.row_sink.append(pattern[:, :, -1])  # (B, nh, Tk)
            z = (self.attn_dropout(pattern) if self.training and self.dropout else pattern) @ v  # (B, nh, T, hs)
        else:
            if self.row_sink is not None:
                self.row_sink.append(newest_attention_row(q, k, mask))  # (B, nh, Tk)
            p = self.dropout if self.training else 0.0
            gqa = nkv != nh
            if mask is not None:
                z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, enable_gqa=gqa)
            elif past == 0:
                z = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=gqa)
            elif T == 1:  # one new query sees every cached key: no mask needed
                z = F.scaled_dot_product_attention(q, k, v, dropout_p=p, enable_gqa=gqa)
            else:
                z = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=causal_mask(T, past, q.device), dropout_p=p, enable_gqa=gqa
                )
        z = self.hook_z(z.transpose(1, 2))  # (B, T, nh, hs)
        if self.hook_result.fns:  # per-head outputs z_h W_O[h], summed below: the same y, one head at a time
            W_O = self.c_proj.weight.view(C, nh, hs)  # (C, nh, hs)
            result = self.hook_result(torch.einsum("btnh,cnh->btnc", z, W_O))  # (B, T, nh, C)
            y = result.sum(2) + self.c_proj.bias if self.c_proj.bias is not None else result.sum(2)
        else:
            y = self.c_proj(z.reshape(B, T, self.q_size))  # heads side by side again
        return self.resid_dropout(y) if self.training and self.dropout else y


_ACTIVATION_FNS = {
    # GPT-2's "gelu_new" is GELU's tanh approximation; exact erf GELU would break its parity at ~1e-4.
    "gelu": lambda h: F.gelu(h, approximate="tanh"),
    "gelu_exact": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(MLPWeights, nn.Module):
    """c_proj(act(c_fc(x))), or gated: c_proj(act(gate) * up) with [gate, up] = c_fc(x) (SwiGLU)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        width, bias = config.mlp_width, config.has_bias("mlp")
        self.gated = config.mlp_gated
        self.c_fc = nn.Linear(config.n_embd, 2 * width if self.gated else width, bias=bias)  # gated: [gate; up]
        self.c_proj = nn.Linear(width, config.n_embd, bias=bias)
        self.dropout = nn.Dropout(config.dropout)
        self.p_dropout = config.dropout
        self.activation = config.activation
        self.act = _ACTIVATION_FNS[config.activation]
        self.hook_pre = HookPoint()  # (B, T, n_inner) before the nonlinearity (gated: the gate)
        if self.gated:
            self.hook_pre_linear = HookPoint()  # (B, T, n_inner) the linear "up" half of a gated MLP
        self.hook_post = HookPoint()  # (B, T, n_inner) after the nonlinearity (gated: act(gate) * up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)  # (B, T, n_inner) each
            h = self.act(self.hook_pre(gate)) * self.hook_pre_linear(up)
        else:
            h = self.act(self.hook_pre(h))
        y = self.c_proj(self.hook_post(h))
        return self.dropout(y) if self.training and self.p_dropout else y


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)); or both at once (parallel, NeoX)."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.parallel = config.parallel_residual and config.mlp
        self.hook_resid_pre = HookPoint()  # (B, T, C)
        self.ln_1 = norm_layer(config)
        self.attn = CausalSelfAttention(config, layer)
        self.hook_attn_out = HookPoint()  # (B, T, C) what attention adds to the residual stream
        if not self.parallel:
            self.hook_resid_mid = HookPoint()  # (B, T, C) after attention (a parallel block has no middle)
        self.mlp: MLP | None = None
        if config.mlp:
            self.ln_2 = norm_layer(config)
            self.mlp = MLP(config)
            self.hook_mlp_out = HookPoint()  # (B, T, C) what the MLP adds
        self.hook_resid_post = HookPoint()  # (B, T, C) after the MLP

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        if self.parallel:  # both branches read the same x (GPT-NeoX's use_parallel_residual)
            attn = self.hook_attn_out(self.attn(self.ln_1(x), kv_cache, rope, mask))
            return self.hook_resid_post(x + attn + self.hook_mlp_out(self.mlp(self.ln_2(x))))
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln_1(x), kv_cache, rope, mask)))
        if self.mlp is not None:
            x = x + self.hook_mlp_out(self.mlp(self.ln_2(x)))
        return self.hook_resid_post(x)
