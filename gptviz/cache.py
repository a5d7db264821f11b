"""`ActivationCache`: what `GPT.run_with_cache` returns, indexed and analysed as TransformerLens's is.

A `Capture` (gptviz.hooks) that keeps a reference to its model, so it can read the short names
(`cache["pattern", 0]`, `cache["scale"]`; `act_name` spells them out) and do the residual-stream analysis a
researcher does in two lines: `accumulated_resid` (logit lens), `decompose_resid` and `stack_head_results`
(direct logit attribution), `apply_ln_to_stack`, `logit_attrs`. Meanings and numbers are TransformerLens's on
the same weights (`gptviz.to_transformer_lens`), except one: gptviz keeps each norm's weight where training put
it, where TransformerLens's `fold_ln=True` moves it into the next matrices. `apply_ln_to_stack` stops before the
weight, as TransformerLens's does (shares of `hook_normalized`); `logit_attrs` then multiplies by ln_final's
weight, so its attributions add up to the logits, and equal TransformerLens's on a `fold_ln=True` model.

Shapes: a residual stack is (k, B, T, C), k components; with `remove_batch_dim()` the B goes, and an integer
`pos_slice` takes the T away. This module runs no forward pass (`GPT.run_with_cache` does), attaches no hook
and draws nothing: it reads the cached tensors, the model's config and a few of its weights (W_U, W_O, the norms').
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from .cache_parts import finish_stack
from .cache_parts import index as _index
from .cache_parts import take as _take
from .hooks import Capture, HookNameError, _unknown_hook_message, hook_points, resolve_names

__all__ = ["ActivationCache", "act_name", "select_hooks"]

# ---- short names (TransformerLens's get_act_name) ----------------------------------------------------------

_LAYER_TYPE_ALIASES = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": ""}
_NAME_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_mid": "mid",
    "mlp_post": "post",
}
_ATTN_NAMES = {"q", "k", "v", "z", "rot_q", "rot_k", "result", "pattern", "attn_scores"}
_MLP_NAMES = {"pre", "post", "mid", "pre_linear"}
_NORM_NAMES = {"scale", "normalized"}


def act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """A short activation name -> its hook name, as TransformerLens's `utils.get_act_name` spells it.

    >>> act_name("pattern", 0)             # 'blocks.0.attn.hook_pattern'
    >>> act_name("resid_pre", 3)           # 'blocks.3.hook_resid_pre'
    >>> act_name("normalized", 1, "ln2")   # 'blocks.1.ln2.hook_normalized'
    >>> act_name("scale")                  # 'ln_final.hook_scale' (no layer: the final norm)
    >>> act_name("k6"), act_name("scale4ln1")   # 'blocks.6.attn.hook_k', 'blocks.4.ln1.hook_scale'

    A full name ("blocks.0.attn.hook_q", "hook_embed") comes back as it is. Only the spelling is translated:
    whether the model has that hook point is the cache's question (an unknown name lists the closest ones).
    """
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    # "k6" -> ("k", 6, ""), "scale4ln1" -> ("scale", 4, "ln1"); the digits are the layer, the rest its part
    match = re.fullmatch(r"([a-z_]*[a-z])(\d+)(.*)", name)
    if match is not None:
        name, layer, layer_type = match.group(1), int(match.group(2)), match.group(3) or None
    name = _NAME_ALIASES.get(name, name)
    if name in _ATTN_NAMES:
        layer_type = "attn"
    elif name in _MLP_NAMES:
        layer_type = "mlp"
    elif layer_type in _LAYER_TYPE_ALIASES:
        layer_type = _LAYER_TYPE_ALIASES[layer_type]
    full = f"blocks.{layer}." if layer is not None else ""
    full += f"{layer_type}.hook_{name}" if layer_type else f"hook_{name}"
    if name in _NORM_NAMES and layer is None:
        full = f"ln_final.{full}"
    return full


def select_hooks(model: torch.nn.Module, names_filter: object) -> list[str]:
    """TransformerLens's `names_filter` forms -> hook names in forward order.

    None: every hook point; a name or a glob ("blocks.*.attn.hook_pattern"); a list of those; or a function
    name -> bool. An unknown name raises HookNameError listing the closest; a filter that selects nothing is
    refused (a hook that silently never runs is the bug this guards against).
    """
    every = list(hook_points(model))
    if names_filter is None:
        return every
    if isinstance(names_filter, str) or (
        isinstance(names_filter, Iterable) and not isinstance(names_filter, (bytes, dict))
    ):
        return resolve_names(model, names_filter)  # type: ignore[arg-type]
    if callable(names_filter):
        chosen = [n for n in every if names_filter(n)]
        if not chosen:
            raise ValueError(
                f"the names_filter function {getattr(names_filter, '__name__', names_filter)!r} selected no hook "
                "point; it is called with names such as 'blocks.0.attn.hook_pattern' "
                "(gptviz.hook_names(model) lists them all)"
            )
        return chosen
    raise TypeError(
        "names_filter must be None (every hook), a hook name or pattern, a list of them, or a function "
        f"name -> bool; got {type(names_filter).__name__}"
    )


class ActivationCache(Capture):
    """Activations of one forward pass by hook name, plus the model they came from (`cache.model`).

    >>> logits, cache = model.run_with_cache(ids)
    >>> cache["pattern", 0]                     # blocks.0.attn.hook_pattern, (B, nh, T, T)
    >>> cache["resid_post", -1]                 # negative layers count from the end
    >>> stack, labels = cache.decompose_resid(return_labels=True)   # (k, B, T, C), ["embed", "0_attn_out", ...]

    A Capture (gptviz.hooks) in every other way: `keys()`, `items()`, `in`, `len`, `stack(pattern)`.
    """

    def __init__(self, names: list[str], model: torch.nn.Module) -> None:
        super().__init__(names, keep="last")
        self.model = model  # for W_U, W_O, the norms and n_layer; `cache.model = None` lets the model be freed
        self.has_batch_dim = True

    @classmethod
    def from_capture(cls, cap: Capture, model: torch.nn.Module) -> ActivationCache:
        """The cache of what `cap` recorded (its tensors, not copies), for `model`."""
        if cap.keep != "last":
            raise ValueError("an ActivationCache holds one forward pass: capture with keep='last'")
        cache = cls(list(cap.names), model)
        cache._store = cap._store
        return cache

    # ---- reading ---------------------------------------------------------------------------------------
    def __getitem__(self, key: object) -> torch.Tensor:  # type: ignore[override]
        name = self._full_name(key)
        if name not in self._store:
            raise HookNameError(self._missing_message(key, name))
        return self._store[name][-1]

    def _full_name(self, key: object) -> str:
        if isinstance(key, str):
            return key if key in self._store else act_name(key)
        if isinstance(key, tuple) and 1 <= len(key) <= 3 and isinstance(key[0], str):
            name, layer, layer_type = (*key, None, None)[:3]
            if isinstance(layer, int) and layer < 0:
                layer += self.n_layer
            return act_name(name, layer, layer_type)
        raise TypeError(
            f"index the cache with a hook name ('blocks.0.attn.hook_pattern'), a short name ('scale') or a tuple "
            f"(name, layer[, layer_type]) such as ('pattern', 0) or ('normalized', 1, 'ln2'); got {key!r}"
        )

    def _missing_message(self, key: object, name: str) -> str:
        said = f"{key!r} means {name!r}; " if key != name else ""
        valid = self.model.hook_names if self.model is not None else list(self.names)
        if name not in valid:
            return said + _unknown_hook_message(name, valid)
        if name in self.names:
            return (
                f"{said}{name} was asked for but never fired during the forward pass (a rotary or 'none' positional "
                "encoding has no hook_pos_embed; a parallel block has no hook_resid_mid)"
            )
        return (
            f"{said}the cache has no {name}: run_with_cache(..., names_filter=...) must include it "
            "(names_filter=None caches every hook point)"
        )

    def values(self) -> list[torch.Tensor]:
        return [self[n] for n in self]

    @property
    def n_layer(self) -> int:
        self._need_model()
        return self.model.config.n_layer

    def _need_model(self) -> None:
        if self.model is None:
            raise ValueError("this cache has no model (cache.model is None); the analysis methods read its weights")

    # ---- in place, as TransformerLens's -------------------------------------------------------------------
    def to(self, device: str | torch.device) -> ActivationCache:
        """Move every activation to `device` (in place; returns the cache). The model stays where it is."""
        self._store = {n: [t.to(device) for t in ts] for n, ts in self._store.items()}
        return self

    def remove_batch_dim(self) -> ActivationCache:
        """Drop the batch dim of a batch of one (in place; returns the cache): (1, T, C) -> (T, C)."""
        if not self.has_batch_dim:
            return self
        sizes = {n: ts[-1].shape[0] for n, ts in self._store.items()}
        if any(b != 1 for b in sizes.values()):
            name, b = next((n, b) for n, b in sizes.items() if b != 1)
            raise ValueError(
                f"remove_batch_dim needs a batch of one, but {name} has batch size {b}; "
                "index one row instead, e.g. cache['resid_pre', 0][i]"
            )
        self._store = {n: [t[0] for t in ts] for n, ts in self._store.items()}
        self.has_batch_dim = False
        return self

    # ---- stacks of the residual stream --------------------------------------------------------------------
    def _layer(self, layer: int | None, what: str) -> int:
        """None and -1 mean n_layer: the input of the unembedding. Otherwise 0..n_layer."""
        L = self.n_layer
        if layer is None or layer == -1:
            return L
        if not isinstance(layer, int) or not 0 <= layer <= L:
            raise ValueError(
                f"{what}: layer must be in 0..{L} (the input of that block; {L}, -1 or None is the input of the "
                f"unembedding), got {layer!r}"
            )
        return layer

    def _resid_into(self, layer: int) -> torch.Tensor:
        """The residual stream entering block `layer` (n_layer: entering the final norm)."""
        return self["resid_post", layer - 1] if layer == self.n_layer else self["resid_pre", layer]

    def accumulated_resid(
        self,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: object = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """The residual stream as it stood before each block up to `layer`: (k, B, T, C); the logit lens's input.

        Entries: resid_pre of blocks 0..layer-1 (with `incl_mid`, each block's resid_mid too), then the input of
        `layer` itself — resid_pre, with `mlp_input` also its resid_mid — or, for layer None/-1/n_layer, the last
        resid_post (label "final_post"). Labels: "0_pre", "0_mid", ..., "final_post".

        `apply_ln`: into the unembedding, each entry goes through the whole final norm with its own statistics
        (weight and bias, as TransformerLens's recomputed ln_final), so `stack @ W_U` are the logits each stage
        would give and the last entry is the model's ln_final output; into a block, `apply_ln_to_stack` (that
        norm's cached scale, no weight) is applied.
        """
        self._need_model()
        L = self.n_layer
        layer = self._layer(layer, "accumulated_resid")
        if mlp_input and layer == L:
            raise ValueError("mlp_input=True needs a block's layer (0..n_layer-1); the unembedding has no MLP")
        parallel = self._parallel()
        if incl_mid and parallel:
            raise ValueError(
                "incl_mid=True: a parallel block (GPT-NeoX) has no resid_mid, attention and MLP read it at once"
            )
        components, labels = [], []
        for l in range(layer + 1):
            if l == L:
                components.append(self["resid_post", L - 1])
                labels.append("final_post")
                continue
            components.append(self["resid_pre", l])
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer and not parallel):
                components.append(self["resid_mid", l])
                labels.append(f"{l}_mid")
        pos = _index(pos_slice)
        stack = torch.stack([_take(c, pos, -2) for c in components])  # (k, B, T, C)
        if apply_ln:
            if layer == L:
                stack = self._final_norm(stack)
            else:
                stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def decompose_resid(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: str = "all",
        apply_ln: bool = False,
        pos_slice: object = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """What each part wrote into the residual stream entering `layer`: (k, B, T, C), summing to that stream.

        Parts: "embed", "pos_embed" (learned or sinusoidal positions), then "{l}_attn_out" and "{l}_mlp_out" of
        each block before `layer`; with `mlp_input`, also "{layer}_attn_out" (what the MLP of `layer` reads; in a
        parallel block the MLP reads resid_pre, so nothing is added). `mode` "attn" or "mlp" keeps one kind.
        Summed: resid_pre of `layer` (None/-1/n_layer: the last resid_post). `apply_ln` as in `apply_ln_to_stack`.
        """
        self._need_model()
        if mode not in ("all", "attn", "mlp"):
            raise ValueError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        layer = self._layer(layer, "decompose_resid")
        cfg = self.model.config
        incl_attn, incl_mlp = mode != "mlp", mode != "attn" and cfg.mlp
        components, labels = [], []
        if incl_embeds:
            parts = [("hook_embed", "embed")]
            if cfg.pos_encoding in ("learned", "sinusoidal"):  # rotary and "none" add nothing to the stream
                parts.append(("hook_pos_embed", "pos_embed"))
            for name, label in parts:
                if name not in self._store:
                    raise HookNameError(
                        f"decompose_resid(incl_embeds=True) needs {name}, which this cache does not hold: include it "
                        "in run_with_cache(..., names_filter=...), or pass incl_embeds=False"
                    )
                components.append(self[name])
                labels.append(label)
        for l in range(layer):
            if incl_attn:
                components.append(self["attn_out", l])
                labels.append(f"{l}_attn_out")
            if incl_mlp:
                components.append(self["mlp_out", l])
                labels.append(f"{l}_mlp_out")
        if mlp_input and incl_attn and not self._parallel():
            if layer == self.n_layer:
                raise ValueError("mlp_input=True needs a block's layer (0..n_layer-1); the unembedding has no MLP")
            components.append(self["attn_out", layer])
            labels.append(f"{layer}_attn_out")
        if not components:
            raise ValueError(f"decompose_resid(layer={layer}, mode={mode!r}, incl_embeds={incl_embeds}) has no parts")
        pos = _index(pos_slice)
        stack = torch.stack([_take(c, pos, -2) for c in components])  # (k, B, T, C)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def stack_head_results(
        self,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: object = None,
        apply_ln: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """Each head's output in the blocks before `layer`: (layer * nh, B, T, C), labels "L0H0", "L0H1", ...

        A block's heads summed, plus its b_O, are its hook_attn_out. Read from `attn.hook_result`, or computed
        from `attn.hook_z` and W_O when only z was cached (as TransformerLens's compute_head_results does).
        `incl_remainder` appends "remainder": the stream entering `layer` minus the heads, so the stack sums to it.
        """
        self._need_model()
        layer = self._layer(layer, "stack_head_results")
        pos = _index(pos_slice)
        components, labels = [], []
        for l in range(layer):
            components.append(_take(self._head_results(l), pos, -3).movedim(-2, 0))  # (nh, B, T, C)
            labels += [f"L{l}H{h}" for h in range(self.model.config.n_head)]
        return finish_stack(self, components, labels, layer, pos_slice, incl_remainder, apply_ln, return_labels)

    def compute_head_results(self) -> None:
        """Put every head's output, `blocks.L.attn.hook_result` (B, T, nh, C), into the cache where it is missing,
        from hook_z and W_O (TransformerLens's call; gptviz records hook_result itself when something listens)."""
        self._need_model()
        for layer in range(self.n_layer):
            name = f"blocks.{layer}.attn.hook_result"
            if name not in self._store:
                self._store[name] = [self._head_results(layer, "compute_head_results")]
                self.names = [*self.names, name]

    def _head_results(self, layer: int, caller: str = "stack_head_results") -> torch.Tensor:
        """(B, T, nh, C): blocks.{layer}.attn.hook_result, or z @ W_O per head."""
        name, z_name = f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.attn.hook_z"
        if name in self._store:
            return self[name]
        if z_name in self._store:
            z = self[z_name]  # (B, T, nh, hs)
            nh, hs = z.shape[-2:]
            W_O = self.model.blocks[layer].attn.c_proj.weight.detach()  # (C, nh * hs)
            W_O = W_O.view(W_O.shape[0], nh, hs).to(z.device, z.dtype)  # (C, nh, hs)
            return torch.einsum("...nh,cnh->...nc", z, W_O)  # (B, T, nh, C)
        raise HookNameError(
            f"{caller} needs each head's output: the cache has no {name} (nor {z_name} to compute it "
            "from). run_with_cache(..., names_filter=...) must include 'blocks.*.attn.hook_result' "
            "(names_filter=None caches every hook point)"
        )

    def stack_neuron_results(
        self,
        layer: int = -1,
        pos_slice: object = None,
        neuron_slice: object = None,
        return_labels: bool = False,
        incl_remainder: bool = False,
        apply_ln: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """Each MLP neuron's write into the stream in the blocks before `layer`: post[n] * W_out[n], (k, B, T, C),
        labels "L0N0", ...; `neuron_slice` picks neurons; `incl_remainder` adds the rest of that stream."""
        from .cache_parts import stack_neuron_results

        return stack_neuron_results(self, layer, pos_slice, neuron_slice, return_labels, incl_remainder, apply_ln)

    def get_full_resid_decomposition(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: object = None,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """The stream entering `layer` as every head's output, every neuron's (or each MLP's), the embeddings and
        the biases, in TransformerLens's order; the parts sum to that stream (gptviz.cache_parts)."""
        from .cache_parts import full_resid_decomposition

        return full_resid_decomposition(self, layer, mlp_input, expand_neurons, apply_ln, pos_slice, return_labels)

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> torch.Tensor:
        """`activation_name` of every block before `layer` (-1: all), stacked on a new dim 0: (layer, ...)."""
        layer = self._layer(layer, "stack_activation")
        if layer == 0:
            raise ValueError("stack_activation(layer=0) would stack no block; give layer >= 1 or -1 (all)")
        return torch.stack([self[activation_name, l, sublayer_type] for l in range(layer)])

    # ---- norms and logits --------------------------------------------------------------------------------------
    def _parallel(self) -> bool:
        cfg = self.model.config
        return bool(cfg.parallel_residual and cfg.mlp)

    def _scale_name(self, layer: int, mlp_input: bool) -> str:
        if layer == self.n_layer:
            return "ln_final.hook_scale"
        return f"blocks.{layer}.ln{2 if mlp_input else 1}.hook_scale"

    def _refuse_without_norms(self, what: str) -> None:
        if not self.model.config.layer_norm:
            raise ValueError(
                f"{what}: this model has no norms (GPTConfig(layer_norm=False)), so there is no scale to apply: "
                "its residual stream reaches each block and the unembedding as it is. Use the stack without "
                "apply_ln (logit_attrs already skips the scaling for such a model)."
            )

    def _final_norm(self, stack: torch.Tensor) -> torch.Tensor:
        """The final norm on each entry with its own statistics, as the model computes it (weight and bias)."""
        self._refuse_without_norms("apply_ln")
        norm = self.model.ln_f
        w = norm.weight.detach().to(stack.device)
        if self.model.config.norm == "rmsnorm":  # gptviz.model.RMSNorm: float32, then the model's dtype
            h = stack.float()
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.eps)
            return (w * h.to(stack.dtype)).to(stack.dtype)
        b = norm.bias.detach().to(stack.device) if norm.bias is not None else None
        return F.layer_norm(
            stack, (stack.shape[-1],), w.to(stack.dtype), None if b is None else b.to(stack.dtype), norm.eps
        )

    def apply_ln_to_stack(
        self,
        residual_stack: torch.Tensor,
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: object = None,
        batch_slice: object = None,
        has_batch_dim: bool = True,
    ) -> torch.Tensor:
        """Each component as it leaves the norm in front of `layer`, with the scale the whole stream had there.

        A norm divides the whole stream by one number per position (its cached `hook_scale`), so a component's
        share of the normalized stream is: LayerNorm (x - mean(x)) / scale, RMSNorm x / scale (no centering). Over a
        decomposition the shares sum to that norm's `hook_normalized`, which is before the norm's weight and bias
        (TransformerLens's meaning). What the next layer reads is `shares * weight` (+ bias, which belongs to no
        component): into the unembedding, `(shares * model.ln_f.weight) @ W_U`, which `logit_attrs` computes.
        On a TransformerLens `fold_ln=True` model the weight sits inside W_U, so there `shares @ W_U` is enough.

        `layer`: None/-1/n_layer is ln_final (into the unembedding), else block `layer`'s ln1 (ln2 with
        `mlp_input`). `pos_slice` is already applied to the stack and is applied here to the cached scale;
        `batch_slice` is applied to both (to the stack's dim 1 when `has_batch_dim`).
        """
        self._need_model()
        self._refuse_without_norms("apply_ln_to_stack")
        layer = self._layer(layer, "apply_ln_to_stack")
        if mlp_input and layer == self.n_layer:
            raise ValueError("mlp_input=True needs a block's layer (0..n_layer-1); the unembedding has no MLP")
        key = self._scale_name(layer, mlp_input)
        if key not in self._store:
            raise HookNameError(
                f"applying the norm needs its cached scale {key}, which this cache does not hold: "
                "run_with_cache(..., names_filter=...) must include it (names_filter=None caches every hook point)"
            )
        scale = _take(self[key], _index(pos_slice), -2)  # (B, T, 1), or fewer dims after slicing
        batch = _index(batch_slice)
        if batch is not None:
            if has_batch_dim:
                residual_stack = _take(residual_stack, batch, 1)
            if self.has_batch_dim:
                scale = _take(scale, batch, 0)
        x = residual_stack
        if tuple(scale.shape[:-1]) != tuple(x.shape[x.dim() - scale.dim() : -1]):
            raise ValueError(
                f"apply_ln_to_stack: the stack's positions {tuple(x.shape[1:-1])} do not match the cached scale's "
                f"{tuple(scale.shape[:-1])}; pass the same pos_slice (and batch_slice) the stack was made with"
            )
        if self.model.config.norm != "rmsnorm":
            x = x - x.mean(-1, keepdim=True)
        return (x / scale.to(x.device)).to(residual_stack.dtype)

    def _directions(self, tokens: object, what: str) -> torch.Tensor:
        """Rows of W_U^T for `tokens`: an id -> (C,), ids of shape S -> (*S, C)."""
        if isinstance(tokens, str):
            raise TypeError(
                f"{what}: gptviz's cache has no tokenizer; pass token ids, e.g. tok.encode(' road')[0] "
                "or a tensor of ids"
            )
        ids = torch.as_tensor(tokens, dtype=torch.long)
        V = self.model.config.vocab_size
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= V:
            raise ValueError(f"{what}: token ids must be in 0..{V - 1}, got {tokens!r}")
        W_U_T = self.model.lm_head.weight.detach()  # (V, C), W_U transposed
        if ids.numel() == 1:
            ids = ids.reshape(())
        return W_U_T[ids.to(W_U_T.device)]  # (*S, C)

    def logit_attrs(
        self,
        residual_stack: torch.Tensor,
        tokens: object,
        incorrect_tokens: object = None,
        pos_slice: object = None,
        batch_slice: object = None,
        has_batch_dim: bool = True,
    ) -> torch.Tensor:
        """How much each component of `residual_stack` adds to the logit of `tokens`: (k, *batch_and_pos).

        The stack goes through the final norm as the logits see it — `apply_ln_to_stack` at the unembedding, then
        ln_final's weight (a model without norms: as it is) — and is projected on W_U[:, tokens]; with
        `incorrect_tokens` (same shape), on W_U[:, tokens] - W_U[:, incorrect_tokens], the logit difference. Over a
        decomposition they add up to the logits less ln_final's bias term, `(bias @ W_U)[tokens]`. `tokens` is an
        id, or ids broadcasting against the stack's batch/position dims: (B,) with `pos_slice=-1`, or (B, T).
        TransformerLens's numbers on a `fold_ln=True` model (its W_U holds that weight); on an unprocessed one,
        TransformerLens leaves the weight out.
        """
        self._need_model()
        directions = self._directions(tokens, "logit_attrs")
        if incorrect_tokens is not None:
            shape, other = torch.as_tensor(tokens).shape, torch.as_tensor(incorrect_tokens).shape
            if shape != other:
                raise ValueError(
                    f"tokens and incorrect_tokens must have the same shape, got {tuple(shape)} and {tuple(other)}"
                )
            directions = directions - self._directions(incorrect_tokens, "logit_attrs (incorrect_tokens)")
        if self.model.config.layer_norm:
            scaled = self.apply_ln_to_stack(
                residual_stack, -1, pos_slice=pos_slice, batch_slice=batch_slice, has_batch_dim=has_batch_dim
            )
            directions = directions * self.model.ln_f.weight.detach().to(directions.device)  # gptviz folds nothing
        else:
            batch = _index(batch_slice)
            scaled = _take(residual_stack, batch, 1) if has_batch_dim and batch is not None else residual_stack
        try:
            product = scaled * directions.to(scaled.device, scaled.dtype)
        except RuntimeError as e:  # torch's broadcasting error, said with what the shapes mean
            raise ValueError(
                f"logit_attrs: tokens of shape {tuple(torch.as_tensor(tokens).shape)} do not fit the stack's batch "
                f"and positions {tuple(scaled.shape[1:-1])}: give one id, (B,) ids with pos_slice=-1, or (B, T) ids"
            ) from e
        return product.sum(-1)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(self[n].shape)}" for n in self)
        return f"ActivationCache({shapes})"
