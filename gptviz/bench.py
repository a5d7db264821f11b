"""Benchmarks side by side: gptviz against transformers' GPT2LMHeadModel, and TransformerLens when installed.

    gptviz bench --quick --out results.json   # about a minute on 2 CPU cores
    gptviz bench --out results.json           # the full table (bigger shapes, peak memory): 10-20 min on 2 cores

Writes results.json and results.md beside it, and prints the table. How it measures, so the numbers are fair:
- same function: a random `transformers.GPT2LMHeadModel` is built first and its weights are loaded into gptviz
  (`hf.state_dict_from_hf`); the logits are compared before timing and the gap is written in the notes;
- same process, same threads, warm-up, then the two sides alternate A B, B A, A B ... so a change in machine
  load hits both alike; each sample runs the call enough times to last `min_time`; we report the median and
  min/max of per-sample throughput, and `ratio` oriented so that > 1 means gptviz is better;
- load average is recorded before and after each comparison; above 0.75 x cores the report warns.
Peak memory (full mode): on CPU, each variant runs in its own subprocess that imports the same modules, runs
every implementation once on a tiny shape (lazy imports, thread pools), then builds its model and runs the
workload; we report getrusage's peak RSS minus the peak before the build: weights + optimizer state +
activations (torch's allocations are invisible to tracemalloc). On CUDA the same build + workload runs in-process
and we report torch.cuda.max_memory_allocated minus what was allocated before. On CUDA the report adds bf16
autocast and torch.compile training steps with model FLOPs utilisation (MFU) at the GPT-2-small shape.
TransformerLens (`transformer-lens<4`, which still has HookedTransformer) is compared when importable.

This module asserts nothing about speed (tests check the report's shape only) and downloads nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .hooks import capture, run_with_cache
from .model import GPT, causal_mask

# ---- units and the orientation of ratios -----------------------------------------------------------------
HIGHER_IS_BETTER = {"tokens/s": True, "ms": False, "MB": False}


def oriented_ratio(ours: float, peer: float, unit: str) -> float:
    """ours/peer for throughputs, peer/ours for times and memory: > 1 always means gptviz is better."""
    if unit not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown unit {unit!r}; known: {sorted(HIGHER_IS_BETTER)}")
    return ours / peer if HIGHER_IS_BETTER[unit] else peer / ours


@dataclass
class Comparison:
    name: str
    ours: float  # median
    peer: float  # median
    unit: str
    ratio: float  # oriented: > 1 means gptviz is better
    ours_min: float
    ours_max: float
    peer_min: float
    peer_max: float
    repeats: int
    notes: str = ""
    ours_name: str = "gptviz"
    peer_name: str = ""
    paired_ratio: float = 0.0  # median of the ratios of samples taken back to back (robust to drift)
    load: list[float] = field(default_factory=list)  # 1-min load average before, after


def make_comparison(name: str, ours: list[float], peer: list[float], unit: str, **kw) -> Comparison:
    pairs = [oriented_ratio(o, p, unit) for o, p in zip(ours, peer)]
    mo, mp = statistics.median(ours), statistics.median(peer)
    return Comparison(name=name, ours=mo, peer=mp, unit=unit, ratio=oriented_ratio(mo, mp, unit),
                      ours_min=min(ours), ours_max=max(ours), peer_min=min(peer), peer_max=max(peer),
                      repeats=len(ours), paired_ratio=statistics.median(pairs), **kw)


# ---- shapes and plans ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    block_size: int

    def label(self) -> str:
        return f"{self.n_layer}L/{self.n_head}H/{self.n_embd} V{self.vocab_size}"


TINY = Shape("tiny", 2, 2, 32, 65, 64)
SMALL = Shape("small", 4, 4, 128, 65, 256)
MEDIUM = Shape("medium", 6, 6, 384, 65, 256)
GPT2_SMALL = Shape("gpt2-small", 12, 12, 768, 50257, 1024)
SHAPES = {s.name: s for s in (TINY, SMALL, MEDIUM, GPT2_SMALL)}


@dataclass
class Plan:
    mode: str
    repeats: int
    warmup: int
    min_time: float  # seconds one timed sample lasts at least
    train: list[tuple[Shape, int, int]]  # (shape, B, T)
    forward: list[tuple[Shape, int, int]]
    generate: list[Shape]
    gen_tokens: int = 200
    gen_prompt: int = 16
    gen_repeats: int = 3
    memory: bool = False
    cuda_train: tuple[Shape, int, int] = (GPT2_SMALL, 8, 1024)


def make_plan(mode: str) -> Plan:
    if mode == "smoke":  # the test's sizes: every code path, seconds not minutes
        return Plan("smoke", repeats=2, warmup=1, min_time=0.005, train=[(TINY, 2, 16)], forward=[(TINY, 2, 16)],
                    generate=[TINY], gen_tokens=8, gen_prompt=4, gen_repeats=2, cuda_train=(TINY, 2, 16))
    if mode == "quick":
        return Plan("quick", repeats=5, warmup=2, min_time=0.15, train=[(SMALL, 12, 64)],
                    forward=[(SMALL, 12, 64)], generate=[SMALL], gen_repeats=3)
    if mode == "full":
        return Plan("full", repeats=7, warmup=2, min_time=0.4, train=[(SMALL, 12, 64), (MEDIUM, 8, 256)],
                    forward=[(SMALL, 12, 64), (MEDIUM, 8, 256), (GPT2_SMALL, 1, 128)],
                    generate=[SMALL, GPT2_SMALL], gen_repeats=3, memory=True)
    raise ValueError(f"unknown mode {mode!r}; use smoke, quick or full")


# ---- models with the same weights -----------------------------------------------------------------------
def hf_config(shape: Shape, attn: str = "sdpa"):
    from transformers import GPT2Config

    # bos/eos default to 50256 in GPT2Config, past a small vocabulary: none here (no early stop either)
    return GPT2Config(vocab_size=shape.vocab_size, n_positions=shape.block_size, n_embd=shape.n_embd,
                      n_layer=shape.n_layer, n_head=shape.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, attn_implementation=attn)


def build_models(shape: Shape, device: str, seed: int = 0) -> dict[str, torch.nn.Module]:
    """gptviz GPT, HF sdpa and HF eager, all computing the same function (one random HF init, copied)."""
    from transformers import GPT2LMHeadModel

    from .hf import config_from_hf, state_dict_from_hf

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(hf_config(shape, "sdpa"))
    eager = GPT2LMHeadModel(hf_config(shape, "eager"))
    eager.load_state_dict(hf.state_dict())
    ours = GPT(config_from_hf(hf.config))
    missing, unexpected = ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=False)
    if [m for m in missing if m != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"weight mapping failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for m in (hf, eager, ours):
        m.to(device).eval()
    hf.generation_config.pad_token_id = 0
    eager.generation_config.pad_token_id = 0
    return {"ours": ours, "hf": hf, "eager": eager}


@torch.no_grad()
def max_logit_gap(ours: torch.nn.Module, peer_logits: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    return (ours(x).float() - peer_logits(x).float()).abs().max().item()


# ---- "capture off" vs a model with no hook calls at all ----------------------------------------------------
# The same module tree, each forward rebound to a copy of model.py's forward with every HookPoint call (and the
# `.fns` tests) deleted. nn.Module call overhead stays; only the hooks go. `without_hooks` checks the copy still
# computes exactly what GPT computes, so a change in model.py cannot silently make this baseline unfair.
def _bare_attention(self, x, kv_cache=None):
    B, T, C = x.size()
    hs = C // self.n_head
    q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
    q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, self.n_head, hs).transpose(1, 2)
    v = v.view(B, T, self.n_head, hs).transpose(1, 2)
    past = 0
    if kv_cache is not None:
        past = kv_cache.pos
        k, v = kv_cache.update(self.layer, k, v)  # (B, nh, Tk, hs)
    p = self.dropout if self.training else 0.0
    if past == 0:
        z = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
    elif T == 1:
        z = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    else:
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, past, q.device), dropout_p=p)
    y = self.c_proj(z.transpose(1, 2).contiguous().view(B, T, C))
    return self.resid_dropout(y) if self.training and self.dropout else y


def _bare_mlp(self, x):
    h = self.c_fc(x)
    h = F.gelu(h, approximate="tanh") if self.activation == "gelu" else F.relu(h)
    y = self.c_proj(h)
    return self.dropout(y) if self.training and self.p_dropout else y


def _bare_block(self, x, kv_cache=None):
    x = x + self.attn(self.ln_1(x), kv_cache)
    if self.mlp is not None:
        x = x + self.mlp(self.ln_2(x))
    return x


def _bare_trunk(self, idx, kv_cache=None):
    past = kv_cache.pos if kv_cache is not None else 0
    self._check_input(idx, past)
    T = idx.size(1)
    x = self.wte(idx)
    if self.config.pos_encoding == "learned":
        x = x + self.wpe(torch.arange(past, past + T, device=idx.device))
    elif self.config.pos_encoding == "sinusoidal":
        x = x + self.pe[past:past + T].to(x.dtype)
    if self.training and self.config.dropout:
        x = self.drop(x)
    for block in self.blocks:
        x = block(x, kv_cache)
    if kv_cache is not None:
        kv_cache.advance(T)
    return self.ln_f(x)


def _bare_forward(self, idx, kv_cache=None):
    return self.lm_head(self.trunk(idx, kv_cache))


def without_hooks(model: GPT) -> GPT:
    """A copy of `model` whose forward passes never touch a HookPoint (same modules, same weights)."""
    import copy

    from .model import MLP, Block, CausalSelfAttention

    bare = copy.deepcopy(model)
    for mod in bare.modules():
        for cls, fn in ((CausalSelfAttention, _bare_attention), (MLP, _bare_mlp), (Block, _bare_block)):
            if type(mod) is cls:
                mod.forward = types.MethodType(fn, mod)
    bare.trunk = types.MethodType(_bare_trunk, bare)
    bare.forward = types.MethodType(_bare_forward, bare)
    x = torch.randint(0, model.config.vocab_size, (2, 8), device=model.device)
    with torch.no_grad():
        if not torch.equal(bare(x), model(x)):
            raise RuntimeError("bench's hook-free copy of GPT.forward no longer matches gptviz/model.py; "
                               "update the _bare_* functions in gptviz/bench.py")
    return bare


# ---- timing ------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], n: int, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def measure_pair(ours: Callable[[], object], peer: Callable[[], object], work: float, repeats: int, warmup: int,
                 min_time: float, device: str) -> tuple[list[float], list[float]]:
    """Throughput samples (work units per second) of two calls, alternated A B, B A, A B, ..."""
    fns, inner = (ours, peer), []
    for fn in fns:
        for _ in range(warmup):
            fn()
        t = _timed(fn, 1, device)  # calibration, also one more warm-up
        inner.append(max(1, math.ceil(min_time / max(t, 1e-9))))
    samples: tuple[list[float], list[float]] = ([], [])
    for r in range(repeats):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            samples[i].append(work * inner[i] / _timed(fns[i], inner[i], device))
    return samples


# ---- the benchmark run --------------------------------------------------------------------------------------
class Bench:
    """Holds the settings and collects comparisons, skipped items and warnings as the sections run."""

    def __init__(self, plan: Plan, device: str, log: Callable[[str], None] = print) -> None:
        self.plan, self.device, self.log = plan, device, log
        self.comparisons: list[Comparison] = []
        self.skipped: list[dict] = []
        self.extra: dict[str, list] = {"mfu": []}
        self.load_limit = 0.75 * (os.cpu_count() or 1)
        self.hf_version = metadata.version("transformers")
        self.on_change: Callable[[], None] | None = None  # called after every row (run() saves partial reports)

    def data(self, shape: Shape, B: int, T: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, shape.vocab_size, (B, T + 1), generator=g).to(self.device)

    def compare(self, name: str, ours: Callable, peer: Callable, work: float, *, repeats: int | None = None,
                warmup: int | None = None, **kw) -> Comparison:
        p = self.plan
        load0 = os.getloadavg()[0]
        o, q = measure_pair(ours, peer, work, repeats or p.repeats, p.warmup if warmup is None else warmup,
                            p.min_time, self.device)
        c = make_comparison(name, o, q, "tokens/s", load=[round(load0, 2), round(os.getloadavg()[0], 2)], **kw)
        self.add(c)
        return c

    def add(self, c: Comparison) -> None:
        self.comparisons.append(c)
        self.log(f"  {c.name}: gptviz {c.ours:,.1f} vs {c.peer:,.1f} {c.unit} -> ratio {c.ratio:.3f}")
        if self.on_change is not None:
            self.on_change()

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"name": name, "reason": reason})
        self.log(f"  skipped {name}: {reason}")
        if self.on_change is not None:
            self.on_change()

    # -- 1. training step ------------------------------------------------------------------------------
    def train_steps(self) -> None:
        for shape, B, T in self.plan.train:
            m = build_models(shape, self.device)
            ours, hf = m["ours"], m["hf"]
            d = self.data(shape, B, T)
            x, y = d[:, :-1], d[:, 1:]
            gap = max_logit_gap(ours, lambda x: hf(x, use_cache=False).logits, x)
            V = shape.vocab_size

            def hf_loss(x, y, hf=hf):
                return F.cross_entropy(hf(x, use_cache=False).logits.view(-1, V).float(), y.reshape(-1))

            steps = {}
            for key, model, loss in (("ours", ours, ours.loss), ("hf", hf, hf_loss)):
                model.train()
                steps[key] = _train_step(model, loss, x, y, self.device)
            self.compare(f"train step {shape.label()} B{B} T{T}", steps["ours"], steps["hf"], B * T,
                         peer_name=f"transformers {self.hf_version} GPT2LMHeadModel sdpa",
                         notes=f"fwd+bwd+AdamW, fp32, same CE loss; max|dlogits| {gap:.1e}")

    # -- 2. forward: plain, capturing attention, idle hooks --------------------------------------------------
    def forwards(self) -> None:
        hf_name = f"transformers {self.hf_version} GPT2LMHeadModel"
        for shape, B, T in self.plan.forward:
            m = build_models(shape, self.device)
            ours, hf, eager = m["ours"], m["hf"], m["eager"]
            x = self.data(shape, B, T)[:, :-1]
            gap = max_logit_gap(ours, lambda x: hf(x, use_cache=False).logits, x)
            tag = f"{shape.label()} B{B} T{T}"
            ng = torch.no_grad

            def ours_plain():
                with ng():
                    return ours(x)

            def hf_plain():
                with ng():
                    return hf(x, use_cache=False).logits

            self.compare(f"forward {tag}", ours_plain, hf_plain, B * T, peer_name=f"{hf_name} sdpa",
                         notes=f"no_grad, eval; max|dlogits| {gap:.1e}")

            def ours_capture():
                with ng(), capture(ours, "blocks.*.attn.hook_pattern") as cap:
                    ours(x)
                return cap

            def hf_attn():
                with ng():
                    return hf_eager_attentions(eager, x)

            self.compare(f"forward + all attention patterns {tag}", ours_capture, hf_attn, B * T,
                         peer_name=f"{hf_name} eager output_attentions=True",
                         notes="gptviz.capture('blocks.*.attn.hook_pattern') (explicit attention path, copies)")
            self.tl_forwards(shape, hf, ours, x, tag)

            bare = without_hooks(ours)

            def bare_plain():
                with ng():
                    return bare(x)

            self.compare(f"idle hooks: forward {tag}", ours_plain, bare_plain, B * T,
                         peer_name="same GPT with every hook call removed",
                         notes="ratio 0.98 = idle hook points cost 2%")
            self.idle_hooks_decode(shape, ours, bare)

    def idle_hooks_decode(self, shape: Shape, ours: GPT, bare: GPT) -> None:
        """One-token decode step with a KV cache: the call where Python overhead, and so hooks, weigh most."""
        P = min(32, shape.block_size - 1)
        prompt = self.data(shape, 1, P)[:, :-1]
        tok = prompt[:, -1:]
        fns = []
        for model in (ours, bare):
            cache = model.new_kv_cache(1, P + 1)
            with torch.no_grad():
                model(prompt, cache)

            def step(model=model, cache=cache):
                cache.pos = P  # overwrite the same slot every call
                with torch.no_grad():
                    return model(tok, cache)
            fns.append(step)
        self.compare(f"idle hooks: decode step {shape.label()} B1 past{P}", fns[0], fns[1], 1,
                     peer_name="same GPT with every hook call removed", notes="1 token per call, KV cache")

    def tl_forwards(self, shape: Shape, hf, ours: GPT, x: torch.Tensor, tag: str) -> None:
        try:
            tl, tl_version = build_tl(hf, shape, self.device)
        except _TLMissing as e:
            self.skip(f"TransformerLens {tag}", str(e))
            return
        gap = max_logit_gap(ours, lambda x: tl(x), x)

        def ours_cache():
            return run_with_cache(ours, x, "blocks.*.attn.hook_pattern")

        def tl_cache():
            with torch.no_grad():
                return tl.run_with_cache(x, names_filter=lambda n: n.endswith("hook_pattern"))

        def ours_plain():
            with torch.no_grad():
                return ours(x)

        def tl_plain():
            with torch.no_grad():
                return tl(x)

        peer = f"TransformerLens {tl_version} HookedTransformer"
        self.compare(f"forward {tag} (vs TransformerLens)", ours_plain, tl_plain, x.numel(), peer_name=peer,
                     notes=f"max|dlogits| {gap:.1e}")
        self.compare(f"run_with_cache attention patterns {tag}", ours_cache, tl_cache, x.numel(),
                     peer_name=peer + " run_with_cache(names_filter=hook_pattern)",
                     notes="gptviz.run_with_cache(model, idx, 'blocks.*.attn.hook_pattern')")

    # -- 3. generation ----------------------------------------------------------------------------------
    def generation(self) -> None:
        p = self.plan
        n = p.gen_tokens
        hf_name = f"transformers {self.hf_version} generate"
        for shape in p.generate:
            m = build_models(shape, self.device)
            ours, hf, eager = m["ours"], m["hf"], m["eager"]
            prompt = self.data(shape, 1, p.gen_prompt)[:, :-1]
            gen, how = gptviz_generate(ours, prompt, n)
            steps, steps_how = gptviz_steps(ours, prompt, n)
            tag = f"{shape.label()} {n} tokens"
            kw = dict(repeats=p.gen_repeats, warmup=0)
            same = torch.equal(gen(), hf_generate(hf, prompt, n))
            self.compare(f"generate greedy {tag}", gen, lambda: hf_generate(hf, prompt, n), n, **kw,
                         peer_name=f"{hf_name}(use_cache=True, do_sample=False) sdpa",
                         notes=f"{how}; same tokens as HF: {same}")
            if steps is None:
                self.skip(f"generate with per-step records {tag}", steps_how)
                continue
            self.compare(f"generate + top-10 records {tag}", lambda: steps(record_attention=False),
                         lambda: hf_generate(hf, prompt, n, output_scores=True), n, **kw,
                         peer_name=f"{hf_name}(output_scores=True) sdpa",
                         notes=f"{steps_how}(k=10); HF keeps full-vocab scores")
            self.compare(f"generate + top-10 + attention rows {tag}", lambda: steps(record_attention=True),
                         lambda: hf_generate(eager, prompt, n, output_scores=True, output_attentions=True), n,
                         **kw, peer_name=f"{hf_name}(output_scores, output_attentions) eager",
                         notes=f"{steps_how}(k=10, record_attention=True)")
            self.compare(f"recording cost: records+attention vs plain gptviz {tag}",
                         lambda: steps(record_attention=True), gen, n, **kw, peer_name="gptviz generate (plain)",
                         ours_name="gptviz generate_steps(k=10, record_attention=True)",
                         notes="both gptviz: ratio 0.8 = recording costs 20% of throughput")

    # -- 4. peak memory --------------------------------------------------------------------------------------
    def memory(self) -> None:
        if not self.plan.memory:
            self.skip("peak memory", f"{self.plan.mode} mode (run the full mode or pass --memory)")
            return
        specs = []
        for shape, B, T in self.plan.train:
            specs.append((f"peak memory: train step {shape.label()} B{B} T{T}", "train", shape, B, T, "hf"))
        for shape, B, T in self.plan.forward:
            specs.append((f"peak memory: forward + attention patterns {shape.label()} B{B} T{T}", "attention",
                          shape, B, T, "eager"))
        for shape in self.plan.generate:
            specs.append((f"peak memory: generate {shape.label()} {self.plan.gen_tokens} tokens", "generate",
                          shape, 1, self.plan.gen_prompt, "hf"))
        for name, kind, shape, B, T, peer in specs:
            load0 = os.getloadavg()[0]
            try:
                o = run_memory_probe(dict(kind=kind, impl="ours", shape=shape.name, B=B, T=T,
                                          n=self.plan.gen_tokens), self.device)
                q = run_memory_probe(dict(kind=kind, impl=peer, shape=shape.name, B=B, T=T,
                                          n=self.plan.gen_tokens), self.device)
            except RuntimeError as e:
                self.skip(name, str(e))
                continue
            how = "subprocess peak RSS - RSS after imports + tiny warm-up" if self.device == "cpu" else \
                "cuda max_memory_allocated - allocated before"
            self.add(make_comparison(name, [o], [q], "MB", peer_name=f"transformers {self.hf_version} {peer}",
                                     notes=f"{how}; build + 3 calls",
                                     load=[round(load0, 2), round(os.getloadavg()[0], 2)]))

    # -- 5. CUDA only: bf16 autocast, torch.compile, MFU ----------------------------------------------------
    def cuda_extras(self) -> None:
        if not self.device.startswith("cuda"):
            self.skip("CUDA bf16 / torch.compile / MFU", "no CUDA device (run on a GPU machine)")
            return
        self.mixed_precision_steps((False, True))

    def mixed_precision_steps(self, compile_variants: tuple[bool, ...]) -> None:
        """bf16 autocast training steps, eager and/or compiled, with MFU when the GPU's peak is known.

        Runs on CPU too (bf16 autocast exists there), which is how the tests reach this code without a GPU.
        """
        shape, B, T = self.plan.cuda_train
        cuda = self.device.startswith("cuda")
        peak = peak_bf16_flops(torch.cuda.get_device_name()) if cuda else None
        for compiled in compile_variants:
            m = build_models(shape, self.device)
            ours, hf = m["ours"], m["hf"]
            d = self.data(shape, B, T)
            x, y = d[:, :-1], d[:, 1:]
            V = shape.vocab_size

            def hf_loss(x, y, hf=hf):
                return F.cross_entropy(hf(x, use_cache=False).logits.view(-1, V).float(), y.reshape(-1))

            ours_loss = ours.loss
            if compiled:
                ours_c, hf_c = torch.compile(ours), torch.compile(hf)
                ours_loss = lambda x, y: F.cross_entropy(ours_c(x).view(-1, V).float(), y.reshape(-1))  # noqa: E731
                hf_loss = lambda x, y: F.cross_entropy(hf_c(x, use_cache=False).logits.view(-1, V).float(),  # noqa: E731
                                                        y.reshape(-1))
            ours.train(), hf.train()
            s_ours = _train_step(ours, ours_loss, x, y, self.device, bf16=True)
            s_hf = _train_step(hf, hf_loss, x, y, self.device, bf16=True)
            variant = "bf16 autocast" + (" + torch.compile" if compiled else "")
            c = self.compare(f"train step {variant} {shape.label()} B{B} T{T}", s_ours, s_hf, B * T,
                             warmup=3 if compiled else None, peer_name=f"transformers {self.hf_version} sdpa")
            fpt = train_flops_per_token(ours, T)
            mfu = {"name": c.name, "flops_per_token": fpt, "peak_flops": peak,
                   "ours_mfu": fpt * c.ours / peak if peak else None,
                   "peer_mfu": fpt * c.peer / peak if peak else None}
            self.extra["mfu"].append(mfu)
            if peak:
                c.notes = f"MFU gptviz {mfu['ours_mfu']:.1%}, HF {mfu['peer_mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s"
            del m, ours, hf, s_ours, s_hf
            if cuda:
                torch.cuda.empty_cache()


def _train_step(model, loss_fn, x, y, device: str, bf16: bool = False) -> Callable[[], None]:
    fused = {"fused": True} if device.startswith("cuda") else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)
    kind = torch.device(device).type
    amp = (lambda: torch.autocast(kind, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = loss_fn(x, y)
        loss.backward()
        opt.step()
    return step


def hf_eager_attentions(eager, x: torch.Tensor):
    out = eager(x, use_cache=False, output_attentions=True)
    if len(out.attentions) != eager.config.n_layer:  # transformers 5 returns () unless the model is eager
        raise RuntimeError("HF returned no attention maps; the peer model must use attn_implementation='eager'")
    return out.attentions


def hf_generate(hf, prompt: torch.Tensor, n: int, **kw) -> torch.Tensor:
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                      do_sample=False, use_cache=True, pad_token_id=0, return_dict_in_generate=bool(kw), **kw)
    return out.sequences if kw else out


def gptviz_generate(model: GPT, prompt: torch.Tensor, n: int) -> tuple[Callable[[], torch.Tensor], str]:
    """gptviz.sampling.generate when it exists; else a plain greedy loop over GPT + KVCache (said in notes)."""
    try:
        from .sampling import generate
    except ImportError:
        generate = None
    if generate is not None:
        return (lambda: generate(model, prompt, max_new_tokens=n, do_sample=False)), "gptviz.sampling.generate"

    @torch.no_grad()
    def loop() -> torch.Tensor:
        cache = model.new_kv_cache(prompt.shape[0], prompt.shape[1] + n)
        logits, out = model(prompt, cache), [prompt]
        for _ in range(n):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            logits = model(nxt, cache)
        return torch.cat(out, dim=1)
    return loop, "bench's greedy loop over GPT + KVCache (gptviz.sampling not available)"


def gptviz_steps(model: GPT, prompt: torch.Tensor, n: int) -> tuple[Callable | None, str]:
    try:
        from .sampling import generate_steps
    except ImportError as e:
        return None, f"gptviz.sampling.generate_steps not available ({e})"

    def run(record_attention: bool) -> int:
        count = 0
        for _ in generate_steps(model, prompt, n, k=10, record_attention=record_attention):
            count += 1
        return count
    return run, "gptviz.sampling.generate_steps"


# ---- TransformerLens (optional) -------------------------------------------------------------------------------
class _TLMissing(Exception):
    pass


def build_tl(hf, shape: Shape, device: str):
    """A HookedTransformer with the HF model's weights, unprocessed (no LN folding), so it is the same function."""
    try:
        import transformer_lens
    except ImportError:
        raise _TLMissing("TransformerLens is not installed (optional: pip install 'transformer-lens<4')") from None
    version = metadata.version("transformer-lens")
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    except ImportError as e:
        raise _TLMissing(f"TransformerLens {version} has no HookedTransformer/convert_gpt2_weights ({e}); 4.x "
                         "replaced it with TransformerBridge: install 'transformer-lens<4' to compare") from None
    del transformer_lens
    cfg = HookedTransformerConfig(
        n_layers=shape.n_layer, d_model=shape.n_embd, n_heads=shape.n_head, d_head=shape.n_embd // shape.n_head,
        d_mlp=4 * shape.n_embd, d_vocab=shape.vocab_size, n_ctx=shape.block_size, act_fn="gelu_new",
        normalization_type="LN", positional_embedding_type="standard", original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False, device=device, seed=0)
    tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return tl.to(device).eval(), version


# ---- peak memory probes ---------------------------------------------------------------------------------------
def memory_workload(spec: dict, device: str) -> Callable[[], None]:
    """Build the model named by `spec` (random init) and return a call that runs its workload 3 times."""
    from transformers import GPT2LMHeadModel

    from .hf import config_from_hf

    shape, B, T, n = SHAPES[spec["shape"]], spec["B"], spec["T"], spec["n"]
    torch.manual_seed(0)
    hf_attn = "eager" if spec["impl"] == "eager" else "sdpa"
    if spec["impl"] == "ours":
        model = GPT(config_from_hf(hf_config(shape))).to(device)
    else:
        model = GPT2LMHeadModel(hf_config(shape, hf_attn)).to(device)
    ours = spec["impl"] == "ours"
    d = torch.randint(0, shape.vocab_size, (B, T + 1), device=device)
    x, y = d[:, :-1], d[:, 1:]
    if spec["kind"] == "train":
        V = shape.vocab_size
        loss = model.loss if ours else \
            (lambda x, y: F.cross_entropy(model(x, use_cache=False).logits.view(-1, V), y.reshape(-1)))
        step = _train_step(model.train(), loss, x, y, device)
    elif spec["kind"] == "attention":
        model.eval()

        def step():
            with torch.no_grad():
                if ours:
                    with capture(model, "blocks.*.attn.hook_pattern"):
                        model(x)
                else:
                    hf_eager_attentions(model, x)
    else:
        model.eval()
        step = gptviz_generate(model, x, n)[0] if ours else (lambda: hf_generate(model, x, n))
    return lambda: [step() for _ in range(3)]


def memory_probe(spec: dict, device: str = "cpu") -> float:
    """Peak MB of building and running one workload (CPU: meaningful only in a fresh process)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run = memory_workload(spec, device)
        run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del run
        torch.cuda.empty_cache()
        return peak / 2**20
    # Lazy imports, thread pools and oneDNN/allocator set-up would otherwise land in whichever side runs first:
    # run every implementation once on the tiny shape, so the baseline already holds them.
    for impl in ("ours", "eager") if spec["kind"] == "attention" else ("ours", "hf", "eager"):
        memory_workload({**spec, "impl": impl, "shape": "tiny", "B": 1, "T": 4, "n": 2}, device)()
    gc.collect()
    import resource  # Unix only; imported here so the module still imports on Windows

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    memory_workload(spec, device)()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - base) / 2**20


def run_memory_probe(spec: dict, device: str) -> float:
    if device.startswith("cuda"):
        return memory_probe(spec, device)
    cmd = [sys.executable, "-m", "gptviz", "bench", "--memory-probe", json.dumps(spec),
           "--threads", str(torch.get_num_threads())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {spec} failed: {proc.stderr.strip()[-500:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"])


# ---- FLOPs and peaks ------------------------------------------------------------------------------------------
PEAK_BF16_TFLOPS = {"H100 PCIe": 756, "H100": 989, "H200": 989, "GH200": 989, "A100": 312, "L4": 121,
                    "A10G": 70, "RTX 4090": 165}  # dense bf16, no sparsity


def peak_bf16_flops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS.items():  # most specific names first
        if key in device_name:
            return tflops * 1e12
    return None


def train_flops_per_token(model: GPT, T: int) -> float:
    """6N for the matmuls forward + backward (N without position embeddings) + 12 L C T for attention."""
    c = model.config
    return 6 * model.num_parameters(exclude_embeddings=True) + 12 * c.n_layer * c.n_embd * T


# ---- report ---------------------------------------------------------------------------------------------------
def machine_info(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "device": device,
            "platform": platform.platform(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def versions() -> dict:
    from . import __version__

    out = {"python": platform.python_version(), "torch": torch.__version__, "gptviz": __version__}
    for dist in ("transformers", "transformer-lens", "numpy"):
        try:
            out[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def markdown(report: dict) -> str:
    m, v = report["machine"], report["versions"]
    lines = [f"# gptviz bench ({report['mode']})", "",
             f"{m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, device {m['device']}"
             + (f" ({m['gpu']})" if m.get("gpu") else "") + f"; {m['date']}",
             f"python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, gptviz {v['gptviz']}, "
             f"transformer_lens {v['transformer_lens'] or 'not installed'}",
             f"load average before {report['load_before']}, after {report['load_after']}", ""]
    if not report.get("complete", True):
        lines += ["**partial**: the run was stopped (or is still running); rows below are the finished ones", ""]
    lines += [f"**warning**: {w}" for w in report["warnings"]] + ([""] if report["warnings"] else [])
    lines += ["ratio > 1 means gptviz is better (faster or smaller); paired = median of back-to-back ratios.", "",
              "| comparison | gptviz | peer | unit | ratio | paired | gptviz min-max | peer min-max | n | peer is "
              "| notes |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for c in report["comparisons"]:
        lines.append(f"| {c['name']} | {_fmt(c['ours'])} | {_fmt(c['peer'])} | {c['unit']} | {c['ratio']:.3f} | "
                     f"{c['paired_ratio']:.3f} | {_fmt(c['ours_min'])}-{_fmt(c['ours_max'])} | "
                     f"{_fmt(c['peer_min'])}-{_fmt(c['peer_max'])} | {c['repeats']} | {c['peer_name']} | "
                     f"{c['notes']} |")
    if report["skipped"]:
        lines += ["", "Skipped:"] + [f"- {s['name']}: {s['reason']}" for s in report["skipped"]]
    for e in report.get("mfu", []):
        if e["ours_mfu"] is not None:
            lines.append(f"- MFU {e['name']}: gptviz {e['ours_mfu']:.1%}, HF {e['peer_mfu']:.1%}")
    return "\n".join(lines) + "\n"


def run(mode: str = "quick", device: str = "cpu", only: str | None = None, memory: bool | None = None,
        log: Callable[[str], None] = print, save: Callable[[dict], None] | None = None) -> dict:
    """Run the benchmark sections of `mode` and return the report (a JSON-ready dict).

    `save`, when given, receives the report so far after every comparison (with "complete": false), so a run
    that is stopped part-way still leaves its finished rows behind.
    """
    plan = make_plan(mode)
    if memory is not None:
        plan.memory = memory
    bench = Bench(plan, device, log)
    load_before = [round(x, 2) for x in os.getloadavg()]
    info, vers = machine_info(device), versions()

    def report(complete: bool) -> dict:
        warnings = [f"load average {max(c.load)} during '{c.name}' is above {bench.load_limit:.1f} "
                    f"(0.75 x {os.cpu_count()} cores): other work shared the CPU; trust the paired ratios over "
                    "absolute numbers, and on a busy machine try --threads 1"
                    for c in bench.comparisons if c.load and max(c.load) > bench.load_limit]
        return {"schema": 1, "mode": mode, "complete": complete, "machine": info, "versions": vers,
                "settings": {"repeats": plan.repeats, "warmup": plan.warmup, "min_time_s": plan.min_time,
                             "gen_tokens": plan.gen_tokens, "gen_repeats": plan.gen_repeats,
                             "order": "alternating A B, B A, ..."},
                "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
                "warnings": warnings, "comparisons": [asdict(c) for c in bench.comparisons],
                "skipped": bench.skipped, **bench.extra}

    if save is not None:
        bench.on_change = lambda: save(report(False))
    sections = {"train": bench.train_steps, "forward": bench.forwards, "generate": bench.generation,
                "memory": bench.memory, "cuda": bench.cuda_extras}
    for name, section in sections.items():
        if only and only not in name:
            continue
        log(f"[{name}]")
        section()
    final = report(True)
    if save is not None:
        save(final)
    return final


def write_report(report: dict, out: Path) -> str:
    """Write out (JSON) and out.md (the table); return the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    table = markdown(report)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    return table


def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="gptviz bench", description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small shapes only, no memory probes (~1 min on 2 cores)")
    size.add_argument("--smoke", action="store_true", help="tiny shapes, 2 repeats: checks the code paths (tests)")
    ap.add_argument("--out", default="bench-results.json", help="JSON path; the markdown table goes beside it (.md)")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--only", default=None, help="run only sections whose name contains this: train, forward, "
                    "generate, memory, cuda")
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                    help="peak-memory probes (default: full mode only; a subprocess per variant on CPU)")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one probe, JSON out
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.memory_probe:
        print(json.dumps({"peak_mb": memory_probe(json.loads(args.memory_probe), device)}))
        return 0
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    out = Path(args.out)
    report = run(mode, device, args.only, args.memory, save=lambda r: write_report(r, out))
    print("\n" + markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
