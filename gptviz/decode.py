"""Feeding a GPT during generation: `DecodeWindow` (the sequence so far -> next-token logits, with the KV cache and
the sliding window) and the one-token decode step it uses after the prompt, `DecodeStep`: the forward for one new
token per row over the preallocated KV cache, without nn.Module calls, eager or compiled with `torch.compile`.

A generation step after the prompt feeds one token per row (B, 1). Through the modules that is ~15 Python
calls per layer, each with nn.Module's call machinery, hook-point tests and shape checks: at the lab's small
shapes that Python is most of a token's time. `DecodeStep` runs the same arithmetic straight from the weights:

- eager (the default): the very same torch calls in the same order as `GPT.trunk` for T = 1, so the logits
  are bit-for-bit the module path's and greedy tokens are identical;
- compiled (`compile=True`, or "auto" on a GPU for long generations, see `want_compile`): a static-shape
  variant (the position is a tensor, the cache is written with `index_copy_`, attention reads all `max_len`
  cached keys under a mask) that `torch.compile` turns into a few fused kernels, and on CUDA into one CUDA
  graph (mode="reduce-overhead"). Masked keys get exactly zero weight, so the same tokens come out; tests
  compare compiled and eager steps. Any failure to compile falls back to eager, with a warning.

It computes what the model computes in eval mode (no dropout), as generation always does. It never runs while
someone listens to a hook point, or with a padding mask: the module path (`GPT.trunk`) does those, and
`DecodeWindow` chooses per step. The newest query's attention row (`record=True`) is computed beside SDPA, for
all layers and several steps in one batched product (NewestQueries, gptviz.layers.attention_rows), as the module
path computes it per layer.

When compiling pays (measured on the project's 2-core CPU, 4L/4H/128, 200 tokens, torch 2.13): the first
compiled call took 160 s (inductor's C++ back end, machine shared) and the compiled step then ran at 2.5-3.0
ms/token against 1.7-1.9 eager, since it attends over every cached slot: on a CPU it never pays, and "auto"
never compiles there. On CUDA, one CUDA graph per step removes the launch overhead that bounds decoding.
This module knows nothing about sampling, records or tokenizers (gptviz.sampling, gptviz.steps).
"""

from __future__ import annotations

import functools
import os
import time
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import hook_points
from .layers import KVCache, LayerNorm, RMSNorm, apply_rotary, attention_rows, newest_attention_row

__all__ = ["DecodeStep", "DecodeWindow", "fast_path_reason", "want_compile", "COMPILE_MIN_TOKENS", "compile_seconds"]

# "auto" compiles only on CUDA, and only when a call asks for at least this many new tokens: the first compile
# takes tens of seconds, which a student's 20-token click never earns back (the graph is kept for later calls).
COMPILE_MIN_TOKENS = 128


def want_compile(compile: bool | str | None, device: torch.device, new_tokens: int) -> bool:
    """The rule: True/False as given; None or "auto": CUDA and >= COMPILE_MIN_TOKENS new tokens, unless the
    environment says GPTVIZ_COMPILE=0 (never) or 1 (always, the same as compile=True)."""
    if compile is True or compile is False:
        return compile
    if compile not in (None, "auto"):
        raise ValueError(f"compile must be True, False, None or 'auto', got {compile!r}")
    env = os.environ.get("GPTVIZ_COMPILE", "")
    if env in ("0", "1"):
        return env == "1"
    return device.type == "cuda" and new_tokens >= COMPILE_MIN_TOKENS


def fast_path_reason(model) -> str | None:
    """None when `DecodeStep` computes exactly what the modules compute for this model, else why not.

    A subclass of nn.Linear (LoRA) or a replaced module changes the arithmetic, so only the stock parts qualify.
    """
    linears = [model.lm_head]
    for block in model.blocks:
        linears += [block.attn.c_attn, block.attn.c_proj]
        if block.mlp is not None:
            linears += [block.mlp.c_fc, block.mlp.c_proj]
        for norm in (block.ln_1, getattr(block, "ln_2", None)):
            if norm is not None and type(norm) not in (LayerNorm, RMSNorm, nn.Identity):
                return f"a norm of type {type(norm).__name__}"
    if any(type(lin) is not nn.Linear for lin in linears):
        return "a linear layer was replaced (LoRA or an edit)"
    if type(model.ln_f) not in (LayerNorm, RMSNorm, nn.Identity):
        return f"a final norm of type {type(model.ln_f).__name__}"
    return None


def _norm_fn(norm: nn.Module):
    """The norm as a plain function of x, the same ops its forward runs with no listener."""
    if type(norm) is LayerNorm:
        shape, w, b, eps = (norm.weight.shape[0],), norm.weight, norm.bias, norm.eps
        # F.layer_norm's own call, without its Python wrapper (~3 us of checks per call, 2 calls per layer per token)
        cudnn = torch.backends.cudnn.enabled
        return lambda x: torch.layer_norm(x, shape, w, b, eps, cudnn)
    if type(norm) is RMSNorm:
        return norm.forward  # its float32 round trip, as written there
    return None  # nn.Identity


class NewestQueries:
    """One eager step's newest queries, every layer's, whose attention rows are computed when someone reads them.

    A row costs one small product against the cached keys; done per step at the lab's shapes, that product's fixed
    cost is as large as the step's own arithmetic. Kept as queries, the rows of consecutive steps come out of ONE
    product (`rows`): the keys a step saw are still in the cache (later steps only write past them), and a
    DecodeWindow resolves its pending queries before anything moves cached keys (`reorder`).
    """

    __slots__ = ("queries", "keys", "end")

    def __init__(self, queries: list[torch.Tensor], keys: torch.Tensor, end: int) -> None:
        self.queries = queries  # L tensors (B, nh, 1, hs), one per layer (stacked with the other steps' in `rows`)
        self.keys = keys  # (L, B, nkv, max_len, hs) the cache's buffer, of which this step saw [:end]
        self.end = end

    @staticmethod
    def rows(steps: list[NewestQueries], row: int | None = None) -> list[torch.Tensor]:
        """(B, L, nh, Tk) per step, for consecutive steps over the same cache, in one batched product; `row`: only
        that sequence's, (L, nh, Tk)."""
        first, end, C, L = steps[0].end, steps[-1].end, len(steps), len(steps[0].queries)
        B, nh, _, hs = steps[0].queries[0].shape
        # every query of every step in one stack: (C * L, B, nh, 1, hs) -> (L, B, nh, C, hs)
        q = torch.stack([q for s in steps for q in s.queries]).view(C, L, B, nh, hs).permute(1, 2, 3, 0, 4)
        if end - first == C - 1:  # one step per position (always, within one cache): step j sees j keys from `first`
            allowed = _earlier(C, q.device)
        else:
            ends = torch.tensor([s.end for s in steps], device=q.device)
            allowed = torch.arange(first, end, device=q.device) < ends[:, None]  # (C, end - first)
        rows = attention_rows(q, steps[0].keys[:, :, :, :end], allowed, from_key=first)  # (L, B, nh, C, Tk)
        per_step = rows.permute(3, 1, 0, 2, 4)  # (C, B, L, nh, Tk)
        if row is not None:
            per_step = per_step[:, row]  # (C, L, nh, Tk)
        # one unbind, then one slice per step: a view costs ~2 us of Python here, a tuple index more
        return [r[..., : s.end] for r, s in zip(per_step.unbind(0), steps)]  # (B, L, nh, Tk) or (L, nh, Tk) each


@functools.lru_cache(maxsize=16)
def _earlier(C: int, device: torch.device) -> torch.Tensor:
    """(C, C - 1) booleans, [j, i] = i < j: which of a run's own new keys its j-th query may see (read-only)."""
    return torch.ones(C, C - 1, dtype=torch.bool, device=device).tril(-1)


class DecodeStep:
    """`step(ids (B, 1), cache, record) -> (float32 logits (B, V), rows)` for the token at `cache.pos`; advances the
    cache. `rows`, when `record`: every layer's newest attention row, as `NewestQueries` (eager: the rows of several
    steps are computed in one product later) or a (B, L, nh, Tk) tensor (compiled); None otherwise.

    Built per generation (cheap: it collects references to the weights, which optimizers update in place).
    """

    def __init__(self, model, compile: bool = False) -> None:
        c = model.config
        self.model, self.config = model, c
        self.nh, self.nkv, self.hs = c.n_head, c.kv_heads, c.head_size
        self.q_size, self.kv_size = self.nh * self.hs, self.nkv * self.hs
        self.gqa = self.nkv != self.nh
        self.kind = c.pos_encoding
        self.layers = []
        for block in model.blocks:
            a, m = block.attn, block.mlp
            self.layers.append(
                (
                    _norm_fn(block.ln_1),
                    a.c_attn.weight,
                    a.c_attn.bias,
                    a.c_proj.weight,
                    a.c_proj.bias,
                    _norm_fn(block.ln_2) if m is not None else None,
                    (m.c_fc.weight, m.c_fc.bias, m.c_proj.weight, m.c_proj.bias, m.act, m.gated) if m else None,
                    block.parallel,
                )
            )
        self.ln_f = _norm_fn(model.ln_f)
        self.head_w = model.lm_head.weight
        # the tables, read once (a module's parameters and buffers sit behind nn.Module.__getattr__, a slow path)
        self.wte_w = model.wte.weight  # (V, C)
        self.pos_w = {  # (block_size, C) added to x, or (block_size, rd) RoPE's cos; None: no positions
            "learned": lambda: model.wpe.weight,
            "sinusoidal": lambda: model.pe,
            "rotary": lambda: model.rope_cos,
        }.get(self.kind, lambda: None)()
        self.sin = model.rope_sin if self.kind == "rotary" else None  # (block_size, rd)
        self._views_of, self._views = None, []  # the eager step's per-layer views of its cache (`_layer_views`)
        self.compiled = None
        if compile:
            cuda = model.wte.weight.device.type == "cuda"
            self.compiled = torch.compile(
                DecodeStep.static_step, mode="reduce-overhead" if cuda else None, fullgraph=True
            )
        self.fingerprint = _fingerprint(model)
        self.caches: dict[int, tuple[KVCache, weakref.ref]] = {}  # compiled: batch size -> (cache, its user)

    @classmethod
    def for_model(cls, model, compile: bool = False) -> DecodeStep:
        """A step for `model`: a fresh eager one (cheap), or the model's compiled one, kept between calls so
        torch.compile traces once per model and shape (rebuilt if a parameter was replaced since)."""
        if not compile:
            return cls(model)
        step = _COMPILED.get(model)
        if step is None or step.compiled is None or step.fingerprint != _fingerprint(model):
            step = _COMPILED[model] = cls(model, compile=True)
        return step

    def static_cache(self, batch_size: int, owner: object) -> KVCache | None:
        """The compiled step's own cache for `batch_size` rows, of the full block size (one shape, one graph), at
        position 0; None while another live generation (`owner` is alive) uses it. On CUDA its buffers keep
        their address, so a CUDA graph reads them in place instead of copying them in at every step."""
        cache, holder = self.caches.get(batch_size, (None, None))
        if holder is not None and holder() is not None and holder() is not owner:
            return None
        if cache is None:
            cache = self.model.new_kv_cache(batch_size, self.config.block_size)
            if cache.k.device.type == "cuda":
                torch._dynamo.mark_static_address(cache.k)
                torch._dynamo.mark_static_address(cache.v)
        cache.reset()
        self.caches[batch_size] = (cache, weakref.ref(owner))
        return cache

    # ---- eager: GPT.trunk's ops for one token, in its order ------------------------------------------------
    def __call__(
        self, idx: torch.Tensor, cache: KVCache, record: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.compiled is not None:
            return self._call_compiled(idx, cache, record)
        past = cache.pos
        B = idx.size(0)
        nh, nkv, hs = self.nh, self.nkv, self.hs
        end = past + 1
        if end > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; cannot add one at {past}")
        x = torch.embedding(self.wte_w, idx)  # (B, 1, C) what nn.Embedding computes (F.embedding's own call)
        rope = None
        if self.kind == "learned":
            x = x + self.pos_w[past]  # (B, 1, C) + (C,): the module path's expanded (B, 1, C) view, broadcast
        elif self.kind == "sinusoidal":
            x = x + self.pos_w[past].to(x.dtype)
        elif self.kind == "rotary":
            rope = (self.pos_w[past : past + 1].to(x.dtype), self.sin[past : past + 1].to(x.dtype))  # (1, rd)
        heads, head_split = nh + 2 * nkv, (nh, nkv, nkv)
        kv = self._layer_views(cache)
        queries = []  # each layer's new query, when recording: every row is computed at once after the loop
        for layer, (ln_1, wa, ba, wo, bo, ln_2, mlp, parallel) in enumerate(self.layers):
            h = ln_1(x) if ln_1 is not None else x
            # the module path's split, views and transposes as three view ops: q (B, nh, 1, hs), k and v (B, nkv, 1, hs)
            q, k, v = F.linear(h, wa, ba).view(B, 1, heads, hs).transpose(1, 2).split_with_sizes(head_split, dim=1)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            k_layer, v_layer = kv[layer]
            k_layer[:, :, past:end] = k
            v_layer[:, :, past:end] = v
            k, v = k_layer.narrow(2, 0, end), v_layer.narrow(2, 0, end)  # (B, nkv, Tk, hs)
            if record:
                queries.append(q)
            z = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.gqa)  # (B, nh, 1, hs)
            # (B, nh, 1, hs) -> (B, 1, nh * hs): for one token, the module path's transpose(1, 2) moves nothing
            attn = F.linear(z.reshape(B, 1, self.q_size), wo, bo)  # (B, 1, C)
            x = self._residual(x, attn, ln_2, mlp, parallel)
        cache.advance(1)
        h = self.ln_f(x) if self.ln_f is not None else x
        # the rows are computed later, several steps in one product (NewestQueries.rows)
        rows = NewestQueries(queries, cache.k, end) if record else None
        return F.linear(h, self.head_w)[:, -1].float(), rows  # (B, V)

    def _layer_views(self, cache: KVCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (keys, values) buffers, (B, nkv, max_len, hs) views of the cache's, made once per cache
        (indexing the layer out of the (L, ...) buffers at every step cost ~1 us a time, four times a layer)."""
        if self._views_of is not cache.k:  # a new cache (reorder moves rows in place: the same buffers)
            self._views = [(cache.k[layer], cache.v[layer]) for layer in range(len(self.layers))]
            self._views_of = cache.k
        return self._views

    def _residual(self, x, attn, ln_2, mlp, parallel: bool):
        """The block's residual additions after attention, in the module path's order (bit-identical)."""
        if parallel:  # GPT-NeoX: attention and the MLP both read the block's input
            return x + attn + self._mlp(ln_2(x) if ln_2 is not None else x, mlp)
        x = x + attn
        if mlp is not None:
            x = x + self._mlp(ln_2(x) if ln_2 is not None else x, mlp)
        return x

    @staticmethod
    def _mlp(x: torch.Tensor, mlp) -> torch.Tensor:
        w1, b1, w2, b2, act, gated = mlp
        h = F.linear(x, w1, b1)
        if gated:
            gate, up = h.chunk(2, dim=-1)  # (B, 1, n_inner) each
            h = act(gate) * up
        else:
            h = act(h)
        return F.linear(h, w2, b2)

    # ---- compiled: static shapes, the position as a tensor ----------------------------------------------
    def static_step(
        self, idx: torch.Tensor, pos: torch.Tensor, k_all: torch.Tensor, v_all: torch.Tensor, record: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ids (B, 1), pos (1,) long, caches (L, B, nkv, M, hs)) -> (logits (B, V), rows (B, L, nh, M) or None).

        Every shape is fixed by (B, M), so torch.compile traces it once and CUDA graphs can replay it. Cached
        keys past `pos` are masked out (exactly zero weight).
        """
        model = self.model
        B, M = idx.size(0), k_all.size(3)
        nh, nkv, hs = self.nh, self.nkv, self.hs
        x = model.wte(idx)  # (B, 1, C)
        rope = None
        if self.kind == "learned":
            x = x + model.wpe.weight.index_select(0, pos).expand(B, 1, -1)
        elif self.kind == "sinusoidal":
            x = x + model.pe.index_select(0, pos).to(x.dtype).expand(B, 1, -1)
        elif self.kind == "rotary":
            rope = (model.rope_cos.index_select(0, pos).to(x.dtype), model.rope_sin.index_select(0, pos).to(x.dtype))
        allowed = (torch.arange(M, device=idx.device) <= pos).view(1, 1, 1, M)  # (1, 1, 1, M)
        rows = []
        for layer, (ln_1, wa, ba, wo, bo, ln_2, mlp, parallel) in enumerate(self.layers):
            h = ln_1(x) if ln_1 is not None else x
            q, k, v = F.linear(h, wa, ba).split((self.q_size, self.kv_size, self.kv_size), dim=2)
            q = q.view(B, 1, nh, hs).transpose(1, 2)  # (B, nh, 1, hs)
            k = k.view(B, 1, nkv, hs).transpose(1, 2)  # (B, nkv, 1, hs)
            v = v.view(B, 1, nkv, hs).transpose(1, 2)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            k_all[layer].index_copy_(2, pos, k)
            v_all[layer].index_copy_(2, pos, v)
            k, v = k_all[layer], v_all[layer]  # (B, nkv, M, hs)
            if record:
                rows.append(newest_attention_row(q, k, allowed))  # (B, nh, M)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=self.gqa)  # (B, nh, 1, hs)
            attn = F.linear(z.transpose(1, 2).reshape(B, 1, self.q_size), wo, bo)
            x = self._residual(x, attn, ln_2, mlp, parallel)
        h = self.ln_f(x) if self.ln_f is not None else x
        logits = F.linear(h, self.head_w)[:, -1].float()  # (B, V)
        return logits, (torch.stack(rows, dim=1) if record else None)  # (B, L, nh, M)

    def _call_compiled(
        self, idx: torch.Tensor, cache: KVCache, record: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        past = cache.pos
        if past >= cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; cannot add one at {past}")
        pos = torch.tensor([past], device=idx.device)
        if idx.device.type == "cuda":  # a new replay: the previous step's graph outputs were cloned, then dropped
            torch.compiler.cudagraph_mark_step_begin()
        logits, rows = self.compiled(self, idx, pos, cache.k, cache.v, record)
        cache.advance(1)
        # clones: a CUDA graph's outputs are overwritten by its next replay
        return logits.clone(), (rows[..., : past + 1].clone() if record else None)  # (B, L, nh, Tk)


# ---- compiled steps, one per model (torch.compile caches its graphs per input shape) -----------------------------
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
compile_seconds: dict[str, float] = {}  # first-call (compile) time by model class and shape, read by the bench


def _fingerprint(model) -> tuple[int, ...]:
    return tuple(id(p) for p in model.parameters())


def run_compiled_or_eager(
    step: DecodeStep, idx: torch.Tensor, cache: KVCache, record: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step, compiled when `step` was built so; a compile error makes `step` eager for good, with a warning."""
    if step.compiled is None:
        return step(idx, cache, record)
    t0 = time.perf_counter()
    try:
        out = step._call_compiled(idx, cache, record)
    except Exception as e:  # noqa: BLE001 - any compiler failure must leave generation working
        warnings.warn(
            f"torch.compile of the decode step failed ({type(e).__name__}: {str(e)[:200]}); decoding eagerly. "
            "Pass compile=False (or set GPTVIZ_COMPILE=0) to skip the attempt",
            RuntimeWarning,
            stacklevel=3,
        )
        step.compiled = None  # this DecodeStep stays eager; the model's next generation may try again
        _COMPILED.pop(step.model, None)
        return step(idx, cache, record)
    compile_seconds.setdefault(f"{type(step.model).__name__} B{idx.size(0)} M{cache.max_len}", time.perf_counter() - t0)
    return out


# ---- the decoding window: what a generation loop feeds the model at each step ------------------------------
class DecodeWindow:
    """Feeds the model the sequence so far, step by step; owns the KV cache, the sliding window and the choice
    between the module path (`GPT.trunk`: the prompt, padding, hooks, training) and the one-token
    `DecodeStep` (every other step: the same numbers without the modules' Python, or compiled)."""

    def __init__(
        self,
        model,
        use_cache: bool,
        total_len: int,
        record_attention: bool = False,
        attention_mask: torch.Tensor | None = None,
        compile: bool | str | None = None,
        new_tokens: int = 0,
    ) -> None:
        self.model = model
        # (B, total_len): the prompt's mask (1 = real token) then ones for every token to come, built once and
        # sliced each step. None: nothing is padded.
        self.mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            B, T0 = attention_mask.shape
            self.mask = torch.ones(B, max(total_len, T0), dtype=torch.bool, device=attention_mask.device)
            self.mask[:, :T0] = attention_mask.bool()
        self.block_size = model.config.block_size
        self.use_cache = use_cache
        self.cache_len = min(total_len, self.block_size)
        self.cache = None
        # every hook point's listener list, resolved once: the one-token step runs only while all are empty.
        # HookPoint.fns is one list per point for its whole life (gptviz.hooks appends and deletes in place).
        self.listeners = [point.fns for point in hook_points(model).values()]
        self.attns = [block.attn for block in model.blocks] if record_attention else []
        self.record = record_attention
        self.compile = use_cache and want_compile(compile, model.device, new_tokens)
        self.step: DecodeStep | None = None
        self.context_start = 0  # first absolute position inside the window at the last step
        self.pending: list[torch.Tensor | NewestQueries] = []  # each step's rows since the last take_rows()

    def _new_cache(self, batch_size: int):
        if self.compile and self.mask is None and fast_path_reason(self.model) is None:
            self.step = DecodeStep.for_model(self.model, compile=True)
            cache = self.step.static_cache(batch_size, owner=self)
            if cache is not None:
                return cache
            self.step = None  # another live generation holds the compiled step's cache: decode eagerly
        return self.model.new_kv_cache(batch_size, self.cache_len)

    def next_logits(self, seqs: torch.Tensor) -> torch.Tensor:
        """Sequences so far (B, n) -> float32 logits (B, V) for token n."""
        model, n = self.model, seqs.size(1)
        self.context_start = max(0, n - self.block_size)
        if self.use_cache and n <= self.block_size:
            if self.cache is None:
                self.cache = self._new_cache(seqs.size(0))
            feed = seqs[:, self.cache.pos :]  # the whole prompt first, then one token per step
        else:
            self.cache = None  # learned positions cannot slide in a cache: re-read the window from here on
            feed = seqs[:, self.context_start :]
        if feed.size(1) == 1 and self.cache is not None and self.mask is None and not any(self.listeners):
            if self.step is None:
                self.step = DecodeStep.for_model(model) if fast_path_reason(model) is None else False
            if self.step:
                with torch.no_grad():
                    logits, rows = run_compiled_or_eager(self.step, feed, self.cache, self.record)
                if self.record:
                    self.pending.append(rows)
                return logits
        return self._module_path(feed, n, [] if self.record else None)

    def _module_path(self, feed: torch.Tensor, n: int, rows: list | None) -> torch.Tensor:
        model = self.model
        mask = None
        if self.mask is not None:  # the padding so far: the whole sequence with a cache, else the window
            mask = self.mask[:, self.context_start if self.cache is None else 0 : n]
        was_training = model.training
        if was_training:
            model.eval()
        for attn in self.attns:  # each layer appends its newest row, beside its fast attention path
            attn.row_sink = rows
        try:
            with torch.no_grad():
                h = model.trunk(feed, self.cache, mask)  # (B, T, C)
                logits = model.hook_logits(model.lm_head(h[:, -1:]))  # (B, 1, V)
        finally:  # like hooks, a sink is state on the model: never leave one behind
            for attn in self.attns:
                attn.row_sink = None
            if was_training:
                model.train()
        if rows is not None:
            self.pending.append(torch.stack(rows, dim=1))  # (B, L, nh, Tk)
        return logits[:, -1].float()

    def take_rows(self, row: int | None = None) -> list[torch.Tensor]:
        """The newest query's attention rows, (B, L, nh, Tk), of every step since the last call (recording only),
        in order; the eager one-token steps' rows come out of one product per run of consecutive steps.
        `row`: only that sequence's rows, (L, nh, Tk) each."""
        out, run = [], []
        for item in [*self.pending, None]:  # None: the end, which flushes the last run
            if isinstance(item, NewestQueries) and (not run or item.keys is run[0].keys):
                run.append(item)
                continue
            if run:
                out += NewestQueries.rows(run, row)
            run = [item] if isinstance(item, NewestQueries) else []
            if isinstance(item, torch.Tensor):
                out.append(item if row is None else item[row])
        self.pending = []
        return out

    def reorder(self, index: torch.Tensor) -> None:
        if any(isinstance(item, NewestQueries) for item in self.pending):  # their keys are about to move
            self.pending = self.take_rows()
        if self.cache is not None:
            self.cache.reorder(index)
