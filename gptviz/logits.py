"""Next-token transforms: pure functions on logits (B, V) -> logits (B, V), and the knobs that choose them.

`apply_temperature`, `apply_top_k`, `apply_top_p`, `apply_repetition_penalty`, `apply_no_repeat_ngram` and
`apply_min_new_tokens` follow transformers' LogitsProcessor classes of the same names; `process` applies the
knobs in transformers' order and can keep every stage for the generation timeline; `sample_next_token` draws.
They keep no state. The decoding loops (greedy, sampling, beam search) live in `gptviz.sampling`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InputError

NEG_INF = float("-inf")
DEFAULT_TOP_K = 50  # transformers' GenerationConfig samples from the 50 most likely tokens unless told otherwise
STAGE_NAMES = ("raw", "repetition_penalty", "no_repeat_ngram", "min_new_tokens", "temperature", "top_k", "top_p")


# ---- 1. pure next-token functions ------------------------------------------------------------------------
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by `temperature` (> 0): below 1 sharpens the distribution, above 1 flattens it."""
    if not temperature > 0:
        raise InputError(
            f"temperature must be > 0, got {temperature!r}; for greedy decoding use "
            "do_sample=False (generate treats temperature=0 as greedy)"
        )
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the k highest logits of each row (ties with the k-th are kept too); the rest become -inf."""
    if not isinstance(k, int) or k < 1:
        raise InputError(f"top_k must be a positive integer, got {k!r}; use top_k=None to switch it off")
    k = min(max(k, min_tokens_to_keep), logits.size(-1))
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def apply_top_p(logits: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering: keep the most likely tokens whose probabilities add up to at least `top_p`.

    A token is dropped when the tokens less likely than it (itself included) hold at most 1 - top_p of the
    mass; the `min_tokens_to_keep` most likely tokens always stay (transformers' TopPLogitsWarper).
    """
    if not 0.0 < top_p <= 1.0:
        raise InputError(
            f"top_p must be in (0, 1], got {top_p!r}; 0.9 keeps the tokens holding 90% of the "
            "probability, 1.0 keeps everything"
        )
    ascending, order = logits.sort(dim=-1)  # (B, V) least likely first
    mass_below = ascending.softmax(dim=-1).cumsum(dim=-1)  # (B, V) mass of this token and all less likely ones
    drop_sorted = mass_below <= 1.0 - top_p
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, NEG_INF)


def apply_repetition_penalty(logits: torch.Tensor, sequences: torch.Tensor, penalty: float) -> torch.Tensor:
    """For every token already in its row of `sequences` (B, n): divide a positive logit by `penalty`,
    multiply a negative one (so penalty > 1 always makes repeats less likely). Each token is hit once."""
    if not penalty > 0:
        raise InputError(f"repetition_penalty must be > 0 (1.0 = off, 1.2 is a usual value), got {penalty!r}")
    seen = logits.gather(-1, sequences)  # (B, n) logits of the tokens already there
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, sequences, seen)


def apply_no_repeat_ngram(logits: torch.Tensor, sequences: torch.Tensor, n: int) -> torch.Tensor:
    """Ban (-inf) every token that would complete an n-gram already present in its row of `sequences` (B, n)."""
    if not isinstance(n, int) or n < 0:
        raise InputError(f"no_repeat_ngram_size must be a non-negative integer (0 = off), got {n!r}")
    B, T = sequences.shape
    if n == 0 or T < n:
        return logits
    V = logits.size(-1)
    grams = sequences.unfold(1, n, 1)  # (B, T-n+1, n) every n-gram so far
    suffix = sequences[:, T - n + 1 :]  # (B, n-1) the tokens the next n-gram would start with
    repeats = (grams[..., :-1] == suffix[:, None, :]).all(dim=-1)  # (B, T-n+1) n-grams with that start
    # Scatter their last tokens into a spare column V when they do not match, then drop that column.
    banned = torch.zeros(B, V + 1, dtype=torch.bool, device=logits.device)
    banned.scatter_(1, grams[..., -1].masked_fill(~repeats, V), True)
    return logits.masked_fill(banned[:, :V], NEG_INF)


def apply_min_new_tokens(
    logits: torch.Tensor, eos: Sequence[int], new_tokens: int, min_new_tokens: int
) -> torch.Tensor:
    """Forbid every eos id while fewer than `min_new_tokens` tokens have been generated."""
    if new_tokens >= min_new_tokens or not eos:
        return logits
    return logits.index_fill(-1, torch.tensor(list(eos), device=logits.device), NEG_INF)


def sample_next_token(logits: torch.Tensor, generator: torch.Generator | None, do_sample: bool) -> torch.Tensor:
    """Next ids (B,): the argmax, or a draw from softmax(logits) using `generator` (None: torch's global RNG)."""
    if not do_sample:
        return logits.argmax(dim=-1)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


# ---- knobs, shared by every decoding loop ------------------------------------------------------------------
@dataclass(frozen=True)
class Knobs:
    do_sample: bool
    temperature: float
    top_k: int | None
    top_p: float | None
    repetition_penalty: float
    no_repeat_ngram_size: int
    eos: tuple[int, ...]
    min_new_tokens: int = 0  # eos is forbidden before this many new tokens


def _real(x) -> bool:
    """A plain number (a bool is not one, though Python says it is an int)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_knobs(
    vocab_size: int,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float,
    no_repeat_ngram_size: int,
    eos_token_id: int | Sequence[int] | None,
    min_new_tokens: int = 0,
) -> Knobs:
    """Check every knob once, with messages a student can act on, and normalise 'off' values."""
    problems = []
    if not _real(temperature) or not 0 <= temperature < math.inf:
        problems.append(
            f"temperature must be >= 0 and finite (0 = greedy, 1 = the model's distribution), got {temperature!r}"
        )
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0):
        problems.append(f"top_k must be a positive integer (None or 0 = off), got {top_k!r}")
    if top_p is not None and (not _real(top_p) or not 0.0 < top_p <= 1.0):
        problems.append(f"top_p must be in (0, 1] (None or 1.0 = off), got {top_p!r}")
    if not _real(repetition_penalty) or not 0 < repetition_penalty < math.inf:
        problems.append(f"repetition_penalty must be > 0 (1.0 = off, 1.2 is a usual value), got {repetition_penalty!r}")
    if not isinstance(no_repeat_ngram_size, int) or isinstance(no_repeat_ngram_size, bool) or no_repeat_ngram_size < 0:
        problems.append(f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {no_repeat_ngram_size!r}")
    if not isinstance(min_new_tokens, int) or isinstance(min_new_tokens, bool) or min_new_tokens < 0:
        problems.append(f"min_new_tokens must be an integer >= 0, got {min_new_tokens!r}")
    if eos_token_id is None:
        eos = ()
    elif isinstance(eos_token_id, int):
        eos = (eos_token_id,)
    elif isinstance(eos_token_id, (list, tuple, set, frozenset, range)):
        eos = tuple(eos_token_id)
    else:
        eos = (eos_token_id,)  # refused below with the others: not an int
    if any(not isinstance(e, int) or isinstance(e, bool) or not 0 <= e < vocab_size for e in eos):
        problems.append(f"eos_token_id must be an id in 0..{vocab_size - 1} (or a list of them), got {eos_token_id!r}")
    if problems:
        raise InputError("invalid generation settings: " + "; ".join(problems))
    top_k = top_k or None
    top_p = None if top_p is None or top_p >= 1.0 else float(top_p)
    if temperature == 0:
        do_sample = False  # the limit of softmax(logits / T) as T -> 0 puts all mass on the argmax
    elif not do_sample and (temperature != 1.0 or top_k not in (None, DEFAULT_TOP_K) or top_p):
        warnings.warn(
            "temperature, top_k and top_p only act when sampling (do_sample=True); greedy decoding "
            "and beam search ignore them",
            UserWarning,
            stacklevel=3,
        )
    return Knobs(
        bool(do_sample),
        float(temperature),
        top_k,
        top_p,
        float(repetition_penalty),
        no_repeat_ngram_size,
        eos,
        min_new_tokens,
    )


def process(
    logits: torch.Tensor,
    sequences: torch.Tensor,
    knobs: Knobs,
    keep_stages: bool,
    min_tokens_to_keep: int = 1,
    new_tokens: int = 0,
) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """Apply the knobs in transformers' order; return the final logits and, if asked, every stage's logits.

    `new_tokens`: how many tokens this generation has made so far (for min_new_tokens).
    """
    stages = [("raw", logits)] if keep_stages else []

    def stage(name: str, new: torch.Tensor) -> torch.Tensor:
        if keep_stages:
            stages.append((name, new))
        return new

    if knobs.repetition_penalty != 1.0:
        logits = stage("repetition_penalty", apply_repetition_penalty(logits, sequences, knobs.repetition_penalty))
    if knobs.no_repeat_ngram_size:
        logits = stage("no_repeat_ngram", apply_no_repeat_ngram(logits, sequences, knobs.no_repeat_ngram_size))
    if knobs.min_new_tokens > new_tokens and knobs.eos:
        logits = stage("min_new_tokens", apply_min_new_tokens(logits, knobs.eos, new_tokens, knobs.min_new_tokens))
    if knobs.do_sample:
        if knobs.temperature != 1.0:
            logits = stage("temperature", apply_temperature(logits, knobs.temperature))
        if knobs.top_k:
            logits = stage("top_k", apply_top_k(logits, knobs.top_k, min_tokens_to_keep))
        if knobs.top_p:
            logits = stage("top_p", apply_top_p(logits, knobs.top_p, min_tokens_to_keep))
    return logits, stages


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """The RNG a sampling run draws from: a private one seeded with `seed`, or None for torch's global RNG.

    None (no seed) is transformers' behaviour: `torch.manual_seed(0)` before `generate` reproduces a run, and
    with the same weights and knobs the same ids come out as from transformers. `seed=` is gptviz's extra: a
    run reproducible on its own, whatever else used the global RNG.
    """
    if seed is None:
        return None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer (or None for torch's global RNG), got {seed!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
