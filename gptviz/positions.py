"""Position vectors and what they alone do to attention, computed from a GPT's weights.

    P = position_matrix(model, T)          # (T, C): learned `wpe` rows, or the fixed sinusoidal `pe`
    S = position_scores(model, T)          # (L, nh, T, T): position-only q·k/√hs, NaN where masked
    score_spread(S)                        # (L, nh): how far position alone moves each head's scores

`position_matrix` only reads a weight table; `position_scores` runs the model's own layers (ln_1, the q/k
projection) on position vectors alone: no tokens, no forward pass. Drawing them is `gptviz.plots.positions`' job
(the views take these arrays and never call a layer); the sinusoidal formula itself lives in `gptviz.model`.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def position_matrix(source, T: int | None = None) -> np.ndarray:
    """Position vectors (T, C) of a GPT (learned `wpe` or fixed sinusoidal `pe`) or of a given (T, C) matrix."""
    if isinstance(source, torch.nn.Module):
        kind = source.config.pos_encoding
        if kind == "learned":
            source = source.wpe.weight
        elif kind == "sinusoidal":
            source = source.pe
        else:
            raise ValueError("this model has no position embeddings (pos_encoding='none'): order reaches it "
                             "only through the causal mask")
    if isinstance(source, torch.Tensor):
        m = source.detach().float().cpu().numpy()
    else:
        m = np.asarray(source, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"expected a (T, C) position matrix, got shape {m.shape}")
    return m[:T] if T else m


@torch.no_grad()
def position_scores(model, T: int | None = None) -> torch.Tensor:
    """Position-only attention scores (L, nh, T, T), NaN where masked; T defaults to the block size.

    Definition: the score head h of layer l gives key j from query i when the residual stream holds only
    the position vectors P, S[i, j] = (ln_1(p_i) W_Q + b_Q) · (ln_1(p_j) W_K + b_K) / sqrt(hs). It is exact
    for layer 0 with the token embeddings removed, and a probe (same weights, positions only) for deeper
    layers. Its spread over keys (`score_spread`) says how strongly position alone steers where the head looks.
    """
    P = torch.as_tensor(position_matrix(model, T or model.config.block_size), device=model.device)
    P = P.to(model.wte.weight.dtype)
    nh, hs, C = model.config.n_head, model.config.head_size, model.config.n_embd
    n = P.shape[0]
    out = []
    for block in model.blocks:
        q, k, _ = block.attn.c_attn(block.ln_1(P)).split(C, dim=1)
        q = q.view(n, nh, hs).transpose(0, 1)  # (nh, T, hs)
        k = k.view(n, nh, hs).transpose(0, 1)
        out.append((q @ k.transpose(1, 2)).float().cpu() / math.sqrt(hs))  # (nh, T, T)
    s = torch.stack(out)  # (L, nh, T, T)
    return s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("nan"))


def score_spread(scores) -> np.ndarray:
    """(L, nh): mean over queries t >= 1 of the standard deviation, over the keys it sees, of position scores."""
    s = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
    return np.nanmean(np.nanstd(s[..., 1:, :], axis=-1), axis=-1)
