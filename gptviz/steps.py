"""Step records for the generation timeline: `generate_steps` yields one `StepRecord` per new token.

Each record holds the candidates and their probabilities after every transform, the chosen token and, when
asked, the new token's attention row. The decoding itself is `gptviz.sampling`'s (the same loop `generate`
runs, so the tokens are exactly generate's); the widgets consume these records and never run the model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .errors import InputError
from .logits import NEG_INF, check_knobs, make_generator
from .sampling import _decode, _mask_for, _prompt, _Step


@dataclass(slots=True)
class Stage:
    """The next-token distribution after one transform, seen through the step's candidate ids."""

    name: str  # one of STAGE_NAMES
    ids: torch.Tensor  # (k,) the step's candidates, the same ids at every stage
    probs: torch.Tensor  # (k,) their probabilities in this stage's distribution
    kept: int  # how many tokens of the vocabulary still have probability > 0
    entropy: float  # of this stage's whole distribution, in nats


@dataclass(slots=True)
class StepRecord:
    """One generated token and how it was chosen. Tensors are on the CPU."""

    step: int  # 0 for the first new token of this call
    position: int  # absolute position of the new token in the full sequence
    token_id: int
    token: str | None  # display string (tokenizer.tokens) when a tokenizer was given
    prob: float  # probability of the chosen token in the final (sampled-from) distribution
    raw_prob: float  # ... in the raw softmax(logits)
    entropy: float  # of the final distribution, in nats
    stages: list[Stage]  # "raw", then one per transform applied, in order
    attention: torch.Tensor | None  # (L, nh, Tk): the row of the query at position - 1, over the window
    context_start: int  # first absolute position inside the window (> 0 once the window slides)
    candidate_tokens: list[str] | None = None  # display strings of stages[*].ids

    @property
    def candidates(self) -> torch.Tensor:
        """(k,) the candidate ids shared by every stage."""
        return self.stages[0].ids

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(
            f"no stage {name!r} in this step; it has {[s.name for s in self.stages]} "
            "(a transform only appears when its knob is on)"
        )


def generate_steps(
    model,
    ids,
    max_new_tokens: int = 20,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = 50,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    min_new_tokens: int = 0,
    seed: int | None = None,
    use_cache: bool = True,
    k: int = 10,
    record_attention: bool = False,
    tokenizer=None,
    attention_mask: torch.Tensor | None = None,
    compile: bool | str | None = None,
) -> Iterator[StepRecord]:
    """Generate from one prompt, yielding a `StepRecord` per new token (greedy or sampling; no beams).

    `ids` is a list of ids, a (T,) or (1, T) tensor, or a string when `tokenizer` is given. The tokens are
    exactly those `generate` picks with the same settings and seed.

    Candidates: the k tokens most likely in the raw distribution; when the chosen token is not among them it
    takes the last slot. Every stage reports the probabilities of these same ids, so a viewer can follow one
    token through the penalties and filters, plus how many tokens that stage keeps.

    Forking ("take candidate X at step t and continue"): call generate_steps again with
    `prompt + chosen[:t] + [X]` as ids; positions stay absolute, penalties see the forced tokens.
    """
    if isinstance(ids, str):
        if tokenizer is None:
            raise InputError("got text but no tokenizer; pass tokenizer=... or encoded ids")
        ids = tokenizer.encode(ids)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k (candidates per step) must be a positive integer, got {k!r}")
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
    seqs = _prompt(model, ids)
    mask = _mask_for(attention_mask, seqs)
    if seqs.size(0) != 1:
        raise InputError(
            f"generate_steps follows one sequence; got a batch of {seqs.size(0)}. Loop over the "
            "prompts, or use generate() for batches and beam search"
        )
    gen = make_generator(seed, model.device) if knobs.do_sample else None
    steps = _decode(
        model,
        seqs,
        max_new_tokens,
        knobs,
        gen,
        use_cache,
        keep_stages=True,
        record_attention=record_attention,
        attention_mask=mask,
        compile=compile,
    )
    return _records(steps, seqs.size(1), min(k, model.config.vocab_size), tokenizer)


# Records are summarised a few steps at a time: the summary is ~20 small tensor calls whatever the number of steps,
# and at the lab's small shapes each call costs about as much as a step's whole arithmetic (more in a real decode loop,
# where the step's own work has just pushed the summary's code and data out of the CPU's caches). The first record
# comes at once; after it a chunk closes when it holds CHUNK steps or when MAX_WAIT_S has passed since its first
# step, whichever comes first, so a live view streams smoothly whatever the model's speed (a 0.5 ms step: ~64 steps
# per copy; a 20 ms step: 3).
CHUNK = 64
MAX_WAIT_S = 0.05


@dataclass(slots=True)
class _Pending:
    """What a record needs from one step, kept until its chunk is summarised (each step's tensors are its own)."""

    stages: list[tuple[str, torch.Tensor]]  # (name, logits (1, V))
    chosen: torch.Tensor  # (1,) the new token, where the model runs
    context_start: int
    attention: torch.Tensor | None = None  # (L, nh, Tk), filled in when the chunk is summarised


def _records(steps: Iterator[_Step], start: int, k: int, tokenizer) -> Iterator[StepRecord]:
    pending: list[_Pending] = []
    size, since, done, window = 1, 0.0, 0, None
    clock = time.perf_counter
    for step in steps:
        window = step.window
        pending.append(_Pending(step.stages, step.next_ids, window.context_start))  # next_ids: (1,), one sequence
        if len(pending) == 1:
            since = clock()
        if len(pending) >= size or clock() - since > MAX_WAIT_S:
            yield from _summarise(pending, window, start + done, done, k, tokenizer)
            done, pending, size = done + len(pending), [], CHUNK
    if pending:
        yield from _summarise(pending, window, start + done, done, k, tokenizer)


def _summarise(chunk: list[_Pending], window, position: int, first: int, k: int, tokenizer) -> list[StepRecord]:
    """Records for consecutive steps: every whole-vocabulary pass once for all their stages, and ONE copy to the host
    (the candidates' probabilities at every stage, tokens kept, entropies, the ids and the attention rows, in one
    float32 tensor; ids are exact in float32 below 2**24). Nothing else in a recorded chunk waits for the device."""
    C = len(chunk)
    if window.record:  # the chunk's attention rows, one batched product for the eager steps among them
        rows = window.take_rows(row=0)  # (L, nh, Tk) each
        assert len(rows) == C, (len(rows), C)
        for p, row in zip(chunk, rows):
            p.attention = row
    # (R, V) every stage of every step: each stage's logits are (1, V), generate_steps follows one sequence
    logits = torch.cat([lg for p in chunk for _, lg in p.stages]).float()
    R = logits.size(0)
    S = len(chunk[0].stages)
    uniform = all(len(p.stages) == S for p in chunk)  # the same transforms at every step (usual): rows step-major
    owner = None if uniform else [j for j, p in enumerate(chunk) for _ in p.stages]  # (R,) the step of each row
    logp = logits.log_softmax(dim=-1)
    probs = logp.exp()
    raw = logp[::S] if uniform else logp[[owner.index(j) for j in range(C)]]  # (C, V) each step's raw distribution
    # per step: the k raw favourites, then the chosen token (whether it is among them is settled on the host)
    cols = torch.cat([raw.topk(k, dim=-1).indices, torch.cat([p.chosen for p in chunk])[:, None]], dim=1)
    cols_of_row = (cols if S == 1 else cols.repeat_interleave(S, dim=0)) if uniform else cols[owner]  # (R, k + 1)
    on_host = logp.device.type == "cpu"  # the rows are where they will be read: no copy to gather them
    parts = [
        probs.gather(1, cols_of_row).flatten(),  # (R * (k + 1)) the step's ids at every stage
        (logp > NEG_INF).sum(dim=-1).to(probs.dtype),  # (R,) tokens kept
        -(probs * logp).nansum(dim=-1),  # (R,) entropy; 0 * -inf terms are skipped
        cols.flatten().to(probs.dtype),  # (C * (k + 1))
    ] + [p.attention.flatten().to(probs.dtype) for p in chunk if p.attention is not None and not on_host]
    host = torch.cat(parts).cpu()
    n = R * (k + 3) + C * (k + 1)
    head = host[: R * (k + 3)].tolist()
    table = host[: R * (k + 1)].view(R, k + 1)
    kept, entropy = head[R * (k + 1) : R * (k + 2)], head[R * (k + 2) :]
    ids_all = host[R * (k + 3) : n].view(C, k + 1).long()
    cols_all = ids_all.tolist()  # C lists of k + 1 ints
    for j, ids in enumerate(cols_all):
        if ids[k] not in ids[:k]:  # the chosen token is not a raw favourite: it takes the last slot
            ids[k - 1] = ids[k]
            ids_all[j, k - 1] = ids[k]
            here = list(range(j * S, (j + 1) * S)) if uniform else [r for r, o in enumerate(owner) if o == j]
            table[here, k - 1] = table[here, k]
    stage_probs, step_ids = table[:, :k].unbind(0), ids_all[:, :k].unbind(0)  # (k,) views, one per stage / step
    records, r, offset = [], 0, n
    for j, p in enumerate(chunk):
        S_j, cand, chosen = len(p.stages), cols_all[j][:k], cols_all[j][k]
        attention = p.attention
        if attention is not None:
            if on_host:
                attention = attention if attention.dtype == torch.float32 else attention.float()  # (L, nh, Tk)
            else:
                attention = host[offset : offset + attention.numel()].view(attention.shape)  # (L, nh, Tk) float32
                offset += p.attention.numel()
        records.append(
            StepRecord(
                step=first + j,
                position=position + j,
                token_id=chosen,
                token=tokenizer.tokens([chosen])[0] if tokenizer is not None else None,
                prob=head[(r + S_j - 1) * (k + 1) + k],  # column k is the chosen token, at every stage
                raw_prob=head[r * (k + 1) + k],
                entropy=entropy[r + S_j - 1],
                stages=[
                    Stage(name, step_ids[j], stage_probs[r + s], int(kept[r + s]), entropy[r + s])
                    for s, (name, _) in enumerate(p.stages)
                ],
                attention=attention,
                context_start=p.context_start,
                candidate_tokens=tokenizer.tokens(cand) if tokenizer is not None else None,
            )
        )
        r += S_j
    return records
