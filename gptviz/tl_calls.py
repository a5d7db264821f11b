"""TransformerLens's calls on a GPT (a mixin of `gptviz.model.GPT`): `run_with_cache`, `run_with_hooks`, and the
hooks that stay attached until removed, `add_hook` / `reset_hooks` / `with model.hooks(fwd_hooks=...)`.

    logits, cache = model.run_with_cache(ids)                      # the cache and its analysis: gptviz.cache
    loss = model.run_with_hooks(ids, return_type="loss", fwd_hooks=[("blocks.0.attn.hook_z", ablate)])
    model.add_hook("blocks.1.attn.hook_pattern", look)             # every later forward pass runs `look` ...
    model.reset_hooks()                                            # ... until this (is_permanent=True: until
                                                                   #     reset_hooks(including_permanent=True))

Keywords of the forward pass (`return_type="loss"`, `attention_mask=`, `labels=` ...) go through to `model(...)`.
This module attaches and removes listeners; the hook points are `gptviz.hooks`' and the names it resolves are
`gptviz.cache.select_hooks`'. It never imports `gptviz.model`.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError, UsageError
from .hooks import HookPoint, _as_listener, hook_points

_NO_BACKWARD = (
    "gptviz has no backward hooks; read gradients with torch (x.register_hook(fn) on the activation a forward "
    "hook receives, or tensor.retain_grad())"
)


class TransformerLensCalls:
    """run_with_cache, run_with_hooks, add_hook, reset_hooks and hooks(), as TransformerLens's HookedTransformer has
    them. Hooks added here are remembered on the model (`_added_hooks`) so that reset_hooks finds them."""

    def run_with_cache(
        self,
        input_ids: torch.Tensor,
        names_filter=None,
        attention_mask: torch.Tensor | None = None,
        *,
        return_cache_object: bool = True,
        remove_batch_dim: bool = False,
        device: str | torch.device | None = None,
        budget_mb: float | None = 512.0,  # gptviz.hooks.DEFAULT_CAPTURE_BUDGET_MB
        **forward_kwargs,
    ):
        """One forward pass (no grad) -> (logits (B, T, V), ActivationCache), as TransformerLens's run_with_cache.

        `names_filter`: None (every hook point), a name or glob, a list of them, or a function name -> bool.
        `device`: where the cache lives (default: the model's). `return_cache_object=False` gives a plain dict.
        The capture's memory is checked against `budget_mb` before anything is stored (see gptviz.capture).
        `forward_kwargs` go to the forward pass: `return_type="loss"` gives (loss, cache), as in TransformerLens.
        """
        from .cache import ActivationCache, select_hooks
        from .hooks import capture

        names = select_hooks(self, names_filter)
        to_cpu = device is not None and torch.device(device).type == "cpu"
        with torch.no_grad(), capture(self, names, to_cpu=to_cpu, budget_mb=budget_mb) as cap:
            out = self(input_ids, attention_mask=attention_mask, **forward_kwargs)
        cache = ActivationCache.from_capture(cap, self)
        if device is not None and not to_cpu:
            cache.to(device)
        if remove_batch_dim:
            cache.remove_batch_dim()
        return out, (cache if return_cache_object else dict(cache.items()))

    def run_with_hooks(
        self,
        input_ids: torch.Tensor,
        fwd_hooks=(),
        attention_mask: torch.Tensor | None = None,
        reset_hooks_end: bool = True,
        bwd_hooks=(),
        clear_contexts: bool = False,
        **forward_kwargs,
    ) -> torch.Tensor:
        """Logits (B, T, V) of one forward pass with `fwd_hooks` = [(name_or_filter, fn), ...] attached.

        `name_or_filter`: a hook name, a glob, or a function name -> bool; `fn(activation, hook)` returns None or
        a replacement of the same shape. Hooks on one point run in list order and are removed afterwards, unless
        `reset_hooks_end=False` (then they stay, as add_hook's, until `reset_hooks()`). `forward_kwargs` go to the
        forward pass (`return_type="loss"`, `labels=` ...), which decides what comes back.
        """
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end=reset_hooks_end):
            return self(input_ids, attention_mask=attention_mask, **forward_kwargs)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks=(), bwd_hooks=(), reset_hooks_end: bool = True, clear_contexts: bool = False):
        """`with model.hooks(fwd_hooks=[(name_or_filter, fn), ...]):` — the pairs attached inside the block and
        removed at its end (`reset_hooks_end=False`: kept until `reset_hooks()`). For a dict of hooks, the
        module-level `gptviz.hooks(model, {name: fn})` does the same."""
        if bwd_hooks:
            raise UsageError(_NO_BACKWARD)
        if isinstance(fwd_hooks, tuple) and len(fwd_hooks) == 2 and callable(fwd_hooks[1]):
            fwd_hooks = [fwd_hooks]  # one pair, given bare
        added = []
        try:
            for i, entry in enumerate(fwd_hooks):
                if not isinstance(entry, (tuple, list)) or len(entry) != 2 or entry[0] is None:
                    raise UsageError(f"fwd_hooks[{i}] must be a pair (hook name or filter function, fn), got {entry!r}")
                added += self._attach(*entry, permanent=False, prepend=False)
            yield self
        finally:
            if reset_hooks_end:
                self._detach(added)

    def add_hook(self, name, hook, dir: str = "fwd", is_permanent: bool = False, level=None, prepend: bool = False):
        """Attach `hook(activation, hook)` at `name` (a hook name, a glob, or a function name -> bool) for every
        later forward pass, until `reset_hooks()` (or, with `is_permanent=True`, `reset_hooks(including_permanent=
        True)`). `prepend=True` runs it before the hooks already there."""
        if dir != "fwd":
            raise UsageError(_NO_BACKWARD if dir == "bwd" else f"dir must be 'fwd', got {dir!r}")
        self._attach(name, hook, permanent=bool(is_permanent), prepend=bool(prepend))

    def reset_hooks(
        self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False, level=None
    ) -> None:
        """Remove the hooks add_hook attached (and run_with_hooks / hooks() kept with reset_hooks_end=False); the
        permanent ones too with `including_permanent=True`. Hooks of an open `with gptviz.hooks(...)` block stay."""
        self._detach([h for h in self._added() if including_permanent or not h[2]])

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Accepted for TransformerLens's habit and changes nothing: gptviz computes `attn.hook_result` whenever a
        hook or a cache listens to it, and never otherwise."""
        if not isinstance(use_attn_result, bool):
            raise InputError(f"set_use_attn_result takes True or False, got {use_attn_result!r}")

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        if use_split_qkv_input:  # off is what gptviz always is
            _no_input_hooks("set_use_split_qkv_input", "hook_q_input / hook_k_input / hook_v_input")

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        if use_attn_in:  # off is what gptviz always is
            _no_input_hooks("set_use_attn_in", "hook_attn_in")

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        if use_hook_mlp_in:  # off is what gptviz always is
            _no_input_hooks("set_use_hook_mlp_in", "hook_mlp_in")

    # ---- bookkeeping ------------------------------------------------------------------------------------------
    def _added(self) -> list[tuple[HookPoint, object, bool]]:
        return self.__dict__.setdefault("_added_hooks", [])

    def _attach(self, name, fn, permanent: bool, prepend: bool) -> list[tuple[HookPoint, object, bool]]:
        from .cache import select_hooks

        if not callable(fn):
            raise UsageError(f"the hook for {name!r} must be a function fn(activation, hook), got {type(fn).__name__}")
        if name is None:
            raise InputError("a hook needs a name, a glob or a filter function; None selects nothing")
        listener = _as_listener(fn)
        points = hook_points(self)
        added = []
        for hook_name in select_hooks(self, name):
            point = points[hook_name]
            if prepend:
                point.fns.insert(0, listener)
            else:
                point.fns.append(listener)
            added.append((point, listener, permanent))
        self._added().extend(added)
        return added

    def _detach(self, entries: list) -> None:
        mine = self._added()
        for entry in reversed(entries):
            point, listener, _ = entry
            for i in range(len(point.fns) - 1, -1, -1):  # by identity: one function may sit there twice
                if point.fns[i] is listener:
                    del point.fns[i]
                    break
            for i in range(len(mine) - 1, -1, -1):  # this very entry (the same function may also be permanent)
                if mine[i] is entry:
                    del mine[i]
                    break


def _no_input_hooks(call: str, names: str) -> None:
    raise UsageError(
        f"{call}: gptviz has no {names} hook points. What they carry is the residual stream entering the layer, "
        "the same for every head: patch blocks.L.hook_resid_pre (attention's input) or blocks.L.hook_resid_mid "
        "(the MLP's), or blocks.L.ln1.hook_normalized / ln2.hook_normalized after the norm"
    )
