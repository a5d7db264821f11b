"""`model(...)` as transformers users call it: `.logits`, `labels=` -> `.loss`, `output_attentions=`,
`output_hidden_states=`, `return_dict=`, `use_cache=` / `cache=` (`past_key_values=`, its older name).

    logits = model(input_ids).logits                           # model(ids) is the logits tensor; .logits is it too
    out = model(**tok(text, return_tensors="pt"), labels=ids)  # out.loss: transformers' shifted next-token loss
    out = model(ids, output_attentions=True)                   # out.attentions: L tensors (B, nh, T, Tk)
    out = model(ids, use_cache=True); model(next_id, cache=out.cache)         # or past_key_values=, the old names

The rules, as in transformers: `labels` are the input ids (shifted inside, -100 ignored), the loss is the mean in
float32; `hidden_states` are L + 1 tensors (the embeddings, each block's output, the last after the final norm);
`return_dict=False` gives the tuple (loss, logits, cache, hidden_states, attentions) without the Nones.
Differences on purpose, each said where it matters:
- A plain call returns the logits tensor itself (a `Logits`, a torch.Tensor that also answers `.logits`), so
  `logits = model(ids)` keeps working; the other call forms return a `CausalLMOutput`.
- A KV cache is kept only when asked (`use_cache=True`), since building one costs memory on every call;
  reading `.cache` (or `.past_key_values`) of a call that did not ask says so instead of giving None, which
  would make the next call start again from position 0.
- The cache is gptviz's `KVCache`, which grows as the sequence does; transformers' caches are refused.

This module translates; the arithmetic is `GPT.trunk` / `lm_head`'s, the attention maps are the hook points'.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .errors import InputError, UsageError
from .layers import KVCache


class NoCacheError(InputError, AttributeError):
    """Reading the KV cache of a call that kept none: an AttributeError too, so hasattr() and getattr(..., None)
    answer as for any missing attribute."""


IGNORE_INDEX = -100  # transformers' label for "no loss here"

_NO_CACHE = (
    "this call kept no KV cache: gptviz builds one only when asked, so pass use_cache=True "
    "(out = model(ids, use_cache=True); model(next_ids, cache=out.cache))"
)


class Logits(torch.Tensor):
    """What `model(ids)` returns: the (B, T, V) logits, a plain tensor in every operation (results of operations on
    it are torch.Tensors), that also answers transformers' output fields: `.logits` (itself), `.loss`,
    `.attentions`, `.hidden_states` (None: ask for them with labels= / output_attentions=True / ...), and
    `.cache` / `.past_key_values` (an error that says to pass use_cache=True)."""

    __torch_function__ = torch._C._disabled_torch_function_impl  # no wrapping: every result is a plain tensor

    @property
    def logits(self) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)

    loss = attentions = hidden_states = None

    @property
    def cache(self):
        raise NoCacheError(_NO_CACHE)

    past_key_values = cache

    def __deepcopy__(self, memo):  # torch's own deepcopy cannot rebuild a subclass whose torch_function is off
        return self.as_subclass(torch.Tensor).__deepcopy__(memo).as_subclass(Logits)

    def __repr__(self, **kwargs) -> str:
        return self.as_subclass(torch.Tensor).__repr__(**kwargs)

    def __reduce_ex__(self, proto):  # saved as the plain tensor it is (torch.load(weights_only=True) reads it back)
        return self.as_subclass(torch.Tensor).__reduce_ex__(proto)


def as_logits(x: torch.Tensor) -> torch.Tensor:
    """`x` as a `Logits` (a view; autograd flows through it), or as it is inside torch.compile's tracing."""
    if torch.compiler.is_compiling():
        return x
    return x.as_subclass(Logits)


class CausalLMOutput:
    """transformers' CausalLMOutputWithPast, field for field: read as `out.logits`, `out["logits"]` or `out[0]`
    (the first field that is not None, as transformers' ModelOutput indexes). `past_key_values` is `cache`'s
    older name, as in transformers."""

    FIELDS = ("loss", "logits", "cache", "hidden_states", "attentions")

    def __init__(
        self,
        loss: torch.Tensor | None = None,  # () mean next-token cross-entropy, float32, when labels were given
        logits: torch.Tensor | None = None,  # (B, T, V)
        cache: KVCache | None = None,  # when use_cache=True: pass it back as cache= (or past_key_values=)
        hidden_states: tuple[torch.Tensor, ...] | None = None,  # L + 1 tensors (B, T, C)
        attentions: tuple[torch.Tensor, ...] | None = None,  # L tensors (B, nh, T, Tk)
    ) -> None:
        self.loss, self.logits, self.hidden_states, self.attentions = loss, logits, hidden_states, attentions
        self._cache = cache

    @property
    def cache(self) -> KVCache:
        if self._cache is None:
            raise NoCacheError(_NO_CACHE)
        return self._cache

    past_key_values = cache

    def _get(self, name: str):
        return self._cache if name == "cache" else getattr(self, name)

    def keys(self) -> list[str]:
        return [name for name in self.FIELDS if self._get(name) is not None]

    def values(self) -> list:
        return [self._get(k) for k in self.keys()]

    def items(self) -> list[tuple[str, object]]:
        return list(zip(self.keys(), self.values()))

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __getitem__(self, key):
        if isinstance(key, str):
            key = "cache" if key == "past_key_values" else key
            if key not in self.keys():
                raise KeyError(f"{key!r} is not in this output; it has {self.keys()}")
            return self._get(key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:  # as transformers' ModelOutput (a dict): the field names
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __repr__(self) -> str:
        def show(v) -> str:
            if isinstance(v, torch.Tensor):
                return f"tensor of shape {tuple(v.shape)}"
            if isinstance(v, tuple):
                return f"{len(v)} tensors"
            return type(v).__name__

        return f"CausalLMOutput({', '.join(f'{k}={show(v)}' for k, v in self.items())})"


# what users of transformers and TransformerLens reach for on a model, and where gptviz keeps it (GPT.__getattr__)
_PARTS = (
    "the parts sit on the model itself: model.wte, model.wpe, model.blocks[i] (.attn, .mlp, .ln_1, .ln_2), model.ln_f"
)
_NO_TOKENIZER = "gptviz models carry no tokenizer: use the tok that gptviz.load returned with the model"
ELSEWHERE = {
    "transformer": _PARTS + " (transformers' GPT-2 has them under model.transformer, with h for blocks)",
    "model": _PARTS + " (transformers' Llama and Qwen2 have them under model.model)",
    "gpt_neox": _PARTS + " (transformers' GPT-NeoX has them under model.gpt_neox)",
    "h": "the blocks are model.blocks",
    "layers": "the blocks are model.blocks",
    "embed_out": "the output head is model.lm_head",
    "tokenizer": _NO_TOKENIZER,
    "to_tokens": _NO_TOKENIZER + " (tok(text, return_tensors='pt')['input_ids'])",
    "to_str_tokens": _NO_TOKENIZER + " (tok.tokens(ids), or tok.convert_ids_to_tokens(ids))",
    "to_string": _NO_TOKENIZER + " (tok.decode(ids))",
    "to_single_token": _NO_TOKENIZER + " (tok.encode(text) gives the ids)",
    "resize_token_embeddings": "gptviz does not grow a vocabulary; give an existing token the role you need "
    "(tok.pad_token = tok.eos_token)",
    "gradient_checkpointing_enable": "not implemented; lower the batch size or block_size to save memory",
    "push_to_hub": "gptviz works offline: model.save_pretrained(folder) and tok.save_pretrained(folder)",
    "ln_final": "the final norm is model.ln_f (its hooks keep TransformerLens's names: ln_final.hook_scale, ...)",
    "unembed": "the unembedding is model.lm_head (its matrix as TransformerLens holds it: model.W_U)",
    "embed": "the token embedding is model.wte (model.W_E)",
    "pos_embed": "learned positions are model.wpe (model.W_pos); rotary and sinusoidal models have no such matrix",
    "OV": "FactoredMatrix is not implemented; per head, model.W_V[l, h] @ model.W_O[l, h] is the OV circuit",
    "QK": "FactoredMatrix is not implemented; per head, model.W_Q[l, h] @ model.W_K[l, h].T is the QK circuit",
    "remove_all_hook_fns": "model.reset_hooks(including_permanent=True) removes every hook added with add_hook",
    "compute_transition_scores": "generate(..., output_scores=True, return_dict_in_generate=True).scores hold "
    "each step's transformed logits; gptviz.generate_steps gives every step's probabilities per stage",
}


# transformers' forward keywords gptviz knows but does not take: what to do instead
UNSUPPORTED = {
    "position_ids": "gptviz computes positions itself: from attention_mask for a padded batch, from the cache after "
    "past_key_values; pass attention_mask",
    "inputs_embeds": "pass ids; to replace the token embeddings use gptviz.hooks(model, {'hook_embed': fn})",
    "token_type_ids": "token types are not implemented (GPT-2 checkpoints do not use them)",
    "head_mask": "use gptviz.patching.ablate_heads, or a hook on blocks.L.attn.hook_pattern",
    "encoder_hidden_states": "an encoder-decoder option; gptviz models are decoders",
    "encoder_attention_mask": "an encoder-decoder option; gptviz models are decoders",
    "cache_position": "gptviz's KVCache knows its own position; pass cache=",
}
KNOWN = (
    "input_ids",
    "attention_mask",
    "labels",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_cache",
    "cache",
    "past_key_values",
    "logits_to_keep",
)


# TransformerLens's forward keywords gptviz takes (HookedTransformer.forward), and those it refuses
TL_KNOWN = ("return_type", "loss_per_token", "stop_at_layer")
TL_UNSUPPORTED = {
    "start_at_layer": "run the blocks from a residual with a hook instead: gptviz.hooks(model, "
    "{'blocks.L.hook_resid_pre': lambda x, hook: my_resid})",
    "prepend_bos": "gptviz models take ids: add the BOS id when encoding (tok(text) adds it for models that use one)",
    "padding_side": "set it on the tokenizer (tok.padding_side = 'left') and pass the attention_mask it returns",
    "tokens": "pass the ids as the first argument",
    "shortformer_pos_embed": "not implemented",
    "past_kv_cache": "use cache= with the cache of an earlier model(..., use_cache=True) call",
}
UNSUPPORTED.update(TL_UNSUPPORTED)


def check_keywords(kwargs: dict) -> None:
    """A UsageError for a keyword `GPT.forward` does not take (what to do instead, or the closest spelling), or for
    transformers' and TransformerLens's keywords mixed in one call."""
    hf, tl = [k for k in kwargs if k in KNOWN], [k for k in kwargs if k in TL_KNOWN]
    if hf and tl:
        raise UsageError(
            f"model(...) got transformers' {', '.join(hf)} and TransformerLens's {', '.join(tl)} in one call; use "
            "one convention (labels= gives out.loss; return_type='loss' gives the loss tensor)"
        )
    for name in kwargs:
        if name in KNOWN or name in TL_KNOWN:
            continue
        if name in UNSUPPORTED:
            raise UsageError(f"model(...) does not take {name}: {UNSUPPORTED[name]}")
        close = difflib.get_close_matches(name, KNOWN + TL_KNOWN + ("kv_cache", "idx"), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(
            f"model(...) got an unexpected keyword argument {name!r}.{hint} It takes input_ids, attention_mask, "
            "and transformers' labels, output_attentions, output_hidden_states, return_dict, use_cache, cache "
            "(past_key_values) and logits_to_keep, and TransformerLens's return_type, loss_per_token and stop_at_layer."
        )


def forward(
    model,
    input_ids: torch.Tensor,
    kv_cache: KVCache | None,
    attention_mask: torch.Tensor | None,
    *,
    labels=None,
    output_attentions: bool | None = None,
    output_hidden_states: bool | None = None,
    return_dict: bool | None = None,
    use_cache: bool | None = None,
    cache=None,
    past_key_values=None,
    logits_to_keep: int | torch.Tensor = 0,
):
    """One forward pass with transformers' output keywords -> CausalLMOutput (or its tuple, `return_dict=False`)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise InputError("the cache was given twice, as cache= and as past_key_values= (its older name); pass it once")
    past_key_values = cache if cache is not None else past_key_values
    for name, value in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states)):
        if value is not None and not isinstance(value, bool):
            raise InputError(f"{name} must be True or False, got {value!r}")
    cache = kv_cache
    if past_key_values is not None:
        if cache is not None and cache is not past_key_values:
            raise InputError("the cache was given twice: as kv_cache and as cache=; pass it once")
        cache = _check_cache(model, past_key_values, input_ids)
    kept = bool(use_cache) or cache is not None
    if use_cache and cache is None:
        cache = new_growing_cache(model, input_ids)
    keep = _check_logits_to_keep(logits_to_keep)
    if labels is not None and keep is not None:
        raise InputError("labels= needs every position's logits for the loss; drop logits_to_keep (or labels)")
    if labels is not None:
        labels = _check_labels(labels, input_ids, model.config.vocab_size)

    patterns: list[torch.Tensor] = []
    states: list[torch.Tensor] = []
    listen = {}
    if output_attentions:
        listen["blocks.*.attn.hook_pattern"] = lambda x, hook: patterns.append(x)
    if output_hidden_states:
        listen["blocks.*.hook_resid_pre"] = lambda x, hook: states.append(x)
    from .hooks import hooks

    with hooks(model, listen):
        h = model.trunk(input_ids, cache, attention_mask)  # (B, T, C), after the final norm
    logits = model.hook_logits(model.lm_head(h if keep is None else h[:, keep]))  # (B, T or kept, V)
    out = CausalLMOutput(
        loss=None if labels is None else causal_lm_loss(logits, labels, attention_mask),
        logits=logits,
        cache=cache if kept else None,
        hidden_states=(*states, h) if output_hidden_states else None,
        attentions=tuple(patterns) if output_attentions else None,
    )
    return out.to_tuple() if return_dict is False else out


class _Stopped(Exception):  # raised at the hook where stop_at_layer ends the pass, caught below
    pass


def tl_forward(
    model,
    input_ids: torch.Tensor,
    cache: KVCache | None,
    attention_mask: torch.Tensor | None,
    *,
    return_type: str | None = "logits",
    loss_per_token: bool = False,
    stop_at_layer: int | None = None,
):
    """One forward pass with TransformerLens's keywords: `return_type` "logits" | "loss" | "both" | None (the
    loss is TransformerLens's: mean next-token loss over the pairs of real tokens; `loss_per_token` gives it per
    position, (B, T - 1)); `stop_at_layer=n` returns the residual stream entering block n (B, T, C)."""
    if return_type not in ("logits", "loss", "both", None):
        raise InputError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
    if not isinstance(loss_per_token, bool):
        raise InputError(f"loss_per_token must be True or False, got {loss_per_token!r}")
    if stop_at_layer is not None:
        return _residual_at(model, input_ids, cache, attention_mask, stop_at_layer)
    logits = model.hook_logits(model.lm_head(model.trunk(input_ids, cache, attention_mask)))
    if return_type == "logits":
        return as_logits(logits)
    if return_type is None:
        return None
    loss = tl_loss(logits, input_ids, attention_mask, loss_per_token)
    return loss if return_type == "loss" else TLOutput(logits, loss)


class TLOutput(tuple):
    """TransformerLens's (logits, loss) pair of return_type="both": unpacks as a tuple, reads as .logits / .loss."""

    def __new__(cls, logits: torch.Tensor, loss: torch.Tensor):
        return super().__new__(cls, (logits, loss))

    @property
    def logits(self) -> torch.Tensor:
        return self[0]

    @property
    def loss(self) -> torch.Tensor:
        return self[1]


def tl_loss(logits: torch.Tensor, ids: torch.Tensor, attention_mask=None, per_token: bool = False) -> torch.Tensor:
    """TransformerLens's next-token loss: -log p(ids[t + 1]) at each t (in the logits' dtype), averaged over the
    pairs whose two tokens are both real (attention_mask), or per position (B, T - 1)."""
    if ids.size(1) < 2:
        raise InputError("a next-token loss needs at least 2 tokens per row; got 1")
    logp = F.log_softmax(logits, dim=-1)[:, :-1].gather(-1, ids[:, 1:, None].to(logits.device))[..., 0]  # (B, T-1)
    n = logp.numel()
    if attention_mask is not None:
        m = torch.as_tensor(attention_mask, device=logits.device).bool()
        pair = m[:, :-1] & m[:, 1:]
        logp = logp.masked_fill(~pair, 0.0)
        n = int(pair.sum())
    return -logp if per_token else -logp.sum() / n


def _residual_at(model, input_ids, cache, attention_mask, layer) -> torch.Tensor:
    L = model.config.n_layer
    if isinstance(layer, bool) or not isinstance(layer, int) or not -L <= layer <= L:
        raise InputError(f"stop_at_layer must be an int in -{L}..{L} (this model has {L} blocks), got {layer!r}")
    if cache is not None:
        raise InputError("stop_at_layer with a KV cache would leave the cache half written; drop one of them")
    if layer < 0:  # as a slice of the blocks: -1 is the residual entering the last block
        layer += L
    name = f"blocks.{layer}.hook_resid_pre" if layer < L else f"blocks.{L - 1}.hook_resid_post"
    got: list[torch.Tensor] = []

    def stop(x: torch.Tensor, hook) -> None:
        got.append(x)
        raise _Stopped

    from .hooks import hooks

    try:
        with hooks(model, {name: stop}):
            model.trunk(input_ids, None, attention_mask)
    except _Stopped:
        pass
    return got[0]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """transformers' causal-LM loss: position t predicts labels[t + 1]; -100 is ignored; mean, in float32.

    One difference on purpose: a padding position predicts nothing. gptviz pads on the left, so the label after a
    row's last padding is its first real token, which transformers would count, predicted from padding's logits;
    ignoring it gives what each row gives alone (and what transformers gives with its right padding)."""
    V = logits.size(-1)
    target = labels[:, 1:].to(logits.device)
    if attention_mask is not None:
        padding = ~torch.as_tensor(attention_mask, device=logits.device).bool()[:, -labels.size(1) :][:, :-1]
        target = target.masked_fill(padding, IGNORE_INDEX)
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, V), target.reshape(-1), ignore_index=IGNORE_INDEX)


def new_growing_cache(model, input_ids: torch.Tensor) -> KVCache:
    """A KVCache for `input_ids`' batch with room for them and 64 more positions; it grows when full."""
    B, T = input_ids.shape if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 else (1, 1)
    cache = model.new_kv_cache(B, T + 64)
    cache.limit = model.config.block_size
    return cache


def _check_cache(model, cache, input_ids) -> KVCache:
    if not isinstance(cache, KVCache):
        raise InputError(
            "cache= (past_key_values=) must be the cache an earlier model(..., use_cache=True) call returned "
            f"(a gptviz KVCache), got {type(cache).__name__}; transformers' caches do not fit gptviz's layout"
        )
    c = model.config
    want = (c.n_layer, c.kv_heads, c.head_size)
    have = (cache.k.shape[0], cache.k.shape[2], cache.k.shape[4])
    if have != want:
        raise InputError(
            f"the cache is one of another model ({have[0]} layers, {have[1]} key/value heads of size "
            f"{have[2]}); this one has {want[0]}, {want[1]}, {want[2]}"
        )
    B = input_ids.shape[0] if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 else None
    if B is not None and B != cache.batch_size:
        raise InputError(f"the cache holds a batch of {cache.batch_size}, but the ids are a batch of {B}")
    return cache


def _check_labels(labels, input_ids, vocab_size: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"labels must be token ids (B, T) like input_ids, got {type(labels).__name__}") from e
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"labels must be integer token ids (B, T), got dtype {labels.dtype}")
    if isinstance(input_ids, torch.Tensor) and labels.shape != input_ids.shape:
        raise InputError(
            f"labels have shape {tuple(labels.shape)} but input_ids {tuple(input_ids.shape)}: give the ids "
            "themselves as labels (labels=input_ids; the shift to the next token happens inside), -100 where no "
            "loss should be counted"
        )
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= vocab_size))
    if bool(bad.any()):
        raise InputError(
            f"labels hold {labels[bad][0].item()}, outside the vocabulary (0..{vocab_size - 1}); use -100 to "
            "leave a position out of the loss (e.g. labels[attention_mask == 0] = -100)"
        )
    return labels.long()


def _check_logits_to_keep(keep) -> slice | torch.Tensor | None:
    if isinstance(keep, bool) or not isinstance(keep, (int, torch.Tensor)):
        raise InputError(f"logits_to_keep must be an int (the last N positions; 0 = all) or indices, got {keep!r}")
    if isinstance(keep, torch.Tensor):
        return keep
    if keep < 0:
        raise InputError(f"logits_to_keep must be >= 0 (0 keeps every position), got {keep}")
    return None if keep == 0 else slice(-keep, None)
