"""Activation patching and head ablation: run the model with one activation swapped, return a table of a metric.

Patching (TransformerLens's `patching` module, the same semantics): run the *corrupted* input, copy in the
*clean* run's activation at one site — a (layer, position) of the residual stream, or one head — and measure
`metric(logits)`. Where the metric jumps back towards its clean value, that activation carries the answer.

    metric = logit_diff(answer_id, wrong_id)                     # logits (B, T, V) -> one number
    table = patch_resid(model, clean_ids, corrupted_ids, metric)  # (L, T)
    norm = normalized_metric(metric(model(clean_ids)), metric(model(corrupted_ids)))
    norm(table)                                                    # 0 = corrupted .. 1 = clean

| function | patches | returns |
|---|---|---|
| `patch_resid` | `blocks.{l}.hook_{site}` at one position (resid_pre/mid/post, attn_out, mlp_out) | (L, T) |
| `patch_heads` | one head's `attn.hook_z` / `hook_pattern` / `hook_result`, at all positions or one | (L, nh) |
| `ablate_heads` | one head's z set to zero or to its mean | (L, nh) change of the metric (default: loss) |

`patch_heads(..., by_position=True)` patches one head at one position: (L, T, nh).
Many patched runs share one forward pass: the corrupted batch is repeated once per patch and each copy gets its
own patch, so an (L, T) table costs about L forward passes, not L x T. Tables come back as float32 on the CPU.
This module runs the model and returns tensors; `gptviz.plots.patching` draws them. Choosing the clean and
corrupted inputs, and a metric that separates them, is the caller's job; `logit_diff` and `normalized_metric`
cover the usual choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .hooks import HookPoint, capture, hook_points, hooks
from .model import GPT, evaluating

__all__ = [
    "RESID_SITES",
    "HEAD_SITES",
    "logit_diff",
    "normalized_metric",
    "next_token_loss",
    "patch_resid",
    "patch_heads",
    "ablate_heads",
]

Metric = Callable[[torch.Tensor], "torch.Tensor | float"]

# site -> hook name at layer l; the residual-stream sites hold (B, T, C) activations
RESID_SITES = {
    "resid_pre": "blocks.{l}.hook_resid_pre",
    "resid_mid": "blocks.{l}.hook_resid_mid",
    "resid_post": "blocks.{l}.hook_resid_post",
    "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out",
}
# per-head sites: z and result are (B, T, nh, ...), the pattern (B, nh, T, Tk)
HEAD_SITES = {
    "z": "blocks.{l}.attn.hook_z",
    "pattern": "blocks.{l}.attn.hook_pattern",
    "result": "blocks.{l}.attn.hook_result",
}
ABLATIONS = ("zero", "mean")
LOGITS_BUDGET = 2**25  # logits elements per forward pass (128 MB in float32) when choosing how many runs to batch


# ---- metrics ----------------------------------------------------------------------------------------------
def logit_diff(
    answer_id: int | Sequence[int] | torch.Tensor, wrong_id: int | Sequence[int] | torch.Tensor, position: int = -1
) -> Metric:
    """A metric: logit of the right answer minus logit of the wrong one at `position`, averaged over the batch.

    Ids are one int for every row, or one per row (B,). Positive: the model prefers the answer.
    """
    if not isinstance(position, int):
        raise TypeError(f"position must be an int (negative counts from the end), got {type(position).__name__}")

    def metric(logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 3:
            raise ValueError(f"logit_diff's metric takes logits (B, T, V), got shape {tuple(logits.shape)}")
        B, T, V = logits.shape
        if not -T <= position < T:
            raise ValueError(f"position {position} is outside the input's {T} positions")
        row = logits[:, position].float()  # (B, V)
        ids = [_per_row(i, B, V, what) for i, what in ((answer_id, "answer_id"), (wrong_id, "wrong_id"))]
        right, wrong = (row.gather(1, i.to(row.device)[:, None])[:, 0] for i in ids)  # (B,) each
        return (right - wrong).mean()

    metric.__name__ = "logit_diff"
    return metric


def _per_row(ids: int | Sequence[int] | torch.Tensor, B: int, V: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if t.numel() != 1 and t.numel() != B:
        raise ValueError(f"{what} gives {t.numel()} ids for a batch of {B} rows; give one int, or one id per row")
    bad = [i for i in t.tolist() if not 0 <= i < V]
    if bad:
        raise ValueError(f"{what} {bad[0]} is outside the vocabulary (0..{V - 1})")
    return t.expand(B)


def normalized_metric(
    clean_value: float | torch.Tensor, corrupted_value: float | torch.Tensor
) -> Callable[[torch.Tensor | float], torch.Tensor | float]:
    """fn(value) = (value - corrupted) / (clean - corrupted): 0 = as the corrupted run, 1 = as the clean run.

    Works on one number or elementwise on a whole table: `normalized_metric(clean, corrupted)(patch_resid(...))`.
    """
    clean, corrupted = _scalar(clean_value, "clean_value"), _scalar(corrupted_value, "corrupted_value")
    gap = clean - corrupted
    if abs(gap) < 1e-9 * max(1.0, abs(clean)):
        raise ValueError(
            f"the metric is the same on the clean and the corrupted input ({clean:.6g}), so there is nothing to "
            "restore: choose a corruption that changes the answer, or a metric that sees the change"
        )

    def normalize(value: torch.Tensor | float) -> torch.Tensor | float:
        return (value - corrupted) / gap

    normalize.__name__ = f"normalized(clean={clean:.4g}, corrupted={corrupted:.4g})"
    return normalize


def next_token_loss(ids: torch.Tensor, from_position: int = 0) -> Metric:
    """A metric: mean cross-entropy of predicting ids[:, t + 1] at every position t >= `from_position`.

    With `from_position=0` it is `model.loss(ids[:, :-1], ids[:, 1:])`; a later start scores only part of the
    input, e.g. the second copy of a repeated sequence, where an induction head can predict every token.
    """
    ids = _as_ids(ids, "ids")
    T = ids.shape[1]
    if not isinstance(from_position, int) or not 0 <= from_position < T - 1:
        raise ValueError(
            f"from_position must be an int in 0..{T - 2} (a position that has a next token), got {from_position!r}"
        )

    def metric(logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[:2] != ids.shape:
            raise ValueError(
                f"next_token_loss was made for ids {tuple(ids.shape)} but got logits {tuple(logits.shape)}; "
                "make it from the ids the model runs on"
            )
        targets = ids.to(logits.device)[:, from_position + 1 :]
        scored = logits[:, from_position:-1]  # (B, T - 1 - from_position, V)
        return F.cross_entropy(scored.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    metric.__name__ = "next_token_loss"
    return metric


def _scalar(value: torch.Tensor | float, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{what} must be one number, got a tensor of shape {tuple(value.shape)}; "
                "a metric reduces the whole batch to one number (e.g. .mean() over the batch)"
            )
        return float(value.detach().float().cpu())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number or a one-element tensor, got {type(value).__name__}") from None


# ---- inputs -----------------------------------------------------------------------------------------------
def _as_ids(ids: torch.Tensor | Sequence[int], what: str) -> torch.Tensor:
    """Ids as a (B, T) long tensor; one sequence (T,) becomes (1, T)."""
    if hasattr(ids, "keys") or hasattr(ids, "stack"):  # an ActivationCache / capture / dict, in TransformerLens's order
        raise ValueError(
            f"{what} must be token ids, got a {type(ids).__name__}: gptviz's patching takes (model, clean_ids, "
            "corrupted_ids, metric) and records the clean run itself; TransformerLens's get_act_patch_* take "
            "(model, corrupted_tokens, clean_cache, metric), so pass the clean ids first, not the cache"
        )
    t = torch.as_tensor(ids)
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.dtype not in (torch.long, torch.int32, torch.int64) or t.shape[1] == 0:
        raise ValueError(
            f"{what} must be token ids, an integer tensor (B, T) or (T,), got {t.dtype} {tuple(t.shape)}; "
            "encode the text first (torch.tensor([tok.encode(text)]))"
        )
    return t.long()


def _pair(clean_ids, corrupted_ids) -> tuple[torch.Tensor, torch.Tensor]:
    clean, corrupted = _as_ids(clean_ids, "clean_ids"), _as_ids(corrupted_ids, "corrupted_ids")
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean_ids {tuple(clean.shape)} and corrupted_ids {tuple(corrupted.shape)} must have the same shape: "
            "patching copies position t of the clean run into position t of the corrupted run, so the two "
            "inputs must line up token for token (same length; change tokens, do not insert or delete them)"
        )
    return clean, corrupted


def _check_metric(metric: Metric) -> None:
    if not callable(metric):
        raise TypeError(
            f"metric must be a function logits (B, T, V) -> one number, got {type(metric).__name__}; "
            "e.g. gptviz.patching.logit_diff(answer_id, wrong_id)"
        )


def _site_names(model: GPT, site: str, sites: dict[str, str], kind: str) -> list[str]:
    """The hook name of `site` in every layer; an error a student can act on if the site is unknown or absent."""
    if site not in sites:
        raise ValueError(f"unknown {kind} site {site!r}; choose one of {', '.join(map(repr, sites))}")
    names = [sites[site].format(l=l) for l in range(model.config.n_layer)]
    have = hook_points(model)
    missing = [n for n in names if n not in have]
    if missing:
        why = ""
        if site == "mlp_out":
            why = " (an attention-only model, GPTConfig(mlp=False), has no MLP)"
        elif site == "resid_mid":
            why = " (a parallel-residual block adds attention and MLP in one step, so it has no middle)"
        present = [s for s, pattern in sites.items() if pattern.format(l=0) in have]
        raise ValueError(
            f"this model has no {missing[0]!r}{why}; the {kind} sites it has: {', '.join(map(repr, present))}"
        )
    return names


def _runs_per_forward(batch_size: int | None, rows: int, T: int, V: int, cells: int) -> int:
    if batch_size is None:
        return max(1, min(cells, 512, LOGITS_BUDGET // max(1, rows * T * V)))
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(
            f"batch_size (patched runs per forward pass) must be a positive int or None, got {batch_size!r}"
        )
    return batch_size


# ---- the sweep every table comes from ---------------------------------------------------------------------
def _sweep(
    model: GPT,
    corrupted: torch.Tensor,
    metric: Metric,
    names: list[str],
    sources: dict[str, torch.Tensor],
    cells: list[tuple],
    batch_size: int | None,
) -> torch.Tensor:
    """(L, len(cells)) metric values: in layer l, cell c runs `corrupted` with act[:, *c] = sources[names[l]][:, *c].

    A cell indexes the activation after its batch dim, e.g. (t,) a position of the residual stream, (slice, h)
    head h at every position of z. Runs are batched: copy k of the repeated corrupted batch gets cell k's patch.
    """
    B, T = corrupted.shape
    n = _runs_per_forward(batch_size, B, T, model.config.vocab_size, len(cells))
    out = torch.empty(len(names), len(cells))
    for l, name in enumerate(names):
        source = sources[name]
        for start in range(0, len(cells), n):
            chunk = cells[start : start + n]

            def patch(
                act: torch.Tensor, hook: HookPoint, chunk: list[tuple] = chunk, source: torch.Tensor = source
            ) -> torch.Tensor:
                act = act.clone()  # hooks may see views (an expanded embedding); never write through them
                copies = act.view(len(chunk), B, *act.shape[1:])  # (n, B, ...)
                for k, cell in enumerate(chunk):
                    where = (slice(None), *cell)
                    copies[k][where] = source[where]
                return act

            with hooks(model, {name: patch}):
                logits = model(corrupted.repeat(len(chunk), 1))  # (n * B, T, V)
            for k in range(len(chunk)):
                out[l, start + k] = _scalar(metric(logits[k * B : (k + 1) * B]), "the metric's value")
    return out


def _record(model: GPT, ids: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    with capture(model, names, budget_mb=None) as cap:
        model(ids)
    return {name: cap[name] for name in names}


# ---- patching ---------------------------------------------------------------------------------------------
def patch_resid(
    model: GPT,
    clean_ids: torch.Tensor,
    corrupted_ids: torch.Tensor,
    metric: Metric,
    site: str = "resid_pre",
    batch_size: int | None = None,
) -> torch.Tensor:
    """(L, T): `metric` of the corrupted run with the clean run's `site` activation patched in at (layer, position).

    `site`: "resid_pre" (the residual stream entering the block), "resid_mid", "resid_post", "attn_out" or
    "mlp_out" (what attention / the MLP add). `metric(logits (B, T, V))` returns one number. `batch_size`:
    patched runs per forward pass (None: as many as keep the logits near 128 MB).
    TransformerLens: `get_act_patch_resid_pre` / `get_act_patch_attn_out` / ... with the same numbers.
    """
    clean, corrupted = _pair(clean_ids, corrupted_ids)
    _check_metric(metric)
    names = _site_names(model, site, RESID_SITES, "residual")
    clean, corrupted = clean.to(model.device), corrupted.to(model.device)
    with evaluating(model), torch.no_grad():
        sources = _record(model, clean, names)
        cells = [(t,) for t in range(clean.shape[1])]
        return _sweep(model, corrupted, metric, names, sources, cells, batch_size)  # (L, T)


def patch_heads(
    model: GPT,
    clean_ids: torch.Tensor,
    corrupted_ids: torch.Tensor,
    metric: Metric,
    site: str = "z",
    by_position: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """(L, nh): `metric` of the corrupted run with one head's clean `site` activation patched in, at every position.

    `site`: "z" (the head's attention-weighted values, what it writes once multiplied by W_O), "result" (that
    output, (B, T, nh, C): the same patch as z, computed the long way) or "pattern" (where it looks, so the clean
    pattern reads the corrupted values). With `by_position` one head at one position: (L, T, nh), T the query
    position (TransformerLens orders its by-position pattern table (L, nh, T); here every table is (L, T, nh)).
    Grouped-query models patch each query head alone: heads sharing keys/values still differ in z and pattern.
    """
    clean, corrupted = _pair(clean_ids, corrupted_ids)
    _check_metric(metric)
    names = _site_names(model, site, HEAD_SITES, "head")
    nh, T = model.config.n_head, clean.shape[1]
    clean, corrupted = clean.to(model.device), corrupted.to(model.device)
    every = slice(None)
    if site == "pattern":  # (B, nh, T, Tk): head first, then the query position
        cells = [(h, t) for t in range(T) for h in range(nh)] if by_position else [(h,) for h in range(nh)]
    else:  # (B, T, nh, ...): position first
        cells = [(t, h) for t in range(T) for h in range(nh)] if by_position else [(every, h) for h in range(nh)]
    with evaluating(model), torch.no_grad():
        sources = _record(model, clean, names)
        table = _sweep(model, corrupted, metric, names, sources, cells, batch_size)
    return table.view(-1, T, nh) if by_position else table  # (L, T, nh) or (L, nh)


def ablate_heads(
    model: GPT,
    ids: torch.Tensor,
    metric: Metric | None = None,
    kind: str = "zero",
    batch_size: int | None = None,
) -> torch.Tensor:
    """(L, nh): how much `metric` changes when one head is knocked out: metric(ablated) - metric(intact).

    `kind="zero"` sets the head's z to 0, so it writes nothing (a c_proj bias belongs to no head and stays);
    `kind="mean"` sets it to its mean over the batch and positions of `ids`, which keeps the average
    the next layer is used to and removes only what depends on the input. `metric` defaults to the next-token
    loss on `ids` (`next_token_loss`), so a positive entry is how much worse the model predicts without that head.
    """
    ids = _as_ids(ids, "ids")
    if kind not in ABLATIONS:
        raise ValueError(f"kind must be 'zero' or 'mean', got {kind!r}")
    metric = next_token_loss(ids) if metric is None else metric
    _check_metric(metric)
    names = _site_names(model, "z", HEAD_SITES, "head")
    ids = ids.to(model.device)
    with evaluating(model), torch.no_grad():
        z = _record(model, ids, names)  # (B, T, nh, hs) per layer
        if kind == "zero":
            sources = {name: torch.zeros_like(v) for name, v in z.items()}
        else:
            sources = {name: v.mean((0, 1), keepdim=True).expand_as(v) for name, v in z.items()}
        intact = _scalar(metric(model(ids)), "the metric's value")
        cells = [(slice(None), h) for h in range(model.config.n_head)]
        return _sweep(model, ids, metric, names, sources, cells, batch_size) - intact  # (L, nh)
