"""The logit lens, recorded: what the model would predict next if it stopped after each layer.

    lens = logit_lens_record(model, tokenizer, tokenizer.encode("ROMEO: But soft"))
    lens.top_tokens[-1]          # the model's real top prediction at every position (the last read-out)
    lens.next_probs[0]           # (T,) how likely the embeddings alone make the true next token
    lens.ranks[:, -2]            # (L+1,) rank of the last token at every layer (1 = the lens's top guess)

One forward pass captures the residual stream after the embeddings (`blocks.0.hook_resid_pre`) and after every
block (`blocks.{l}.hook_resid_post`); each of those L + 1 read-outs goes through the final LayerNorm and the LM
head, as if it were the last layer. The record keeps, per read-out and position, the top next token and its
probability, the probability of the token that really comes next, and that token's rank among all V (ecco's
"rankings": 1 = the top guess); with `token=` the ranks are those of one chosen token at every position instead.
Give it a prompt plus what the model generated and the columns from the prompt's end on are the generation's
steps: the rank, after every layer, of the token each step wrote.

A record module, like `gptviz.records`: the model runs here and nowhere else. Drawing it is
`gptviz.plots.lens`' job (`plots.logit_lens_figure(lens)`); the panel is `gptviz.widgets.logit_lens`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hooks import capture
from .model import evaluating


@dataclass
class LogitLensRecord:
    """Read-out of the residual stream after the embeddings and after every block, through ln_f + lm_head."""

    tokens: list[str]  # T input tokens
    layers: list[str]  # L + 1 labels: "embed", "block 0", ...
    top_ids: torch.Tensor  # (L+1, T) most likely next token at each layer and position
    top_probs: torch.Tensor  # (L+1, T)
    top_tokens: list[list[str]]  # (L+1, T)
    next_probs: torch.Tensor  # (L+1, T) probability of the actual next input token (NaN at the last position)
    ranks: torch.Tensor | None = None  # (L+1, T) rank (1 = top) of the next token, or of `rank_token`; NaN: none
    rank_token: int | None = None  # None: ranks are of the true next token; else of this id at every position


@torch.no_grad()
def logit_lens_record(model, tokenizer, ids, token: int | None = None) -> LogitLensRecord:
    """Run the model once (in eval mode) on `ids` and decode every layer's residual stream as if it were the last
    layer. Inputs longer than the block size keep their last block_size tokens. `token`: an id whose rank to
    record at every position (default: the rank of each position's true next token)."""
    ids = torch.as_tensor(ids).flatten()[-model.config.block_size :]
    if ids.numel() == 0:
        raise ValueError("no tokens to run; type at least one character")
    if token is not None and not 0 <= int(token) < model.config.vocab_size:
        raise ValueError(f"token id {token} is outside the vocabulary (0..{model.config.vocab_size - 1})")
    T, L = len(ids), model.config.n_layer
    with evaluating(model):
        with capture(model, ["blocks.0.hook_resid_pre", "blocks.*.hook_resid_post"]) as cap:
            model(ids[None].to(model.device))
        # (L+1, B=1, T, C): the embeddings, then each block's output
        resid = torch.cat([cap["blocks.0.hook_resid_pre"][None], cap.stack("blocks.*.hook_resid_post")])
        tops, probs, nexts, ranks = [], [], [], []
        for x in resid[:, 0]:  # one read-out at a time: (T, V) probabilities never pile up for every layer
            p = torch.softmax(model.lm_head(model.ln_f(x)).float(), -1)  # (T, V)
            top = p.max(-1)
            tops.append(top.indices.cpu())
            probs.append(top.values.cpu())
            nxt = torch.full((T,), float("nan"))
            nxt[:-1] = p[torch.arange(T - 1), ids[1:].to(p.device)].cpu()
            nexts.append(nxt)
            ranks.append(_ranks(p, ids.to(p.device), token))
    top_ids = torch.stack(tops)  # (L+1, T)
    return LogitLensRecord(
        tokens=tokenizer.tokens(ids.tolist()),
        layers=["embed"] + [f"block {l}" for l in range(L)],
        top_ids=top_ids,
        top_probs=torch.stack(probs),
        next_probs=torch.stack(nexts),
        top_tokens=[tokenizer.tokens(r) for r in top_ids.tolist()],
        ranks=torch.stack(ranks),
        rank_token=None if token is None else int(token),
    )


def _ranks(p: torch.Tensor, ids: torch.Tensor, token: int | None) -> torch.Tensor:
    """(T,) rank (1 = most likely) under p (T, V) of the next token at each position, or of `token`."""
    T = len(ids)
    if token is None:
        target = torch.full((T,), -1, dtype=torch.long, device=p.device)
        target[:-1] = ids[1:]
    else:
        target = torch.full((T,), int(token), dtype=torch.long, device=p.device)
    mine = p.gather(1, target.clamp_min(0)[:, None])  # (T, 1)
    rank = (p > mine).sum(-1).float().cpu() + 1  # (T,) ties share the better rank
    rank[(target < 0).cpu()] = float("nan")
    return rank
