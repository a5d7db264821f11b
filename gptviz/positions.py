"""Position information and what it alone does to attention, computed from a GPT's weights or from RoPE's formula.

    P = position_matrix(model, T)          # (T, C): learned `wpe` rows, or the fixed sinusoidal `pe`
    S = position_scores(model, T)          # (L, nh, T, T): position-only q·k/√hs, NaN where masked
    score_spread(S)                        # (L, nh): how far position alone moves each head's scores

RoPE adds no position vector: it turns each pair of a head's q and k dims by an angle that grows with the
position, so q·k depends on how far apart two tokens are, never on where they are:

    rope_settings(model)                   # (rd, theta): rotary dims per head and the base
    rope_frequencies(model)                # (rd/2,): radians per position that pair i turns
    rope_angles(model, T)                  # (T, rd/2): the angle of pair i at position t (radians)
    rope_relative_scores(model, D)         # RopeScores: q·k of the same vector Δ = 0..D apart
    rope_score_matrix(model, T)            # (T, T): q·k of the ones vector at every pair of positions
    rope_head_scores(model, D, layer, head)  # RopeHeadScores: a real head's q·k of one token Δ apart

The `rope_*` functions take a rotary GPT, its GPTConfig, or a rotary dim as an int (then `theta` says the base).
`position_matrix` only reads a weight table; `position_scores` and `rope_head_scores` run the model's own layers
(ln_1, the q/k projection) on position vectors or token embeddings alone: no forward pass. Drawing them is
`gptviz.plots.positions`' job (the views take these arrays and never call a layer); the sinusoidal and RoPE
tables the model itself uses live in `gptviz.model`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .config import GPTConfig
from .model import apply_rotary, rotary_tables

ROPE_NO_VECTOR = (
    "RoPE adds no position vector; it turns q and k — see rope_angles / rope_relative_scores "
    "(gptviz.positions) for what it does to attention"
)


def position_matrix(source, T: int | None = None) -> np.ndarray:
    """Position vectors (T, C) of a GPT (learned `wpe` or fixed sinusoidal `pe`) or of a given (T, C) matrix."""
    if isinstance(source, torch.nn.Module):
        kind = source.config.pos_encoding
        if kind == "learned":
            source = source.wpe.weight
        elif kind == "sinusoidal":
            source = source.pe
        elif kind == "rotary":
            raise ValueError(f"this model's positions are rotary: {ROPE_NO_VECTOR}")
        else:
            raise ValueError(
                "this model has no position embeddings (pos_encoding='none'): order reaches it "
                "only through the causal mask"
            )
    if isinstance(source, torch.Tensor):
        m = source.detach().float().cpu().numpy()
    else:
        m = np.asarray(source, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"expected a (T, C) position matrix, got shape {m.shape}")
    return m[:T] if T else m


def _query_key(block, x: torch.Tensor, config: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's q and k of the residual rows x (n, C), every query head with its key: (nh, n, hs) each.

    c_attn gives q (nh*hs), k (nkv*hs), v (nkv*hs); with grouped-query attention each key head serves nh/nkv
    query heads (query head h reads key head h // (nh/nkv), as the model does)."""
    nh, nkv, hs = config.n_head, config.kv_heads, config.head_size
    n = x.shape[0]
    q, k, _ = block.attn.c_attn(block.ln_1(x)).split((nh * hs, nkv * hs, nkv * hs), dim=1)
    q = q.view(n, nh, hs).transpose(0, 1)  # (nh, n, hs)
    k = k.view(n, nkv, hs).transpose(0, 1)  # (nkv, n, hs)
    return q, k.repeat_interleave(nh // nkv, dim=0)  # (nh, n, hs) each


@torch.no_grad()
def position_scores(model, T: int | None = None) -> torch.Tensor:
    """Position-only attention scores (L, nh, T, T), NaN where masked; T defaults to the block size.

    Definition: the score head h of layer l gives key j from query i when the residual stream holds only
    the position vectors P, S[i, j] = (ln_1(p_i) W_Q + b_Q) · (ln_1(p_j) W_K + b_K) / sqrt(hs). It is exact
    for layer 0 with the token embeddings removed, and a probe (same weights, positions only) for deeper
    layers. Its spread over keys (`score_spread`) says how strongly position alone steers where the head looks.
    A rotary model has no position vectors to feed (see `rope_relative_scores` and `rope_head_scores`).
    """
    if model.config.pos_encoding == "rotary":
        raise ValueError(
            f"position_scores needs position vectors, and this model's positions are rotary: "
            f"{ROPE_NO_VECTOR}; rope_head_scores shows a head's q·k against distance"
        )
    P = torch.as_tensor(position_matrix(model, T or model.config.block_size), device=model.device)
    P = P.to(model.wte.weight.dtype)
    n, hs = P.shape[0], model.config.head_size
    out = []
    for block in model.blocks:
        q, k = _query_key(block, P, model.config)  # (nh, T, hs) each
        out.append((q @ k.transpose(1, 2)).float().cpu() / math.sqrt(hs))  # (nh, T, T)
    s = torch.stack(out)  # (L, nh, T, T)
    return s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("nan"))


def score_spread(scores) -> np.ndarray:
    """(L, nh): mean over queries t >= 1 of the standard deviation, over the keys it sees, of position scores."""
    s = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
    return np.nanmean(np.nanstd(s[..., 1:, :], axis=-1), axis=-1)


# ---- RoPE: angles that turn q and k -------------------------------------------------------------------------
def rope_settings(source, theta: float | None = None) -> tuple[int, float]:
    """(rotary_dim, theta): RoPE's settings of a rotary GPT or GPTConfig, or a rotary dim given as an int with
    `theta` (default 10000, Llama's; SmolLM2 uses 100000). A model's own theta cannot be overridden."""
    config = getattr(source, "config", source)
    if isinstance(config, GPTConfig):
        if config.pos_encoding != "rotary":
            raise ValueError(
                f"this model's positions are {config.pos_encoding!r}, not rotary; to see RoPE at this "
                f"width pass its head size as an int, e.g. rope_angles({config.head_size}, T)"
            )
        if theta is not None and theta != config.rope_theta:
            raise ValueError(
                f"the model turns with rope_theta={config.rope_theta:g}; leave theta out, or pass "
                f"the rotary dim {config.rotary_size} as an int to try theta={theta:g}"
            )
        if config.rope_scaling != "none":
            warnings.warn(
                f"this model scales its RoPE ({config.rope_scaling}, factor {config.rope_factor:g}); these curves "
                "show plain RoPE with its rope_theta (the model's own turning tables are model.rope_cos / rope_sin)",
                UserWarning,
                stacklevel=3,
            )
        return config.rotary_size, float(config.rope_theta)
    if isinstance(source, bool) or not isinstance(source, (int, np.integer)):
        raise TypeError(f"expected a rotary GPT, its GPTConfig or a rotary dim (int), got {type(source).__name__}")
    rd, theta = int(source), 10000.0 if theta is None else float(theta)
    if rd < 2 or rd % 2:
        raise ValueError(f"RoPE turns dims in pairs: the rotary dim must be even and at least 2, got {rd}")
    if theta <= 1:
        raise ValueError(f"theta must be above 1, got {theta:g} (Llama: 10000, SmolLM2: 100000)")
    return rd, theta


def rope_frequencies(source, theta: float | None = None) -> np.ndarray:
    """(rd/2,) radians per position by which pair i (dims i and i + rd/2, "rotate half") turns: theta^(-2i/rd).

    Pair 0 turns 1 radian per position (a full turn every 2π ≈ 6.3 tokens); the last pair barely moves."""
    rd, theta = rope_settings(source, theta)
    return theta ** (-np.arange(0, rd, 2, dtype=float) / rd)


def rope_wavelengths(source, theta: float | None = None) -> np.ndarray:
    """(rd/2,) positions per full turn of each pair: 2π / frequency (2π for pair 0, ~2π·theta for the last)."""
    return 2 * math.pi / rope_frequencies(source, theta)


def rope_angles(source, T: int, theta: float | None = None) -> np.ndarray:
    """(T, rd/2) the angle (radians, not wrapped) by which pair i is turned at position t: t · theta^(-2i/rd).

    The same angles as the sinusoidal encoding's (with C = rd); RoPE turns q and k by them instead of adding
    their sin and cos to the token vector. A model's `rope_cos[:, :rd/2]` is cos of this (in float32)."""
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    return np.arange(T, dtype=float)[:, None] * rope_frequencies(source, theta)[None, :]


@dataclass
class RopeScores:
    """q·k of the SAME vector x placed Δ positions apart (query at m + Δ, key at m), for Δ = 0..D; RoPE makes
    it the same for every m. Raw scores (no 1/√hs): at Δ = 0 each is |x|².

    Pair i of x (dims i, i + rd/2) contributes |x_pair|² · cos(Δ f_i), so the curve is a sum of cosines: all
    in step at Δ = 0, drifting out of step as Δ grows (the "long-term decay"), with bumps where some realign.
    """

    rotary_dim: int  # rd
    theta: float
    distance: np.ndarray  # (D+1,) Δ = 0..D
    ones: np.ndarray  # (D+1,) the all-ones vector's score: rd at Δ = 0
    random: np.ndarray  # (n, D+1) scores of n random Gaussian vectors, each against itself

    @property
    def ones_fraction(self) -> np.ndarray:
        """(D+1,) the ones vector's score as a fraction of |x|² (1 at Δ = 0)."""
        return self.ones / self.ones[0]

    @property
    def random_fraction(self) -> np.ndarray:
        """(n, D+1) each random vector's score as a fraction of its own |x|²."""
        return self.random / self.random[:, :1]

    def first_below(self, level: float = 0.5) -> int | None:
        """The first Δ where the ones vector's fraction drops below `level`, or None within 0..D."""
        below = np.flatnonzero(self.ones_fraction < level)
        return int(self.distance[below[0]]) if below.size else None


def _pair_scores(pair_sq: np.ndarray, freqs: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """(n, D+1) Σ_i pair_sq[:, i] cos(Δ f_i): q·k of vectors whose pairs hold pair_sq (n, rd/2)."""
    return pair_sq @ np.cos(freqs[:, None] * distance[None, :])


def rope_relative_scores(
    source, max_distance: int = 1024, theta: float | None = None, n_random: int = 256, seed: int = 0
) -> RopeScores:
    """q·k between the same vector at positions m and m + Δ, Δ = 0..max_distance, for the all-ones vector and
    for `n_random` Gaussian vectors (seeded): see `RopeScores`. Exact (float64), from RoPE's formula; it equals
    rotating with `gptviz.model.apply_rotary` at any offset m (the tests check that), and the average random
    vector follows the ones vector, since each pair's expected |x_pair|² is the same."""
    rd, theta = rope_settings(source, theta)
    if max_distance < 1:
        raise ValueError(f"max_distance must be at least 1, got {max_distance}")
    freqs = rope_frequencies(rd, theta)
    distance = np.arange(max_distance + 1)
    x = np.random.default_rng(seed).standard_normal((n_random, rd))
    pair_sq = x[:, : rd // 2] ** 2 + x[:, rd // 2 :] ** 2  # (n, rd/2): rotate-half pairs dim j with j + rd/2
    ones = _pair_scores(np.full((1, rd // 2), 2.0), freqs, distance)[0]
    return RopeScores(rd, theta, distance, ones, _pair_scores(pair_sq, freqs, distance))


def rope_score_matrix(source, T: int = 64, theta: float | None = None) -> np.ndarray:
    """(T, T) q·k / |x|² of the all-ones vector x turned at query position i and at key position j, computed by
    turning it at every position with the model's own `rotary_tables` and `apply_rotary` (float32): each
    diagonal i - j = Δ is constant (RoPE's translation invariance) and equals `rope_relative_scores`' curve."""
    rd, theta = rope_settings(source, theta)
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    cos, sin = rotary_tables(T, rd, theta)  # (T, rd) each
    turned = apply_rotary(torch.ones(1, 1, T, rd), cos, sin)[0, 0]  # (T, rd): x at positions 0..T-1
    return (turned @ turned.T).double().numpy() / rd  # (T, T)


@dataclass
class RopeHeadScores:
    """A real head's score q·k/√hs of a token attending to the same token Δ positions back, Δ = 0..D.

    One row per token: the head's query of the token at position Δ and its key of the token at position 0,
    turned by the model's own RoPE tables. Exact for layer 0 (its input is the token embedding alone, since
    RoPE adds no position vector); a probe (same weights, embeddings only) for deeper layers.
    """

    layer: int
    head: int
    kv_head: int  # the key/value head this query head reads (grouped-query attention)
    token_ids: list[int]
    distance: np.ndarray  # (D+1,)
    scores: np.ndarray  # (n_tokens, D+1)


def default_token_ids(vocab_size: int, n: int = 32) -> list[int]:
    """n token ids spread evenly over the vocabulary (a mix, without a tokenizer)."""
    return sorted({int(i) for i in np.linspace(0, vocab_size - 1, min(n, vocab_size)).round()})


@torch.no_grad()
def rope_head_scores(
    model, max_distance: int = 256, layer: int = 0, head: int = 0, token_ids: list[int] | None = None
) -> RopeHeadScores:
    """How one head of a rotary model scores the same token Δ = 0..max_distance positions back: see
    `RopeHeadScores`. `token_ids` default to 32 ids spread over the vocabulary (`default_token_ids`)."""
    c = model.config
    rope_settings(model)  # a rotary model, or say what to do instead
    if not (0 <= layer < c.n_layer and 0 <= head < c.n_head):
        raise ValueError(f"layer {layer}, head {head} out of range (L={c.n_layer}, nh={c.n_head})")
    D = min(max_distance, c.block_size - 1)
    ids = default_token_ids(c.vocab_size) if token_ids is None else [int(i) for i in token_ids]
    bad = [i for i in ids if not 0 <= i < c.vocab_size]
    if not ids or bad:
        raise ValueError(f"token ids must be 0..{c.vocab_size - 1}, got {bad or 'none'}")
    x = model.wte.weight[torch.tensor(ids, device=model.device)]  # (n, C)
    q, k = _query_key(model.blocks[layer], x, c)  # (nh, n, hs) each
    q, k = q[head], k[head]  # (n, hs)
    cos, sin = model.rope_cos[: D + 1].to(q.dtype), model.rope_sin[: D + 1].to(q.dtype)  # (D+1, rd)
    q_at = apply_rotary(q[:, None, None, :].expand(-1, 1, D + 1, -1), cos, sin)[:, 0]  # (n, D+1, hs): query at Δ
    k_at0 = apply_rotary(k[:, None, None, :], cos[:1], sin[:1])[:, 0, 0]  # (n, hs): key at 0 (no turn)
    s = (q_at @ k_at0[:, :, None])[..., 0].float().cpu().numpy() / math.sqrt(c.head_size)  # (n, D+1)
    return RopeHeadScores(layer, head, head // (c.n_head // c.kv_heads), ids, np.arange(D + 1), s)
