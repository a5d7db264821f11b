"""Generation: the decoding loops and `generate` (greedy, sampling, beam search); step records are gptviz.steps'.

Read top to bottom:

1. The pure next-token transforms live in `gptviz.logits` (re-exported here): temperature, top-k, top-p,
   repetition penalty, no-repeat-n-gram, min-new-tokens; `gptviz.decode.DecodeWindow` feeds the model (KV cache,
   sliding window, padding mask, the one-token decode step).
2. `generate(model, idx, ...)` -> prompt + new ids, with transformers' knobs and results: the same ids as
   `GPT2LMHeadModel.generate` for greedy and beam search on the same weights (tests say so).
3. `gptviz.steps.generate_steps` runs the same decoding loop (`_decode`) and turns each step into a
   `StepRecord` for the lab's generation timeline.

Decisions a user may trip over:

- Order of transforms (as in transformers): repetition penalty, no-repeat-n-gram, min-new-tokens, then, only
  when sampling, temperature, top-k (50 by default, as transformers' GenerationConfig), top-p. Greedy
  decoding and beam search without sampling ignore temperature / top-k / top-p (a warning says so).
  `temperature=0` means greedy decoding (the limit T -> 0), whatever `do_sample`.
- Penalties look at the whole sequence so far, prompt included, even the part outside the context window.
- Beam search applies the processors to log-probabilities, exactly as transformers does, so scores match.
- Past `block_size` the model conditions on the last `block_size` tokens (a sliding window, as nanoGPT).
  Learned absolute positions cannot slide inside a KV cache, so once the window is full every step re-reads
  the whole window without a cache: the cached and uncached paths always choose the same tokens.
- Only the last position's logits are computed during generation, so `hook_logits` sees (B, 1, V).
- Sampling without `seed=` draws from torch's global RNG, as transformers does: `torch.manual_seed(0)` then the
  same call gives the same ids as transformers on the same weights.
- Padded batches: pass the tokenizer's `attention_mask` (left padding); each row then generates what it
  would alone. Finished rows are filled with `pad_token_id` (default: the eos id).

This module knows nothing about tokenizers and nothing about widgets: the timeline widget consumes
`gptviz.steps.generate_steps`. The `gptviz sample` command lives in
`gptviz.commands.sample`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decode import DecodeWindow
from .errors import InputError
from .logits import (  # noqa: F401
    NEG_INF,
    STAGE_NAMES,
    Knobs,
    apply_min_new_tokens,
    apply_no_repeat_ngram,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    check_knobs,
    make_generator,
    process,
    sample_next_token,
)


# ---- prompts and the context window --------------------------------------------------------------------------
def _prompt(model, ids, stacklevel: int = 3) -> torch.Tensor:
    """Ids as a (B, T) long tensor on the model's device, checked, with a warning if the window crops them."""
    if isinstance(ids, torch.Tensor):
        idx = ids.detach()
    else:
        try:
            idx = torch.tensor(ids, dtype=torch.long)
        except (TypeError, ValueError) as e:
            raise InputError(
                f"expected token ids (a list of ints or a (B, T) tensor), got {type(ids).__name__}: "
                f"{e}; encode text first, e.g. tokenizer.encode('ROMEO:')"
            ) from None
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise InputError(
            f"expected token ids of shape (B, T) or (T,) with an integer dtype, got shape "
            f"{tuple(idx.shape)} and dtype {idx.dtype}"
        )
    if idx.numel() == 0:
        raise InputError(
            "the prompt is empty: give at least one token, e.g. tokenizer.encode('ROMEO:'); for "
            "unconditional text start from a separator such as '\\n' or GPT-2's <|endoftext|> (50256)"
        )
    V, bs = model.config.vocab_size, model.config.block_size
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= V:
        raise InputError(
            f"token id {lo if lo < 0 else hi} is outside the vocabulary (0..{V - 1}); "
            "was the prompt encoded with this model's tokenizer?"
        )
    T = idx.size(1)
    if T > bs:
        warnings.warn(
            f"the prompt has {T} tokens but the model's context window (block_size) is {bs}: the first "
            f"{T - bs} tokens were left out of the context (they still start the returned ids)",
            UserWarning,
            stacklevel=stacklevel,
        )
    return idx.to(device=model.device, dtype=torch.long)


# ---- 2. generate ---------------------------------------------------------------------------------------------------
@dataclass
class GenerateOutput:
    """What `generate(..., return_dict_in_generate=True)` returns, with transformers' field names."""

    sequences: torch.Tensor  # (B * num_return_sequences, T + n) prompt + new ids
    scores: tuple[torch.Tensor, ...] | None = None  # per step, (B, V) logits after every transform (output_scores)
    # per step, per layer, (B, nh, 1, Tk): the new token's attention row (output_attentions). transformers'
    # first step holds the whole prompt's square; gptviz records the last prompt token's row there too.
    attentions: tuple[tuple[torch.Tensor, ...], ...] | None = None
    sequences_scores: torch.Tensor | None = None  # beam search: each returned sequence's final score

    def __getitem__(self, key: str):  # transformers' outputs are also read as out["sequences"]
        return getattr(self, key)


def _mask_for(attention_mask, seqs: torch.Tensor) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    mask = torch.as_tensor(attention_mask, device=seqs.device)
    mask = mask[None] if mask.dim() == 1 else mask
    if mask.shape != seqs.shape:
        raise InputError(
            f"attention_mask has shape {tuple(mask.shape)} but the ids have {tuple(seqs.shape)}; pass "
            "the mask the tokenizer returned with these ids (1 = real token, 0 = padding)"
        )
    if not bool(mask[:, -1].all()):
        raise InputError(
            "a prompt ends in padding (attention_mask is 0 at the last position): generation needs "
            "left padding, e.g. tokenizer.padding_side = 'left' before tokenizer(texts, padding=True)"
        )
    return mask


def generate(
    model,
    idx,
    max_new_tokens: int = 20,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = 50,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    min_new_tokens: int = 0,
    seed: int | None = None,
    use_cache: bool = True,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    attention_mask: torch.Tensor | None = None,
    output_scores: bool = False,
    output_attentions: bool = False,
    return_dict_in_generate: bool = False,
    compile: bool | str | None = None,
) -> torch.Tensor | GenerateOutput:
    """Prompt ids (B, T) -> prompt + new ids (B * num_return_sequences, T + n), like transformers' generate.

    Greedy by default; `do_sample=True` samples from torch's global RNG (so `torch.manual_seed` reproduces a
    run, as in transformers) with transformers' default `top_k=50` (0 or None = off), or from a private RNG
    when `seed=` is given; `num_beams > 1` runs beam search (`length_penalty` divides a finished beam's summed
    log-prob by its new length ** length_penalty; `early_stopping` True / False / "never" as in transformers).
    The rows of one prompt are adjacent and, for beam search, best first. With `eos_token_id`, a finished row is
    padded with `pad_token_id` (default: eos) and generation stops once every row has finished, so n can be
    smaller than `max_new_tokens`; `min_new_tokens` forbids eos until that many tokens exist. A left-padded
    batch needs its `attention_mask`: every row then gets what it gets alone. `return_dict_in_generate=True`
    returns a GenerateOutput (sequences, and scores / attentions when asked).
    `compile`: run the one-token decode step through torch.compile (True), never (False), or when it pays
    (None: on CUDA for >= 128 new tokens; see gptviz.decode). The tokens are the same either way.
    """
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    for name, value in (("num_beams", num_beams), ("num_return_sequences", num_return_sequences)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    knobs = check_knobs(
        model.config.vocab_size,
        do_sample,
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        no_repeat_ngram_size,
        eos_token_id,
        min_new_tokens,
    )
    if pad_token_id is not None and (
        not isinstance(pad_token_id, int) or not 0 <= pad_token_id < model.config.vocab_size
    ):
        raise InputError(f"pad_token_id must be an id in 0..{model.config.vocab_size - 1}, got {pad_token_id!r}")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise InputError(
            f"beam search keeps {num_beams} beams, so it cannot return {num_return_sequences} "
            f"sequences; raise num_beams to at least {num_return_sequences}"
        )
    if num_beams == 1 and not knobs.do_sample and num_return_sequences > 1:
        raise InputError(
            "greedy decoding gives the same sequence every time; for several different sequences "
            "use do_sample=True or num_beams >= num_return_sequences"
        )
    if num_beams > 1 and (output_scores or output_attentions):
        raise InputError(
            "gptviz records per-step scores and attentions for greedy decoding and sampling, not for "
            "beam search; drop output_scores/output_attentions (return_dict_in_generate still gives "
            "sequences_scores), or use num_beams=1"
        )
    if early_stopping not in (True, False, "never"):
        raise InputError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    early_stopping = early_stopping if early_stopping == "never" else bool(early_stopping)
    seqs = _prompt(model, idx)
    mask = _mask_for(attention_mask, seqs)
    gen = make_generator(seed, model.device) if knobs.do_sample else None
    pad = pad_token_id if pad_token_id is not None else knobs.eos[0] if knobs.eos else None
    out = GenerateOutput(seqs.repeat_interleave(num_return_sequences, dim=0))
    if max_new_tokens > 0 and num_beams > 1:
        out.sequences, out.sequences_scores = _beam_search(
            model,
            seqs,
            max_new_tokens,
            knobs,
            num_beams,
            num_return_sequences,
            float(length_penalty),
            early_stopping,
            gen,
            use_cache,
            mask,
            pad,
        )
    elif max_new_tokens > 0:
        if mask is not None:
            mask = mask.repeat_interleave(num_return_sequences, dim=0)
        scores, attentions, window = [], [], None
        for step in _decode(
            model,
            out.sequences,
            max_new_tokens,
            knobs,
            gen,
            use_cache,
            record_attention=output_attentions,
            attention_mask=mask,
            pad=pad,
            compile=compile,
        ):
            out.sequences, window = step.seqs, step.window
            if output_scores:
                scores.append(step.scores)
        if output_attentions and window is not None:  # every step's rows at once: fewer, larger products
            for rows in window.take_rows():  # (B, L, nh, Tk)
                attentions.append(tuple(rows[:, layer, :, None] for layer in range(rows.shape[1])))
        out.sequences = out.sequences.contiguous()  # a view of the decoding buffer until here
        out.scores = tuple(scores) if output_scores else None
        out.attentions = tuple(attentions) if output_attentions else None
    return out if return_dict_in_generate else out.sequences


@dataclass
class _Step:
    seqs: torch.Tensor  # (B, n + 1) with the new token
    next_ids: torch.Tensor  # (B,)
    scores: torch.Tensor  # (B, V) the logits the token was chosen from, after every transform
    stages: list[tuple[str, torch.Tensor]]  # (name, logits (B, V)), "raw" first, when kept
    window: DecodeWindow


def _decode(
    model,
    seqs: torch.Tensor,
    max_new_tokens: int,
    knobs: Knobs,
    gen: torch.Generator | None,
    use_cache: bool,
    keep_stages: bool = False,
    record_attention: bool = False,
    attention_mask: torch.Tensor | None = None,
    pad: int | None = None,
    compile: bool | str | None = None,
) -> Iterator[_Step]:
    """Greedy or sampling, one token per step, every row in step; finished rows are padded with `pad`.

    The ids live in one buffer (B, T + max_new_tokens) allocated up front; each step's `seqs` is a view of its
    first n + 1 columns (later steps write only past them, so a view handed out stays what it was).
    """
    B, T = seqs.shape
    window = DecodeWindow(
        model,
        use_cache,
        T + max_new_tokens,
        record_attention,
        attention_mask,
        compile=compile,
        new_tokens=max_new_tokens,
    )
    eos = torch.tensor(knobs.eos, device=seqs.device, dtype=torch.long)
    pad = knobs.eos[0] if pad is None and knobs.eos else pad
    unfinished = torch.ones(B, dtype=torch.bool, device=seqs.device)
    buffer = torch.empty(B, T + max_new_tokens, dtype=seqs.dtype, device=seqs.device)
    buffer[:, :T] = seqs
    for i in range(max_new_tokens):
        logits, stages = process(window.next_logits(seqs), seqs, knobs, keep_stages, new_tokens=i)
        next_ids = sample_next_token(logits, gen, knobs.do_sample)  # (B,)
        if knobs.eos:
            next_ids = torch.where(unfinished, next_ids, pad)
        buffer[:, T + i] = next_ids
        seqs = buffer[:, : T + i + 1]
        yield _Step(seqs, next_ids, logits, stages, window)
        if knobs.eos:
            unfinished &= ~torch.isin(next_ids, eos)
            if not unfinished.any():
                return


def _beam_search(
    model,
    prompt: torch.Tensor,
    max_new_tokens: int,
    knobs: Knobs,
    num_beams: int,
    num_return_sequences: int,
    length_penalty: float,
    early_stopping: bool | str,
    gen: torch.Generator | None,
    use_cache: bool,
    attention_mask: torch.Tensor | None = None,
    pad: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search with transformers' rules, step for step, so the same weights give the same ids.

    Each step scores (beam, token) pairs by summed log-prob and takes the best K = 2 * num_beams (more with
    several eos ids), so that num_beams of them are still running even if many just ended. The ended ones
    among the best num_beams enter the finished set with score sum / new_len ** length_penalty; the set keeps
    its num_beams best. The search stops when every candidate ended (max length), or when the finished set is
    full and the best running beam cannot beat its worst member any more (`early_stopping`).
    Returns (sequences (B * num_return_sequences, T + n), their scores (B * num_return_sequences,)).
    """
    B, T = prompt.shape
    nb, V, dev = num_beams, model.config.vocab_size, prompt.device
    eos = torch.tensor(knobs.eos, device=dev, dtype=torch.long)
    K = max(2, 1 + len(knobs.eos)) * nb
    max_len = T + max_new_tokens
    BIG = -1.0e9  # "impossible" score, added rather than -inf so sums and sorts stay finite

    running = torch.full((B, nb, max_len), pad if pad is not None else -1, dtype=torch.long, device=dev)
    running[:, :, :T] = prompt[:, None, :]
    run_scores = torch.zeros(B, nb, device=dev)
    run_scores[:, 1:] = BIG  # all beams start equal: let only the first one expand at step one
    finished = running.clone()
    fin_scores = torch.full((B, nb), BIG, device=dev)
    fin_done = torch.zeros(B, nb, dtype=torch.bool, device=dev)  # slot holds a real finished hypothesis
    fin_len = torch.zeros(B, nb, dtype=torch.long, device=dev)  # its number of new tokens
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)
    in_top_nb = torch.arange(K, device=dev) < nb  # (K,)
    row_offset = torch.arange(B, device=dev)[:, None] * nb  # (B, 1)
    # every beam of a prompt shares its padding; reordering beams never moves a row to another prompt
    mask = attention_mask.repeat_interleave(nb, dim=0) if attention_mask is not None else None
    window = DecodeWindow(model, use_cache, max_len, attention_mask=mask)

    def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # x (B, N, ...), index (B, M)
        return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))

    for cur in range(T, max_len):
        flat = running[:, :, :cur].reshape(B * nb, cur)  # (B*nb, cur)
        logp = F.log_softmax(window.next_logits(flat), dim=-1)  # (B*nb, V)
        logp, _ = process(
            logp, flat, knobs, False, min_tokens_to_keep=len(knobs.eos) + 1 if knobs.eos else 2, new_tokens=cur - T
        )
        total = (logp.view(B, nb, V) + run_scores[:, :, None]).view(B, nb * V)  # (B, nb*V)
        if knobs.do_sample:
            cand = torch.multinomial(total.softmax(dim=-1), K, generator=gen)  # (B, K)
            cand_scores, order = total.gather(1, cand).sort(dim=-1, descending=True)
            cand = cand.gather(1, order)
        else:
            cand_scores, cand = total.topk(K, dim=-1)  # (B, K)
        src_beam, token = cand // V, cand % V  # (B, K)
        cand_seqs = take(running, src_beam)  # (B, K, max_len)
        cand_seqs[:, :, cur] = token
        ended = torch.isin(token, eos) | (cur + 1 >= max_len)  # (B, K)

        # The best nb candidates that did not end keep running.
        alive = cand_scores + ended.to(torch.float32) * BIG
        keep = alive.topk(nb, dim=-1).indices  # (B, nb)
        running, run_scores = take(cand_seqs, keep), take(alive, keep)
        window.reorder((take(src_beam, keep) + row_offset).view(-1))

        # Ended candidates among the best nb compete for the finished set.
        new_done = ended & in_top_nb
        scored = cand_scores / ((cur + 1 - T) ** length_penalty)
        scored += (fin_done.all(dim=-1, keepdim=True) & (early_stopping is True)).to(torch.float32) * BIG
        scored += (~improvable).to(torch.float32) * BIG
        scored += (~new_done) * BIG
        best = torch.cat([fin_scores, scored], dim=1).topk(nb, dim=-1).indices  # (B, nb)
        finished = take(torch.cat([finished, cand_seqs], dim=1), best)
        fin_scores = take(torch.cat([fin_scores, scored], dim=1), best)
        fin_done = take(torch.cat([fin_done, new_done], dim=1), best)
        fin_len = take(torch.cat([fin_len, torch.full_like(cand, cur + 1 - T)], dim=1), best)

        # Can a running beam still beat the worst finished one? (transformers' heuristic, kept for parity)
        new_len = max_len - T if early_stopping == "never" and length_penalty > 0 else cur + 1 - T
        best_possible = run_scores[:, :1] / (new_len**length_penalty)  # (B, 1)
        worst = torch.where(fin_done, fin_scores.min(dim=1, keepdim=True).values, BIG)  # (B, nb)
        improvable = improvable & (best_possible > worst).any(dim=-1, keepdim=True)
        all_full = bool(fin_done.all()) and early_stopping is True
        if not bool(improvable.any()) or all_full or bool(ended.all()):
            break

    n_new = int(fin_len[:, :num_return_sequences].max())
    return (
        finished[:, :num_return_sequences, : T + n_new].reshape(B * num_return_sequences, T + n_new),
        fin_scores[:, :num_return_sequences].reshape(-1),
    )
