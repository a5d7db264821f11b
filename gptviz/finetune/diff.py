"""What fine-tuning changed: the same text through the model before and after, compared head by head.

    diff = checkpoint_diff(gpt_before, gpt_after, tokenizer, "ROMEO: But soft")
    diff.top_heads(3)                         # [(layer, head, change), ...]: whose attention moved most
    plots.checkpoint_diff(diff.before, diff.after)
    token_losses(gpt_after, tokenizer, text)  # (T,): each token's loss, to see *where* a model improved

Both models are recorded with `gptviz.records.record_forward` (eval mode, float32 attention). Drawing is
`gptviz.plots`'s job; `LMJob.diff` in `finetune.jobs` calls this with the model it kept from before training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model import evaluating
from ..records import ForwardRecord, head_change, record_forward


@dataclass
class CheckpointDiff:
    """The same prompt through two models: records, per-head attention change, next-token distribution shift.

    Draw it with `plots.checkpoint_diff(diff.before, diff.after)`.
    """

    before: ForwardRecord
    after: ForwardRecord
    head_change: torch.Tensor  # (L, nh) mean |attention after - before| over causal (query, key) pairs
    next_token_shift: torch.Tensor  # (T,) total-variation distance of the next-token distributions, 0..1

    def top_heads(self, n: int = 5) -> list[tuple[int, int, float]]:
        """The n heads whose attention changed most: (layer, head, change)."""
        nh = self.head_change.shape[1]
        vals, idx = self.head_change.flatten().topk(min(n, self.head_change.numel()))
        return [(int(i) // nh, int(i) % nh, float(v)) for v, i in zip(vals, idx)]


@torch.no_grad()
def checkpoint_diff(
    model_before: nn.Module, model_after: nn.Module, tokenizer, text: str, k: int = 10
) -> CheckpointDiff:
    """Run `text` through both models (GPTs, or classifiers' trunks) and say what changed."""
    before_gpt, after_gpt = (getattr(m, "gpt", m) for m in (model_before, model_after))
    if (before_gpt.config.n_layer, before_gpt.config.n_head) != (after_gpt.config.n_layer, after_gpt.config.n_head):
        raise ValueError("checkpoint_diff compares two versions of one model; these differ in layers or heads")
    before = record_forward(before_gpt, tokenizer, text, k=k)
    after = record_forward(after_gpt, tokenizer, text, k=k)
    change = head_change(before, after)  # (L, nh): the numbers plots.checkpoint_diff draws
    idx = before.ids[None]
    with evaluating(before_gpt), evaluating(after_gpt):  # as the records were made: no dropout
        p, q = (F.softmax(g(idx.to(g.device))[0].float(), -1).cpu() for g in (before_gpt, after_gpt))  # (T, V)
    return CheckpointDiff(before, after, change, 0.5 * (p - q).abs().sum(-1))


@torch.no_grad()
def token_losses(model: nn.Module, tokenizer, text: str, max_tokens: int = 8192) -> torch.Tensor:
    """The next-token loss (nats) of every token of `text` after the first: (T - 1,), at most `max_tokens`.

    The text is read in windows of the model's block size, each window's first token as context only, so
    every loss has at least one token of context. Compare two models' losses token by token (before and after
    fine-tuning) to see which parts of a text they differ on."""
    gpt = getattr(model, "gpt", model)
    ids = torch.tensor(tokenizer.encode(text)[: max_tokens + 1])  # (T,)
    if len(ids) < 2:
        raise ValueError(f"token_losses needs a text of at least 2 tokens, got {len(ids)}")
    block = gpt.config.block_size
    device = next(gpt.parameters()).device
    out = []
    with evaluating(gpt):
        for start in range(0, len(ids) - 1, block - 1):  # windows overlap by one token: each target once
            window = ids[start : start + block].to(device)  # (t,)
            logits = gpt(window[None])[0].float()  # (t, V)
            out.append(F.cross_entropy(logits[:-1], window[1:], reduction="none").cpu())
    return torch.cat(out)  # (T - 1,)
