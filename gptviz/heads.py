"""Head metrics: pure functions of attention patterns (and token ids) that say what a head does.

Every function takes patterns shaped (..., T, Tk) — typically (L, nh, T, T) from a ForwardRecord or
(B, nh, T, T) from a capture — and returns one number per head, shaped like the leading dimensions.
Two helpers read those (L, nh) maps: `top_heads` ranks them, `kv_groups` says which heads share a key/value
head under grouped-query attention.
Nothing here runs a model; `gptviz.records` and `gptviz.train` call these on what they recorded.
"""

from __future__ import annotations

import torch


def previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position t >= 1 to position t - 1. 1.0 = a perfect previous-token head."""
    T = pattern.shape[-2]
    if T < 2:
        return torch.full(pattern.shape[:-2], float("nan"))
    offset = pattern.shape[-1] - T  # queries may sit after cached keys
    rows = torch.arange(1, T)
    return pattern[..., rows, rows + offset - 1].float().mean(-1)


def first_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention mass every query puts on the first position (the "attention sink")."""
    return pattern[..., 0].float().mean(-1)


def entropy(pattern: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean entropy (nats) of each query's attention distribution.

    With `normalize`, each query's entropy is divided by log(number of keys it can see), so 0 = looks at one
    token, 1 = spreads evenly over everything before it; the first query (which sees one key) is skipped.
    """
    p = pattern.float().clamp_min(1e-12)
    h = -(p * p.log()).sum(-1)  # (..., T)
    if not normalize:
        return h.mean(-1)
    T, Tk = pattern.shape[-2], pattern.shape[-1]
    visible = torch.arange(Tk - T + 1, Tk + 1, dtype=torch.float32)  # keys seen by each query
    keep = visible > 1
    if not keep.any():
        return torch.full(pattern.shape[:-2], float("nan"))
    return (h[..., keep] / visible[keep].log()).mean(-1)


def induction_score(pattern: torch.Tensor, ids: torch.Tensor | list[int]) -> torch.Tensor:
    """Mean attention from a token to the position just after its earlier occurrences.

    An induction head, at a repeated token A in "... A B ... A", attends to B. On text with no repeated
    tokens the score is undefined (nan). `ids` are the T tokens the pattern was computed on.
    """
    ids = torch.as_tensor(ids).flatten().tolist()
    T = pattern.shape[-2]
    if len(ids) != T or pattern.shape[-1] != T:
        raise ValueError(
            f"induction_score needs a square (..., T, T) pattern and T ids; got pattern "
            f"{tuple(pattern.shape)} and {len(ids)} ids"
        )
    mask = torch.zeros(T, T, dtype=torch.bool)
    for t in range(T):
        for j in range(1, t + 1):
            if ids[j - 1] == ids[t]:
                mask[t, j] = True  # j is the token that followed an earlier copy of ids[t]
    queries = mask.any(-1)
    if not queries.any():
        return torch.full(pattern.shape[:-2], float("nan"))
    mass = (pattern.float() * mask).sum(-1)  # (..., T)
    return mass[..., queries].mean(-1)


def repeated_random_tokens(
    vocab_size: int, length: int, repeats: int = 2, seed: int = 0, bos: int | None = None
) -> torch.Tensor:
    """Ids (repeats * length,) — a random sequence repeated: the standard probe for induction heads."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, vocab_size, (length,), generator=g).repeat(repeats)
    if bos is not None:
        seq = torch.cat([torch.tensor([bos]), seq])
    return seq


def top_heads(scores: torch.Tensor, n: int = 5) -> list[tuple[int, int, float]]:
    """The `n` best heads of an (L, nh) score map, best first, as (layer, head, score); nan scores are skipped.

    `top_heads(induction_score(record.attention, ids), 3)` -> [(18, 6, 0.89), (17, 3, 0.77), ...]
    """
    if scores.dim() != 2:
        raise ValueError(f"top_heads needs an (L, nh) score map, one number per head; got shape {tuple(scores.shape)}")
    nh = scores.shape[1]
    flat = scores.detach().float().cpu().flatten()
    order = [i for i in flat.argsort(descending=True).tolist() if not torch.isnan(flat[i])]
    return [(i // nh, i % nh, float(flat[i])) for i in order[:n]]


def kv_groups(n_head: int, n_kv_head: int | None = None) -> list[list[int]]:
    """Which query heads share a key/value head (grouped-query attention): entry g lists the heads reading kv head g.

    Query head h reads kv head h // (n_head // n_kv_head), as in transformers' `repeat_kv`: with 9 heads and 3 kv
    heads, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]. Heads in one group see the same keys and values and differ only in
    their queries. n_kv_head None (or = n_head) is ordinary multi-head attention: every head alone.
    """
    n_kv_head = n_kv_head or n_head
    if n_kv_head < 1 or n_head % n_kv_head:
        raise ValueError(f"n_head ({n_head}) must be a positive multiple of n_kv_head ({n_kv_head})")
    size = n_head // n_kv_head
    return [list(range(g * size, (g + 1) * size)) for g in range(n_kv_head)]


def head_metrics(pattern: torch.Tensor, ids: torch.Tensor | list[int] | None = None) -> dict[str, torch.Tensor]:
    """All metrics at once: {name: tensor shaped like the leading (e.g. (L, nh)) dimensions}."""
    out = {
        "previous_token": previous_token_score(pattern),
        "first_token": first_token_score(pattern),
        "entropy": entropy(pattern),
    }
    if ids is not None:
        out["induction"] = induction_score(pattern, ids)
    return out
