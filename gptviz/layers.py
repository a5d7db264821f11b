"""The parts a GPT is built from that are not attention or the MLP: positional encodings (the seed's sinusoidal
formula, RoPE's tables), the KV cache, LayerNorm / RMSNorm with TransformerLens's hook points, and the newest
query's attention row (what generation records beside the fast attention path).

Pure building blocks: they know nothing about GPTConfig or the model that assembles them (gptviz.model).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import HookPoint


def sinusoidal_encoding(n_positions: int, dim: int) -> torch.Tensor:
    """The seed's formula: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (T, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float32)  # (C/2,)
    angle = pos / (10000.0 ** (two_i / dim))  # (T, C/2)
    pe = torch.zeros(n_positions, dim)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return pe


def rotary_tables(
    n_positions: int, rotary_dim: int, theta: float = 10000.0, inv_freq: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's cos and sin, (T, rotary_dim) each: pair i turns by angle pos / theta^(2i / rotary_dim), or by
    pos * inv_freq[i] when the frequencies are given (a scaled RoPE: `rope_frequencies`).

    Laid out as two halves (cat(angles, angles)), the "rotate half" convention of GPT-NeoX, Llama and
    transformers: dim j is paired with dim j + rotary_dim/2, not with its neighbour.
    """
    if inv_freq is None:
        inv_freq = rope_frequencies(rotary_dim, theta)  # (rd/2,)
    angle = torch.arange(n_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (T, rd/2)
    angle = torch.cat((angle, angle), dim=-1)  # (T, rd)
    return angle.cos(), angle.sin()


ROPE_SCALINGS = ("none", "linear", "llama3")


def rope_frequencies(
    rotary_dim: int,
    theta: float,
    scaling: str = "none",
    factor: float = 1.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_positions: int | None = None,
) -> torch.Tensor:
    """(rotary_dim / 2,) float32: how fast each pair of dims turns per position, 1 / theta^(2i / rotary_dim), then
    scaled as transformers scales it (the same float32 operations, so the same bits):

    - "linear": every frequency divided by `factor` (positions interpolated by that factor);
    - "llama3" (Llama 3.1 / 3.2): frequencies whose wavelength is longer than original_max_positions /
      low_freq_factor are divided by `factor`, those shorter than original_max_positions / high_freq_factor are
      kept, and the ones between are blended smoothly.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    if scaling == "linear":
        return inv_freq / factor
    if scaling == "llama3":
        old = original_max_positions
        long_wave, short_wave = old / low_freq_factor, old / high_freq_factor
        wavelength = 2 * math.pi / inv_freq
        scaled = torch.where(wavelength > long_wave, inv_freq / factor, inv_freq)
        blend = (old / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
        blended = (1 - blend) * scaled / factor + blend * scaled
        between = ~(wavelength < short_wave) * ~(wavelength > long_wave)
        return torch.where(between, blended, scaled)
    if scaling != "none":
        raise ValueError(f"rope scaling must be one of {ROPE_SCALINGS}, got {scaling!r}")
    return inv_freq


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn the first cos.shape[-1] dims of x (B, h, T, hs) by the angles of its positions; the rest pass."""
    rd = cos.shape[-1]
    rot, rest = (x, None) if rd == x.shape[-1] else (x[..., :rd], x[..., rd:])
    x1, x2 = rot[..., : rd // 2], rot[..., rd // 2 :]
    turned = rot * cos + torch.cat((-x2, x1), dim=-1) * sin  # (B, h, T, rd)
    return turned if rest is None else torch.cat((turned, rest), dim=-1)


def attention_rows(
    q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None = None, from_key: int = 0
) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)) for C queries: q (..., nh, C, hs), k (..., nkv, Tk, hs) -> (..., nh, C, Tk).

    What the explicit attention path's `hook_pattern` holds for those queries, computed beside the fast SDPA path.
    Grouped by key/value head: query head h reads key head h // (nh / nkv), with no repeated copy of the keys.
    The leading dims (B, or L, B for every layer at once) are the same on q and k. `allowed`: booleans (True = may
    look) broadcastable to (..., nh, C, Tk - from_key), for the keys from `from_key` on (every query sees the
    keys before it), e.g. (C, Tk) or (B, 1, C, Tk); None: every query sees every key.
    """
    *lead, nh, C, hs = q.shape
    nkv, Tk = k.shape[-3], k.shape[-2]
    grouped = q.reshape(*lead, nkv, nh // nkv * C, hs)  # (..., nkv, g * C, hs) the queries of each key head
    scores = (grouped @ k.transpose(-2, -1)).view(*lead, nh, C, Tk) * (1.0 / math.sqrt(hs))  # (..., nh, C, Tk)
    if allowed is not None:  # in place on the masked keys only: a masked copy of all the scores costs more
        scores[..., from_key:].masked_fill_(~allowed, float("-inf"))
    return F.softmax(scores, dim=-1)


def newest_attention_row(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The last query's row of `attention_rows`: q (..., nh, T, hs), k (..., nkv, Tk, hs) -> (..., nh, Tk).

    `mask`: (B, 1, T, Tk) or (T, Tk) booleans (True = may look) or None; without one the last query sees every
    key (causal attention's last row). Rows sum to 1.
    """
    return attention_rows(q[..., -1:, :], k, None if mask is None else mask[..., -1:, :])[..., 0, :]


class KVCache:
    """Keys and values of past positions for every layer, preallocated: (L, B, nkv, max_len, hs) each.

    Each attention layer writes its new keys/values at [pos, pos + T); the model advances `pos` once per
    forward. Keys are stored after RoPE (as transformers does), so a cached key never turns again.
    Grouped-query models store only their nkv key/value heads. Beam search reorders the batch with `reorder`.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_len: int,
        head_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        shape = (n_layer, batch_size, n_head, max_len, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.limit = max_len  # a cache may grow up to this many positions (model(..., use_cache=True) sets it)
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new (B, nkv, T, hs) keys/values; return all keys/values so far, (B, nkv, Tk, hs)."""
        end = self.pos + k.shape[2]
        if end > self.max_len and end <= self.limit:
            self._grow(min(self.limit, max(end, 2 * self.max_len)))
        if end > self.max_len:
            raise ValueError(
                f"KV cache holds {self.max_len} positions; cannot add {k.shape[2]} at {self.pos}. "
                "Crop the context (gptviz.sampling slides the window for you)."
            )
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def _grow(self, max_len: int) -> None:
        """Room for `max_len` positions, the filled ones copied (every layer's, before the first layer writes)."""
        L, B, nkv, _, hs = self.k.shape
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_zeros((L, B, nkv, max_len, hs))
            new[:, :, :, : self.pos] = old[:, :, :, : self.pos]
            setattr(self, name, new)
        self.max_len = max_len

    def advance(self, n: int) -> None:
        self.pos += n

    def get_seq_length(self, layer: int = 0) -> int:
        """Positions held (transformers' Cache spelling of `pos`)."""
        return self.pos

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (e.g. the beams that survived a beam-search step)."""
        if torch.equal(index, torch.arange(self.batch_size, device=index.device)):
            return  # beams kept their order: nothing to move
        # only the filled part moves; the rest of the preallocated buffer is overwritten later anyway
        self.k[:, :, :, : self.pos] = self.k[:, index, :, : self.pos]
        self.v[:, :, :, : self.pos] = self.v[:, index, :, : self.pos]

    def reset(self) -> None:
        self.pos = 0


class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens's hook points: `hook_scale` (B, T, 1), `hook_normalized` (B, T, C).

    With nobody listening it is `F.layer_norm` (nn.LayerNorm's numbers exactly); with a listener the explicit
    formula runs, so the scale exists to be read or replaced. Parameters are nn.LayerNorm's (weight, bias).
    """

    def __init__(self, dim: int, eps: float, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps
        self.hook_scale = HookPoint()  # (B, T, 1) sqrt(var + eps)
        self.hook_normalized = HookPoint()  # (B, T, C) (x - mean) / scale, before weight and bias (TransformerLens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.hook_scale.fns or self.hook_normalized.fns):
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # (B, T, 1)
        y = self.hook_normalized(x / scale) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: LayerNorm without the mean and the bias (Llama, Qwen2).

    Computed in float32 and cast back, as transformers does, so bf16 models normalise the same way.
    Hook points as LayerNorm's: `hook_scale` (B, T, 1), `hook_normalized` (B, T, C).
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.hook_scale = HookPoint()  # (B, T, 1) sqrt(mean(x^2) + eps), in float32
        self.hook_normalized = HookPoint()  # (B, T, C) x / scale, before the weight (TransformerLens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        scale = self.hook_scale(torch.sqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)) if self.hook_scale.fns else None
        h = h / scale if scale is not None else h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * self.hook_normalized(h.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
