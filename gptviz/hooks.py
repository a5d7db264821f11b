"""Named hook points and the two context managers that use them.

A `HookPoint` is an identity module placed inline in the model's forward pass. It costs one attribute test
when nobody listens. `capture(model, names)` records activations; `hooks(model, {name: fn})` lets a function
read or replace them (ablate a head, patch a residual). Both always remove what they add, even when the
body raises: hooks are global state on the model and must never outlive the `with` block.

This module knows nothing about GPT internals: it finds hook points by walking `model.named_modules()`,
and asks the model (`model.hook_shapes`) how big each activation will be for the capture budget.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from .errors import CaptureBudgetError, HookNameError, HookShapeError, InputError, UsageError

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]

DEFAULT_CAPTURE_BUDGET_MB = 512.0


class HookPoint(nn.Module):
    """Identity at a named site of the forward pass. `name` is its public name (TransformerLens's where it has one).

    Listeners are called as TransformerLens calls them, `fn(activation, hook=point)`, so `def fn(x, hook)` and
    `def fn(x, *, hook)` both work. Returning None keeps the activation; returning a tensor replaces it and must
    have the same shape, dtype and device (anything else is refused here with HookShapeError naming this hook, not
    one block later by LayerNorm).
    """

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.fns: list[HookFn] = []

    # Overriding __call__ (not forward) skips nn.Module's call machinery: with no listener a hook point
    # costs one list test, which keeps "capture off" as fast as a model without hook points.
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fns:
            return x
        if x._is_view():  # q/k/v are slices of one product, positions an expanded buffer: a listener that edits in
            x = x.clone()  # place gets a tensor of its own (autograd allows it, no buffer or neighbour changes)
        for fn in self.fns:
            out = fn(x, hook=self)
            if out is not None:
                if not (
                    isinstance(out, torch.Tensor)
                    and out.shape == x.shape
                    and out.dtype == x.dtype
                    and out.device == x.device
                ):
                    raise HookShapeError(self._wrong_return(fn, out, x))
                x = out
        return x

    def _wrong_return(self, fn: HookFn, out: object, x: torch.Tensor) -> str:
        """What a listener returned instead of a tensor like `x`, and what to return instead."""
        name = getattr(fn, "__name__", None) or repr(fn)
        keep = "or None to keep the activation"
        if not isinstance(out, torch.Tensor):
            got = f"a value of type {type(out).__name__}, but the activation there is a tensor {tuple(x.shape)}"
            fix = f"return a tensor (e.g. the activation, changed in place) {keep}"
        elif out.shape != x.shape:
            got = f"{tuple(out.shape)}, but the activation there is {tuple(x.shape)}"
            fix = f"return a tensor of the same shape, {keep}"
        elif out.dtype != x.dtype:
            got = f"a {out.dtype} tensor, but the activation there is {x.dtype}"
            fix = f"return out.to({x.dtype}), {keep}"
        else:
            got = f"a tensor on {out.device}, but the activation there is on {x.device}"
            fix = f"return out.to({str(x.device)!r}), {keep}"
        return f"the hook function {name!r} at {self.name} returned {got}; {fix}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - __call__ is used
        return self(x)

    @property
    def active(self) -> bool:
        return bool(self.fns)

    def layer(self) -> int:
        """The block this hook point sits in (TransformerLens's `hook.layer()`); ValueError outside blocks."""
        parts = self.name.split(".")
        if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
            return int(parts[1])
        raise InputError(f"{self.name} is not inside a block, so it has no layer")

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


# Names that changed to TransformerLens's spelling (2026-12): an old name is an error that names the new one.
RENAMED = {
    "hook_tok_emb": "hook_embed",
    "hook_pos_emb": "hook_pos_embed",
    "hook_scores": "hook_attn_scores",
    "hook_final_ln": "ln_final.hook_normalized",  # now before ln_final's weight and bias, as TransformerLens
}


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """All hook points of `model`, by name, in forward order (a GPT keeps them in `model.hook_dict`)."""
    cached = model.__dict__.get("hook_dict")
    if cached:
        return cached
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, HookPoint)}


def resolve_names(model: nn.Module, names: str | Iterable[str]) -> list[str]:
    """Expand names and glob patterns ("blocks.*.attn.hook_pattern") into hook names, in forward order.

    An unknown name raises HookNameError (a KeyError) listing the closest valid names.
    """
    points = hook_points(model)
    wanted = [names] if isinstance(names, str) else list(names)
    if not wanted:
        raise InputError(
            "no hook names given; pass a name such as 'blocks.0.attn.hook_pattern' or a "
            "pattern such as 'blocks.*.attn.hook_pattern' (see gptviz.hook_names(model))"
        )
    chosen: set[str] = set()
    for pattern in wanted:
        if not isinstance(pattern, str):
            raise UsageError(f"hook names must be strings, got {type(pattern).__name__}: {pattern!r}")
        if any(ch in pattern for ch in "*?["):
            hits = fnmatch.filter(points, pattern)
        else:
            hits = [pattern] if pattern in points else []
        if not hits:
            raise HookNameError(_unknown_hook_message(pattern, list(points)))
        chosen.update(hits)
    return [n for n in points if n in chosen]


def _unknown_hook_message(name: str, valid: list[str]) -> str:
    head, _, leaf = name.rpartition(".")
    if leaf in RENAMED:
        new = f"{head}.{RENAMED[leaf]}" if head else RENAMED[leaf]
        return (
            f"hook {name!r} was renamed {new!r} (TransformerLens's spelling); the shapes of q/k/v/z hooks are "
            "now (B, T, nh, hs) as in TransformerLens. gptviz.hook_names(model) lists every name."
        )
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    if not close:  # fall back to names sharing the last component, e.g. "hook_pattern"
        tail = name.rsplit(".", 1)[-1]
        close = [v for v in valid if v.endswith(tail)][:5]
    hint = f" Closest: {', '.join(close)}." if close else ""
    return (
        f"unknown hook name {name!r}.{hint} Patterns like 'blocks.*.attn.hook_pattern' work too; "
        f"gptviz.hook_names(model) lists all {len(valid)} names."
    )


def _as_listener(fn: Callable) -> Callable:
    """`fn` as HookPoint calls listeners, `fn(x, hook=point)`. A function whose second parameter has another name
    (`lambda x, h: ...`, gptviz's older habit) is wrapped to receive the point positionally."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: call them positionally
        params = None
    if params is not None and ("hook" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())):
        return fn

    def positional(x: torch.Tensor, hook: HookPoint):
        return fn(x, hook)

    positional.__name__ = getattr(fn, "__name__", None) or repr(fn)  # errors name the user's function
    return positional


@contextlib.contextmanager
def _attached(model: nn.Module, fns: dict[str, list[HookFn]]) -> Iterator[None]:
    points = hook_points(model)
    added: list[tuple[HookPoint, HookFn]] = []
    try:
        for name, name_fns in fns.items():
            for fn in name_fns:
                points[name].fns.append(fn)
                added.append((points[name], fn))
        yield
    finally:
        for point, fn in reversed(added):
            # remove by identity: the same function object may be attached twice by nested contexts
            for i in range(len(point.fns) - 1, -1, -1):
                if point.fns[i] is fn:
                    del point.fns[i]
                    break


class Capture:
    """What `capture` recorded: a read-only mapping name -> detached tensor (the last call of each hook).

    With `keep="all"` every call is kept (e.g. one per generation step) and `cap.history(name)` returns them.
    """

    def __init__(self, names: list[str], keep: str) -> None:
        self.names = names
        self.keep = keep
        self._store: dict[str, list[torch.Tensor]] = {}

    def _record(self, name: str, x: torch.Tensor, to_cpu: bool) -> None:
        x = x.detach()
        x = x.to("cpu", copy=True) if to_cpu else x.clone()
        if self.keep == "last":
            self._store[name] = [x]
        else:
            self._store.setdefault(name, []).append(x)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.history(name)[-1]

    def history(self, name: str) -> list[torch.Tensor]:
        if name not in self.names:
            raise HookNameError(
                _unknown_hook_message(name, self.names).replace("unknown hook name", "this capture did not ask for")
            )
        if name not in self._store:
            raise HookNameError(
                f"hook {name!r} was requested but never fired inside the capture block "
                "(did the model run? a 'none' or rotary positional encoding has no hook_pos_embed)"
            )
        return self._store[name]

    def __contains__(self, name: object) -> bool:
        return name in self._store

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in self.names if n in self._store])

    def __len__(self) -> int:
        return len(self._store)

    def keys(self) -> list[str]:
        return list(self)

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return [(n, self[n]) for n in self]

    def stack(self, pattern: str) -> torch.Tensor:
        """The last value of every captured hook matching `pattern`, stacked in forward order on a new dim 0.

        >>> cap.stack("blocks.*.attn.hook_pattern")   # (L, B, nh, T, Tk)
        """
        names = fnmatch.filter([n for n in self.names], pattern)
        if not names:
            raise HookNameError(f"no hook in this capture matches {pattern!r}; it holds {', '.join(self.names)}")
        return torch.stack([self[n] for n in names])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self._store.values() for t in ts)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(self[n].shape)}" for n in self)
        return f"Capture({shapes})"


def estimate_capture_bytes(
    model: nn.Module,
    names: str | Iterable[str],
    batch_size: int,
    seq_len: int,
    past_len: int = 0,
    bytes_per_element: int = 4,
) -> int:
    """Memory a capture of `names` takes for one forward of (batch_size, seq_len) tokens.

    Attention scores/patterns grow as heads x T^2: this is the number to check before capturing long inputs.
    """
    shapes = model.hook_shapes(batch_size, seq_len, past_len)  # type: ignore[operator]
    total = 0
    for name in resolve_names(model, names):
        numel = 1
        for d in shapes[name]:
            numel *= d
        total += numel * bytes_per_element
    return total


@contextlib.contextmanager
def capture(
    model: nn.Module,
    names: str | Iterable[str] = "*",
    *,
    keep: str = "last",
    to_cpu: bool = False,
    budget_mb: float | None = DEFAULT_CAPTURE_BUDGET_MB,
) -> Iterator[Capture]:
    """Record the named activations of every forward pass run inside the block.

    >>> with capture(model, "blocks.*.attn.hook_pattern") as cap:
    ...     model(idx)
    >>> cap["blocks.0.attn.hook_pattern"].shape   # (B, nh, T, T)

    Before the first activation is stored, the whole capture's size is estimated from the input shape; above
    `budget_mb` (None = no limit) the forward raises CaptureBudgetError saying how much and how to narrow it.
    """
    if keep not in ("last", "all"):
        raise InputError(f"keep must be 'last' or 'all', got {keep!r}")
    if budget_mb is not None and (
        isinstance(budget_mb, bool) or not isinstance(budget_mb, (int, float)) or not 0 < budget_mb < float("inf")
    ):
        raise InputError(f"budget_mb must be a positive number of megabytes, or None for no limit; got {budget_mb!r}")
    resolved = resolve_names(model, names)
    cap = Capture(resolved, keep)
    fns: dict[str, list[HookFn]] = {}

    if budget_mb is not None and hasattr(model, "hook_shapes"):
        first = next(iter(hook_points(model)))  # fires first in every forward, with the input's (B, T, C)

        def check_budget(x: torch.Tensor, hook: HookPoint) -> None:
            past = getattr(model, "_past_len", 0)
            est = estimate_capture_bytes(model, resolved, x.shape[0], x.shape[1], past, x.element_size())
            held = cap.nbytes() if keep == "all" else 0
            if est + held > budget_mb * 2**20:
                raise CaptureBudgetError(
                    f"capturing {len(resolved)} activations for B={x.shape[0]}, T={x.shape[1]} would take "
                    f"{(est + held) / 2**20:.0f} MB, over the capture budget of {budget_mb:.0f} MB. Narrow it: "
                    "fewer names (e.g. 'blocks.0.attn.hook_pattern' instead of '*'), a shorter input, "
                    "or raise the limit with capture(..., budget_mb=...) / budget_mb=None."
                )

        fns.setdefault(first, []).append(check_budget)

    for name in resolved:

        def record(x: torch.Tensor, hook: HookPoint, _name: str = name) -> None:
            cap._record(_name, x, to_cpu)

        fns.setdefault(name, []).append(record)

    with _attached(model, fns):
        yield cap


@contextlib.contextmanager
def hooks(model: nn.Module, fns: dict[str, HookFn]) -> Iterator[None]:
    """Run functions at hook points inside the block: `fn(tensor, hook) -> tensor | None`.

    Returning a tensor replaces the activation (same shape); returning None only observes it. Keys may be
    patterns ("blocks.*.hook_resid_post"). Everything attached is removed when the block ends.

    >>> def ablate_head(pattern, hook):        # (B, nh, T, T)
    ...     pattern[:, 3] = 0
    ...     return pattern
    >>> with hooks(model, {"blocks.0.attn.hook_pattern": ablate_head}):
    ...     logits = model(idx)
    """
    if not isinstance(fns, dict):
        raise UsageError(
            f"hooks(model, fns) takes a dict {{hook name or pattern: fn(tensor, hook)}}, got {type(fns).__name__}; "
            "e.g. hooks(model, {'blocks.0.attn.hook_pattern': ablate})"
        )
    attach: dict[str, list[HookFn]] = {}
    for key, fn in fns.items():
        if not callable(fn):
            raise UsageError(f"the hook for {key!r} must be a function fn(tensor, hook), got {type(fn).__name__}")
        listener = _as_listener(fn)
        for name in resolve_names(model, key):
            attach.setdefault(name, []).append(listener)
    with _attached(model, attach):
        yield


def run_with_cache(
    model: nn.Module, idx: torch.Tensor, names: str | Iterable[str] = "*", **capture_kwargs: object
) -> tuple[torch.Tensor, Capture]:
    """One forward pass that returns (logits, capture) — TransformerLens' habit, for those who have it.

    A model with its own `run_with_cache` (a GPT) answers with its ActivationCache (gptviz.cache), a Capture that
    also reads short names and does the residual-stream analysis; any other module gets a plain Capture.
    """
    own = getattr(model, "run_with_cache", None)
    if callable(own) and capture_kwargs.get("keep", "last") == "last":  # asked of the model: no import of gptviz.cache
        kwargs = {k: v for k, v in capture_kwargs.items() if k not in ("keep", "to_cpu")}
        return own(idx, names, device="cpu" if capture_kwargs.get("to_cpu") else None, **kwargs)
    with torch.no_grad(), capture(model, names, **capture_kwargs) as cap:  # type: ignore[arg-type]
        logits = model(idx)
    return logits, cap
