"""Step records for the generation timeline: `generate_steps` yields one `StepRecord` per new token.

Each record holds the candidates and their probabilities after every transform, the chosen token and, when
asked, the new token's attention row. The decoding itself is `gptviz.sampling`'s (the same loop `generate`
runs, so the tokens are exactly generate's); the widgets consume these records and never run the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .errors import InputError
from .logits import NEG_INF, check_knobs, make_generator
from .sampling import _decode, _mask_for, _prompt, _Step


@dataclass
class Stage:
    """The next-token distribution after one transform, seen through the step's candidate ids."""

    name: str  # one of STAGE_NAMES
    ids: torch.Tensor  # (k,) the step's candidates, the same ids at every stage
    probs: torch.Tensor  # (k,) their probabilities in this stage's distribution
    kept: int  # how many tokens of the vocabulary still have probability > 0
    entropy: float  # of this stage's whole distribution, in nats


@dataclass
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


def _records(steps: Iterator[_Step], start: int, k: int, tokenizer) -> Iterator[StepRecord]:
    for i, step in enumerate(steps):
        logits = step.stages[0][1][:1] if len(step.stages) == 1 else torch.stack([lg[0] for _, lg in step.stages])
        logp = logits.log_softmax(dim=-1)  # (S, V) one row per stage
        S = logp.size(0)
        # the k raw favourites and the chosen token; whether it is among them is settled on the host, after the copy
        idx = torch.cat([logp[0].topk(k).indices, step.next_ids[:1]])  # (k + 1,)
        # Few whole-vocabulary passes and ONE copy to the host per step: those ids' probabilities at every stage, how
        # many tokens each stage keeps, its entropy, the ids and the attention rows, all in one float32 tensor
        # (ids are exact in float32 below 2**24). Nothing else in a recorded step waits for the device.
        probs = logp.exp()  # (S, V)
        parts = [
            probs[:, idx].flatten(),  # (S * (k + 1)) the ids at every stage
            (logp > NEG_INF).sum(dim=-1).to(probs.dtype),  # (S,) tokens kept
            -(probs * logp).nansum(dim=-1),  # (S,) entropy; 0 * -inf terms are skipped
            idx.to(probs.dtype),  # (k + 1,)
        ]
        att = step.window.attention  # (B, L, nh, Tk) or None
        if att is not None:
            parts.append(att[0].flatten().to(probs.dtype))  # (L * nh * Tk)
        host = torch.cat(parts).cpu()
        n = S * (k + 1) + 2 * S + k + 1
        head = host[:n].tolist()
        table = host[: S * (k + 1)].view(S, k + 1)  # (S, k + 1)
        kept, entropy = head[S * (k + 1) : S * (k + 2)], head[S * (k + 2) : S * (k + 3)]
        cand, chosen = [int(x) for x in head[S * (k + 3) : n - 1]], int(head[n - 1])
        ids = host[S * (k + 3) : n - 1].long()  # (k,)
        if chosen in cand:
            stage_probs = table[:, :k]
        else:  # the chosen token takes the last slot
            cand[-1] = chosen
            ids[-1] = chosen
            stage_probs = torch.cat([table[:, : k - 1], table[:, k:]], dim=1)
        yield StepRecord(
            step=i,
            position=start + i,
            token_id=chosen,
            token=tokenizer.tokens([chosen])[0] if tokenizer is not None else None,
            prob=head[(S - 1) * (k + 1) + k],  # column k of the table is the chosen token, at every stage
            raw_prob=head[k],
            entropy=entropy[-1],
            stages=[
                Stage(name, ids, stage_probs[j], int(kept[j]), entropy[j]) for j, (name, _) in enumerate(step.stages)
            ],
            attention=host[n:].view(att.shape[1:]) if att is not None else None,  # (L, nh, Tk) float32
            context_start=step.window.context_start,
            candidate_tokens=tokenizer.tokens(cand) if tokenizer is not None else None,
        )
