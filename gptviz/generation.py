"""`model.generate(...)` as transformers users write it: the same keywords, the same meanings, the same defaults.

    out = model.generate(input_ids, max_length=50, num_return_sequences=1)          # total length 50
    out = model.generate(**tok(texts, return_tensors="pt", padding=True), max_new_tokens=20)
    out = model.generate(input_ids=ids, max_length=50, num_beams=5, no_repeat_ngram_size=2)
    torch.manual_seed(0); out = model.generate(ids, do_sample=True, temperature=0.7)  # top_k=50 by default

This module translates; the decoding itself is `gptviz.sampling.generate`. The rules, as in transformers:
- `max_length` counts the prompt; `max_new_tokens` counts only new tokens and wins when both are given; with
  neither, 20 new tokens (transformers 5's rule, capped at the model's block size); `min_length` /
  `min_new_tokens` keep eos away until then.
- Defaults come from `GenerationConfig()` (transformers' values: top_k=50, top_p=1.0, temperature=1.0, greedy),
  overridden by the model's own `model.generation_config` (filled from a Hugging Face folder's
  generation_config.json, or from the tokenizer's eos/pad by `gptviz.load`), then by `generation_config=`,
  then by keywords.
- Sampling draws from torch's global RNG, so `torch.manual_seed` reproduces a run; `seed=` (a gptviz extra)
  uses a private one instead. `compile=` (another) chooses the compiled decode step (gptviz.decode).
- A keyword gptviz does not implement is refused with what to use instead; a misspelt one names the closest.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, fields, replace

import torch

from .errors import InputError, UsageError
from .sampling import GenerateOutput
from .sampling import generate as decode


@dataclass
class GenerationConfig:
    """transformers' GenerationConfig fields that gptviz implements, with transformers' defaults."""

    max_length: int | None = None  # prompt + new tokens; with neither length set, 20 new tokens (transformers 5)
    max_new_tokens: int | None = None  # new tokens only; wins over max_length
    min_length: int = 0
    min_new_tokens: int | None = None
    do_sample: bool = False
    num_beams: int = 1
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float | None = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    use_cache: bool = True
    output_scores: bool = False
    output_attentions: bool = False
    return_dict_in_generate: bool = False

    @classmethod
    def from_transformers(cls, config, strict: bool = True) -> GenerationConfig:
        """From a transformers GenerationConfig (or a dict of its fields): the fields gptviz knows, at their values.

        A field gptviz does not implement, set to something other than its default, is refused (`strict`), or
        left out with a warning that names it (what loading a checkpoint's generation_config.json does).
        """
        d = config if isinstance(config, dict) else config.to_dict()
        mine = {f.name for f in fields(cls)}
        used = {k: v for k, v in d.items() if k in UNSUPPORTED and v not in (None, False, 1.0, 0, [], {})}
        if strict:
            _refuse_unsupported(used)
        elif used:
            warnings.warn(
                f"generation_config: gptviz ignores {', '.join(sorted(used))} (not implemented)",
                UserWarning,
                stacklevel=3,
            )
        return cls(**{k: v for k, v in d.items() if k in mine and v is not None})  # None: "unset", our default


def drop_ids_outside(config: GenerationConfig, vocab_size: int, where: str) -> None:
    """Unset the special-token ids of a checkpoint's generation defaults that are not ids of its vocabulary (GPT2Config
    writes 50256 into every small test model's files), with a warning, instead of failing every generate later."""
    dropped = []
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        value = getattr(config, name)
        ids = value if isinstance(value, list) else [value]
        kept = [i for i in ids if isinstance(i, int) and 0 <= i < vocab_size]
        if value is not None and len(kept) != len(ids):
            dropped.append(f"{name}={value}")
            setattr(config, name, (kept or None) if isinstance(value, list) else None)
    if dropped:
        warnings.warn(
            f"{where}: the generation defaults name ids outside the {vocab_size}-token vocabulary "
            f"({', '.join(dropped)}); they are left unset (pass eos_token_id= to generate to stop at a token)",
            UserWarning,
            stacklevel=3,
        )


# transformers keywords gptviz knows but does not implement: what to do instead
UNSUPPORTED = {
    "typical_p": "typical sampling is not implemented; use top_p",
    "min_p": "min-p sampling is not implemented; use top_p or top_k",
    "epsilon_cutoff": "epsilon sampling is not implemented; use top_p",
    "eta_cutoff": "eta sampling is not implemented; use top_p",
    "penalty_alpha": "contrastive search is not implemented; use num_beams or sampling",
    "num_beam_groups": "diverse (group) beam search is not implemented; use num_beams",
    "diversity_penalty": "diverse beam search is not implemented; use num_beams",
    "constraints": "constrained beam search is not implemented",
    "force_words_ids": "constrained beam search is not implemented",
    "bad_words_ids": "banned word lists are not implemented; gptviz.hooks can edit hook_logits",
    "sequence_bias": "sequence bias is not implemented; gptviz.hooks can edit hook_logits",
    "suppress_tokens": "token suppression is not implemented; gptviz.hooks can edit hook_logits",
    "begin_suppress_tokens": "token suppression is not implemented; gptviz.hooks can edit hook_logits",
    "forced_bos_token_id": "forced tokens are not implemented; put the token at the end of the prompt",
    "forced_eos_token_id": "forced tokens are not implemented",
    "exponential_decay_length_penalty": "not implemented; use length_penalty (beam search)",
    "encoder_repetition_penalty": "an encoder-decoder option; gptviz models are decoders",
    "encoder_no_repeat_ngram_size": "an encoder-decoder option; gptviz models are decoders",
    "renormalize_logits": "not implemented: scores are the transformed logits",
    "guidance_scale": "classifier-free guidance is not implemented",
    "logits_processor": "custom logits processors are not implemented; gptviz.hooks can edit hook_logits",
    "stopping_criteria": "custom stopping criteria are not implemented; use eos_token_id or max_new_tokens",
    "prefix_allowed_tokens_fn": "not implemented; gptviz.hooks can edit hook_logits",
    "assistant_model": "assisted (speculative) decoding is not implemented",
    "prompt_lookup_num_tokens": "prompt-lookup decoding is not implemented",
    "streamer": "streaming is not implemented; gptviz.generate_steps yields one record per token",
    "output_hidden_states": "use gptviz.capture(model, 'blocks.*.hook_resid_post') around generate",
    "output_logits": "use output_scores=True (gptviz's scores are the logits after every transform)",
    "stop_strings": "stop strings are not implemented; use eos_token_id",
    "dola_layers": "DoLa decoding is not implemented",
    "watermarking_config": "watermarking is not implemented",
    "cache_implementation": "gptviz has one KV cache; use use_cache=True/False",
    "low_memory": "not implemented",
    "token_healing": "not implemented",
    "synced_gpus": "not implemented",
    "negative_prompt_ids": "classifier-free guidance is not implemented",
    "max_time": "not implemented; use max_new_tokens",
}
EXTRAS = ("input_ids", "attention_mask", "seed", "generation_config", "inputs", "compile")


def _refuse_unsupported(given: dict) -> None:
    if given:
        raise InputError(
            "gptviz.generate does not implement " + "; ".join(f"{k} ({UNSUPPORTED[k]})" for k in sorted(given))
        )


def _unknown(name: str) -> UsageError:
    known = [f.name for f in fields(GenerationConfig)] + list(EXTRAS)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UsageError(
        f"generate() got an unexpected keyword argument {name!r}.{hint} It takes transformers' "
        f"generation keywords ({', '.join(known[:12])}, ...) and seed=."
    )


def _ids_and_mask(inputs, input_ids, attention_mask, bos_token_id: int | None, device: torch.device):
    """The prompt from any of transformers' call forms: generate(ids), generate(input_ids=ids), generate(**enc)."""
    if inputs is not None and input_ids is not None:
        raise InputError("the prompt was given twice: as the first argument and as input_ids=; pass it once")
    ids = inputs if inputs is not None else input_ids
    if hasattr(ids, "keys") and "input_ids" in ids:  # generate(tok(text, return_tensors="pt")) without **
        if attention_mask is None:
            attention_mask = ids.get("attention_mask")
        ids = ids["input_ids"]
    if ids is None:
        if bos_token_id is None:
            raise InputError(
                "no prompt: pass input_ids (e.g. tok.encode(text, return_tensors='pt')), or set "
                "bos_token_id to start from it"
            )
        ids = torch.tensor([[bos_token_id]], device=device)
    if isinstance(ids, str) or (isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], str)):
        raise InputError(
            "generate takes ids, not text (gptviz models carry no tokenizer): "
            "model.generate(tok(text, return_tensors='pt')['input_ids'], ...), or gptviz.generate_steps(model, text, "
            "tokenizer=tok)"
        )
    if not isinstance(ids, torch.Tensor):
        try:
            ids = torch.tensor(ids, dtype=torch.long)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(
                f"the prompt must be token ids (a list of ints or a (B, T) tensor), got {ids!r:.80}"
            ) from e
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise InputError(
            f"the prompt must be ids of shape (B, T) or (T,), got shape {tuple(ids.shape)}; "
            "e.g. tok(texts, return_tensors='pt', padding=True)['input_ids']"
        )
    if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
        attention_mask = torch.tensor(attention_mask)
    if attention_mask is not None and attention_mask.dim() == 1:
        attention_mask = attention_mask[None]
    return ids, attention_mask


def generate(model, inputs=None, generation_config=None, **kwargs) -> torch.Tensor | GenerateOutput:
    """`model.generate` with transformers' call forms and meanings (see the module docstring)."""
    input_ids, attention_mask = kwargs.pop("input_ids", None), kwargs.pop("attention_mask", None)
    seed = kwargs.pop("seed", None)
    compile = kwargs.pop("compile", None)  # gptviz's: the compiled decode step (gptviz.decode)
    base = getattr(model, "generation_config", None) or GenerationConfig()
    if isinstance(generation_config, int):
        raise UsageError(
            f"generate's second positional argument is generation_config (as in transformers); for "
            f"{generation_config} new tokens write max_new_tokens={generation_config}"
        )
    if generation_config is not None:
        base = (
            generation_config
            if isinstance(generation_config, GenerationConfig)
            else GenerationConfig.from_transformers(generation_config)
        )
    mine = {f.name for f in fields(GenerationConfig)}
    _refuse_unsupported({k: v for k, v in kwargs.items() if k in UNSUPPORTED})
    for name in kwargs:
        if name not in mine:
            raise _unknown(name)
    cfg = replace(base, **kwargs)
    ids, mask = _ids_and_mask(inputs, input_ids, attention_mask, cfg.bos_token_id, model.device)
    B, T = ids.shape
    eos = cfg.eos_token_id
    if (
        mask is None
        and cfg.pad_token_id is not None
        and cfg.pad_token_id != eos
        and B > 1
        and bool((ids == cfg.pad_token_id).any())
    ):
        mask = (ids != cfg.pad_token_id).long()  # transformers infers the padding from pad_token_id
    elif mask is None and B > 1:
        starts = ids[:, 0]
        pads = {cfg.pad_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        if pads and 0 < sum(int(s) in pads for s in starts.tolist()) < B:
            warnings.warn(
                "some rows of this batch start with the pad/eos id and others do not: if they are "
                "left-padded, pass attention_mask (tokenizer(texts, padding=True) returns it), or the "
                "padded rows continue wrongly",
                UserWarning,
                stacklevel=3,
            )
    if cfg.max_new_tokens is not None:
        max_new = cfg.max_new_tokens
    elif cfg.max_length is None:  # transformers 5: "by default let's always generate 20 new tokens"
        max_new = max(0, min(20, model.config.block_size - T))
    else:
        max_new = cfg.max_length - T
        if max_new <= 0:
            warnings.warn(
                f"max_length={cfg.max_length} counts the prompt, which already has {T} tokens: nothing "
                "is generated. Pass max_new_tokens=... to count new tokens only",
                UserWarning,
                stacklevel=3,
            )
            max_new = 0
    min_new = cfg.min_new_tokens if cfg.min_new_tokens is not None else max(0, cfg.min_length - T)
    return decode(
        model,
        ids,
        max_new,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty,
        no_repeat_ngram_size=cfg.no_repeat_ngram_size,
        num_beams=cfg.num_beams,
        num_return_sequences=cfg.num_return_sequences,
        eos_token_id=eos,
        pad_token_id=cfg.pad_token_id,
        min_new_tokens=min_new,
        seed=seed,
        use_cache=cfg.use_cache,
        length_penalty=cfg.length_penalty,
        early_stopping=cfg.early_stopping,
        attention_mask=mask,
        output_scores=cfg.output_scores,
        output_attentions=cfg.output_attentions,
        return_dict_in_generate=cfg.return_dict_in_generate,
        compile=compile,
    )
