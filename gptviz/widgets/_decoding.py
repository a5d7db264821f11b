"""The generation panel's decoding knobs: their table (labels, ranges, meanings), the checks that refuse an
out-of-range value with a message naming every bad one, and `restage`, which draws one recorded step again with
other knobs (live sampling: the panel moves a slider, the step's distribution follows without regenerating).

Pure: no widgets. The transforms themselves are `gptviz.logits`'; the step records are `gptviz.steps`'.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import replace

import torch

from ..logits import DEFAULT_TOP_K, NEG_INF, process
from ..logits import check_knobs as check_decoding
from ..steps import Stage

# ---- the decoding knobs: the constructor's arguments, the sliders' ranges and the checks are one table ----------
# generate()'s name: (slider label, lowest, highest, step, what the values mean); the defaults are the constructor's
KNOBS = {
    "temperature": ("temperature", 0.0, 2.0, 0.05, "0 = greedy, 1 = the model's own distribution"),
    "top_k": ("top-k (0 = off)", 0, 200, 1, "0 or None = off; at most the vocabulary size"),
    "top_p": ("top-p (1 = off)", 0.01, 1.0, 0.01, "1 = off; 0.9 keeps the tokens holding 90% of the mass"),
    "repetition_penalty": ("repetition penalty", 1.0, 2.0, 0.05, "1 = off, 1.2 is a usual value"),
    "no_repeat_ngram_size": ("no-repeat n-gram", 0, 6, 1, "0 = off"),
    "num_beams": ("beams", 1, 8, 1, "1 = no beam search"),
    "max_new_tokens": ("max new tokens", 1, 400, 1, "tokens per generation"),
}


def knob_range(name: str, vocab_size: int) -> tuple:
    """(lowest, highest) a knob may take in the panel; top-k's highest is the vocabulary (at most 200)."""
    lo, hi = KNOBS[name][1:3]
    return (lo, min(hi, vocab_size)) if name == "top_k" else (lo, hi)


def _knob_problem(name: str, value, vocab_size: int) -> str | None:
    if name == "do_sample":
        return None if isinstance(value, bool) else f"do_sample must be True (sample) or False (greedy), got {value!r}"
    if name == "seed":
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
            return None
        return f"seed must be an integer >= 0 (the same seed gives the same text), got {value!r}"
    lo, hi = knob_range(name, vocab_size)
    whole = isinstance(KNOBS[name][3], int)  # the slider's step says whether it is an IntSlider
    kind = numbers.Integral if whole else numbers.Real
    if isinstance(value, kind) and not isinstance(value, bool) and lo <= value <= hi:  # NaN fails this too
        return None
    return f"{name} must be {'an integer' if whole else 'a number'} from {lo} to {hi} ({KNOBS[name][4]}), got {value!r}"


def check_knobs(vocab_size: int, **knobs) -> dict:
    """The knobs as the panel's controls take them (top_k None -> 0), or a ValueError that names every bad
    one with its allowed range and what its values mean (a slider would silently clip an out-of-range value)."""
    if knobs.get("top_k", 0) is None:
        knobs = {**knobs, "top_k": 0}
    if knobs.get("top_k") == DEFAULT_TOP_K:  # transformers' default; a char model has fewer tokens than that
        knobs = {**knobs, "top_k": min(DEFAULT_TOP_K, vocab_size)}
    problems = [p for p in (_knob_problem(n, v, vocab_size) for n, v in knobs.items()) if p]
    if problems:
        raise ValueError("GenerationExplorer: " + "; ".join(problems))
    return knobs


def restage(step, raw: torch.Tensor, sequence: list[int], vocab_size: int, knobs: dict, new_tokens: int):
    """`step` with its stages computed again from its raw logits `raw` (1, V) under other `knobs` (the panel's
    `knobs()`), through `logits.process`, as `generate_steps` records them: the same candidates, each stage's
    probabilities, tokens kept and entropy; `prob` is the chosen token's in the final stage (0: these knobs
    would remove it). `sequence`: the ids before the step (the penalties read them). Returns (step, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k = check_decoding(
            vocab_size,
            knobs["do_sample"],
            knobs["temperature"],
            knobs["top_k"],
            knobs["top_p"],
            knobs["repetition_penalty"],
            knobs["no_repeat_ngram_size"],
            knobs.get("eos_token_id"),
        )
    _, stages = process(raw.float(), torch.tensor([sequence]), k, keep_stages=True, new_tokens=new_tokens)
    ids = step.candidates
    out = []
    for name, lg in stages:
        logp = lg[0].log_softmax(dim=-1)  # (V,)
        probs = logp.exp()
        entropy = float(-(probs * logp).nansum())  # 0 * -inf terms are skipped
        out.append(Stage(name, ids, probs[ids], int((logp > NEG_INF).sum()), entropy))
    final = stages[-1][1][0].softmax(dim=-1)
    first = stages[0][1][0].softmax(dim=-1)
    new = replace(
        step,
        stages=out,
        prob=float(final[step.token_id]),
        raw_prob=float(first[step.token_id]),
        entropy=out[-1].entropy,
    )
    return new, [str(w.message) for w in caught]
