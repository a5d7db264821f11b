"""Input attribution, recorded: which earlier tokens made the model write this token?

    rec = attribute(model, tokenizer, "ROMEO:\\nO Juliet, ", max_new_tokens=12)   # greedy, then attribution
    rec.values[0]            # (T,) how much each token pushed the first generated token's logit (NaN after it)
    rec.row(3)               # the 4th generated token's attributions over its context
    rec.values               # (n, T): the (generated x context) matrix; rows = steps, NaN where not yet seen

What is explained is a *score*: the logit of the token written at a position, read from the logits one position
earlier (a logit, not a probability: it is what the softmax starts from, and integrated gradients' completeness
holds for it exactly). The inputs are the **token embeddings** (`hook_embed`, (B, T, C)), replaced through that hook
point, so the model is never edited and every family works (GPT-2, the char model, Llama/Qwen/NeoX). Position
embeddings are not attributed: every method keeps them, so "no token here" means "only the position here".
Three methods, all on the same footing (one number per context token, summed over the C embedding dimensions):

- `grad_x_input`: d score / d embedding . embedding — one backward pass per step; a first-order guess.
- `integrated_gradients`: the gradient averaged along the straight path from a baseline (all token embeddings
  zero) to the real embeddings, times (embedding - baseline); Gauss-Legendre quadrature with `steps` points.
  Completeness: a row sums to score(real) - score(baseline) (`rec.baseline_scores`, checked by `completeness`).
- `occlusion`: score(real) - score(with that one token's embedding set to the baseline): no gradients, one
  forward pass per context token, and (causal model) that one pass answers for every step at once.

Every step's score is explained in one batched pass: copy b of the sequence carries only step b's score, so the
gradients of the copies never mix. A record module: the model runs here; drawing is `gptviz.plots.attribution`'s,
the panel `gptviz.widgets.attribution`. Generation is `gptviz.sampling.generate`'s (greedy unless asked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .hooks import hooks
from .model import evaluating

METHODS = ("integrated_gradients", "grad_x_input", "occlusion")
METHOD_LABELS = {
    "integrated_gradients": "integrated gradients",
    "grad_x_input": "gradient x input",
    "occlusion": "occlusion",
}
BATCH_TOKENS = 8192  # copies x T per chunk of a batched pass: bounds the activations kept for backward


@dataclass
class AttributionRecord:
    """Attributions of the tokens at `positions` (rows) to the tokens before them (columns). CPU tensors."""

    tokens: list[str]  # T tokens of the sequence (prompt, then generated)
    ids: torch.Tensor  # (T,)
    prompt_len: int  # positions >= prompt_len were generated
    method: str  # one of METHODS
    positions: list[int]  # n explained positions (each >= 1): row i explains ids[positions[i]]
    scores: torch.Tensor  # (n,) the explained logit, read at position - 1
    baseline_scores: torch.Tensor  # (n,) the same logit with every token embedding at the baseline (NaN if unused)
    values: torch.Tensor  # (n, T) attribution of context token j to row i; NaN for j >= positions[i]

    def row(self, i: int) -> torch.Tensor:
        """Row i's attributions over its context: (positions[i],) numbers, no NaN."""
        if not -len(self.positions) <= i < len(self.positions):
            raise IndexError(f"step {i} is outside the {len(self.positions)} explained positions")
        return self.values[i, : self.positions[i]]

    def completeness(self) -> torch.Tensor:
        """(n,) relative error of sum(row) against score - baseline_score (integrated gradients: ~0)."""
        total = torch.nansum(self.values, dim=1)
        diff = self.scores - self.baseline_scores
        return (total - diff).abs() / diff.abs().clamp_min(1e-6)


def _context(model, tokenizer, ids) -> torch.Tensor:
    if isinstance(ids, str):
        if tokenizer is None:
            raise ValueError("got text but no tokenizer; pass the tokenizer or encoded ids")
        ids = tokenizer.encode(ids)
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() < 2:
        raise ValueError("attribution needs at least 2 tokens: one to explain and one before it")
    return ids


def _embeddings(model, ids: torch.Tensor) -> torch.Tensor:
    """(T, C) token embeddings exactly as the model computes them (hook_embed's input), detached."""
    with torch.no_grad():
        return model.wte(ids.to(model.device)).detach()


def _run(model, ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """Final hidden states (B, T, C) (after the last norm) of `ids` (T,) repeated B times, with the token
    embeddings replaced by `embeds` (B, T, C). The LM head is applied only where a score is read (`_logits`):
    (B, T, V) logits of a 50k vocabulary would cost more than the whole model."""
    batch = ids.to(model.device)[None].expand(embeds.shape[0], -1)  # (B, T)
    with hooks(model, {"hook_embed": lambda x, hook: embeds.to(x.dtype)}):
        return model.trunk(batch)


def _logits(model, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The logits of token ids `targets` (...,) from hidden states `h` (..., C): the LM head's rows for them."""
    head = model.lm_head
    out = (h * head.weight[targets.to(h.device)].to(h.dtype)).sum(-1).float()
    bias = getattr(head, "bias", None)
    return out if bias is None else out + bias[targets.to(h.device)].float()


def _score(model, h: torch.Tensor, ids: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """(B,) copy b's logit of ids[positions[b]] at position positions[b] - 1; h (B, T, C)."""
    pos = torch.tensor(positions)
    return _logits(model, h[torch.arange(len(positions)), pos.to(h.device) - 1], ids[pos])


def _chunks(n: int, T: int, batch_tokens: int) -> list[range]:
    size = max(1, batch_tokens // T)
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def _grad_x_input(model, ids, emb, positions, batch_tokens) -> tuple[torch.Tensor, torch.Tensor]:
    T = len(ids)
    values, scores = torch.empty(len(positions), T), torch.empty(len(positions))
    for rows in _chunks(len(positions), T, batch_tokens):
        x = emb[None].expand(len(rows), -1, -1).clone().requires_grad_(True)  # (b, T, C)
        s = _score(model, _run(model, ids, x), ids, [positions[i] for i in rows])  # (b,)
        (grad,) = torch.autograd.grad(s.sum(), x)  # copies are independent: each row gets its own gradient
        values[rows.start : rows.stop] = (grad * x.detach()).float().sum(-1).cpu()  # (b, T)
        scores[rows.start : rows.stop] = s.detach().cpu()
    return values, scores


def _integrated_gradients(model, ids, emb, positions, steps, batch_tokens) -> tuple[torch.Tensor, ...]:
    """Gauss-Legendre nodes on [0, 1]: exact for polynomials of degree 2*steps - 1 along the path."""
    T, n = len(ids), len(positions)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor((nodes + 1) / 2, dtype=torch.float32)  # (S,) in (0, 1)
    w = torch.tensor(weights / 2, dtype=torch.float32)  # (S,) sum to 1
    pairs = [(r, s) for r in range(n) for s in range(steps)]  # one copy per (row, path point)
    grad_sum = torch.zeros(n, T, emb.shape[-1])  # (n, T, C) weighted path-averaged gradients
    for chunk in _chunks(len(pairs), T, batch_tokens):
        rows = [pairs[i][0] for i in chunk]
        a = alphas[[pairs[i][1] for i in chunk]].to(emb.device, emb.dtype)  # (b,)
        x = (a[:, None, None] * emb[None]).detach().requires_grad_(True)  # (b, T, C): baseline 0 + a (emb - 0)
        s = _score(model, _run(model, ids, x), ids, [positions[r] for r in rows])
        (grad,) = torch.autograd.grad(s.sum(), x)
        wb = w[[pairs[i][1] for i in chunk]]  # (b,)
        grad_sum.index_add_(0, torch.tensor(rows), grad.float().cpu() * wb[:, None, None])
    values = (grad_sum * emb.float().cpu()[None]).sum(-1)  # (n, T)
    with torch.no_grad():
        ends = torch.stack([emb, torch.zeros_like(emb)])  # (2, T, C): the real input, the baseline
        pos = torch.tensor(positions)
        h = _run(model, ids, ends)[:, pos.to(emb.device) - 1]  # (2, n, C)
        scores, base = _logits(model, h, ids[pos][None].expand(2, -1)).cpu()  # (n,) each
    return values, scores, base


@torch.no_grad()
def _occlusion(model, ids, emb, positions, batch_tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy j zeroes token j's embedding; (causal) its logits give every step's score without token j."""
    T = len(ids)
    pos = torch.tensor(positions)
    targets = ids[pos]  # (n,)
    scores = _logits(model, _run(model, ids, emb[None])[0, pos.to(emb.device) - 1], targets).cpu()  # (n,)
    values = torch.empty(len(positions), T)
    for cols in _chunks(T, T, batch_tokens):
        x = emb[None].repeat(len(cols), 1, 1)  # (b, T, C)
        x[torch.arange(len(cols)), torch.tensor(list(cols))] = 0
        h = _run(model, ids, x)[:, pos.to(emb.device) - 1]  # (b, n, C)
        without = _logits(model, h, targets[None].expand(len(cols), -1)).cpu()  # (b, n)
        values[:, cols.start : cols.stop] = (scores[None] - without).T
    return values, scores


def attribution_record(
    model,
    tokenizer,
    ids,
    positions: list[int] | None = None,
    prompt_len: int | None = None,
    method: str = "integrated_gradients",
    steps: int = 32,
    batch_tokens: int = BATCH_TOKENS,
) -> AttributionRecord:
    """Attribute the tokens at `positions` of `ids` (default: every position from `prompt_len` on, or the last
    one) to the tokens before them. Inputs longer than the block size keep their last block_size tokens."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (integrated gradients' path points) must be a positive integer, got {steps!r}")
    ids = _context(model, tokenizer, ids)
    crop = max(0, len(ids) - model.config.block_size)
    ids = ids[crop:]
    T = len(ids)
    prompt_len = max(1, (T - 1 if prompt_len is None else prompt_len - crop))
    positions = list(range(prompt_len, T)) if positions is None else [p - crop for p in positions]
    if not positions or any(not 1 <= p < T for p in positions):
        raise ValueError(f"positions to explain must lie in 1..{T - 1} (position 0 has no context); got {positions}")
    with evaluating(model):
        emb = _embeddings(model, ids)  # (T, C)
        base = torch.full((len(positions),), float("nan"))
        if method == "occlusion":
            values, scores = _occlusion(model, ids, emb, positions, batch_tokens)
        else:
            with torch.enable_grad():
                if method == "grad_x_input":
                    values, scores = _grad_x_input(model, ids, emb, positions, batch_tokens)
                else:
                    values, scores, base = _integrated_gradients(model, ids, emb, positions, steps, batch_tokens)
    future = torch.arange(T)[None] >= torch.tensor(positions)[:, None]  # (n, T) tokens a step had not seen
    values = values.masked_fill(future, float("nan"))
    return AttributionRecord(
        tokens=tokenizer.tokens(ids.tolist()) if tokenizer is not None else [str(i) for i in ids.tolist()],
        ids=ids,
        prompt_len=prompt_len,
        method=method,
        positions=positions,
        scores=scores,
        baseline_scores=base,
        values=values,
    )


def continuation(model, tokenizer, prompt, max_new_tokens: int = 20, **generate_kwargs) -> tuple[torch.Tensor, int]:
    """(prompt + generated ids (T,), prompt length): `prompt` (text or ids) continued by
    `gptviz.sampling.generate` (greedy unless `do_sample=True` etc.). The prompt keeps its last block_size - 1
    tokens, so at least one token fits."""
    from .sampling import generate

    if isinstance(prompt, str) and tokenizer is None:
        raise ValueError("got text but no tokenizer; pass the tokenizer or encoded ids")
    ids = torch.as_tensor(tokenizer.encode(prompt) if isinstance(prompt, str) else prompt, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise ValueError("the prompt is empty; type at least one character")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    ids = ids[-(model.config.block_size - 1) :]
    out = generate(model, ids[None].to(model.device), max_new_tokens=max_new_tokens, **generate_kwargs)[0].cpu()
    if len(out) <= len(ids):
        raise ValueError("nothing was generated (the model stopped at once); raise max_new_tokens or drop eos")
    return out, len(ids)


def attribute(
    model,
    tokenizer,
    prompt,
    max_new_tokens: int = 20,
    method: str = "integrated_gradients",
    steps: int = 32,
    **generate_kwargs,
) -> AttributionRecord:
    """Generate from `prompt` (`continuation`), then attribute every generated token to the prompt and to the
    tokens generated before it: the (generated x context) matrix in one record."""
    ids, prompt_len = continuation(model, tokenizer, prompt, max_new_tokens, **generate_kwargs)
    return attribution_record(model, tokenizer, ids, prompt_len=prompt_len, method=method, steps=steps)
