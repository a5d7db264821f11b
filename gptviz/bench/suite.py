"""The benchmark run: `Bench` runs the sections (training step, forwards, generation, model families, compiled
decode, peak memory, CUDA extras, the real model SmolLM2-135M), each adding rows to the report, and `run` puts a
mode's sections together into the report dict. `SECTIONS` names them in running order; `only` matches those names.

A failure is never the end of the report: a row whose measurement fails (a peer that raises, a probe that
reads 0) becomes a skipped row with its reason, a section that raises is skipped from there with its reason,
and with `out` the report so far is written after every row and section, so a run stopped late keeps its rows.
Here live the three sections against GPT2LMHeadModel (and TransformerLens); the others are mixed in from
peak_memory.py, mixed_precision.py and real_model.py, or called from decoding.py. Collecting rows is rows.py's
job; how to time, what the peers are and how to write the files belong to harness.py, peers.py and report.py.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from operator import methodcaller

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..hooks import capture, run_with_cache
from ..model import GPT
from .bare import without_hooks
from .decoding import compiled_decode, families
from .harness import load_average
from .mixed_precision import MixedPrecision
from .peak_memory import PeakMemory
from .peers import (
    TLMissing,
    build_models,
    build_tl,
    gptviz_generate,
    gptviz_steps,
    hf_eager_attentions,
    hf_generate,
    max_logit_gap,
    train_step,
)
from .plan import Shape, make_plan
from .real_model import RealModel
from .report import machine_info, versions, write_report

# The recording-cost row compares gptviz with itself, so it can afford many back-to-back pairs: up to this many,
# within about this many seconds (a GPT-2-sized generation on a CPU takes ~10 s, the small shape's 0.1-0.2 s).
RECORDING_PAIRS, RECORDING_SECONDS = 15, 30.0


class Bench(PeakMemory, MixedPrecision, RealModel):
    """A run's settings and rows (rows.Rows) and its sections: the three below, peak memory (`memory`), the CUDA
    extras (`cuda_extras`, `mixed_precision_steps`) and the real model (`smollm2`) from the mixed-in classes."""

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
            t0 = time.perf_counter()
            ours_ids = gen()
            gen_s = time.perf_counter() - t0  # one warm call: sizes the recording row's number of pairs
            same = torch.equal(ours_ids, hf_generate(hf, prompt, n))
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
                # many back-to-back pairs: on a shared machine the speed of the same code drifts by 30-50% within
                # seconds, and the paired median of many pairs is the row's robust figure
                repeats=recording_pairs(p.gen_repeats, gen_s),
                warmup=1,
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


# The sections in running order, by the names `only` matches (`gptviz bench --only` lists them from here).
# Methods are looked up when a section runs (methodcaller), so a test can replace one on the class.
SECTIONS: dict[str, Callable[[Bench], None]] = {
    "train": methodcaller("train_steps"),
    "forward": methodcaller("forwards"),
    "generate": methodcaller("generation"),
    "families": families,
    "decode": compiled_decode,
    "memory": methodcaller("memory"),
    "cuda": methodcaller("cuda_extras"),
    "smollm2": methodcaller("smollm2"),
}


def run(
    mode: str = "quick",
    device: str = "cpu",
    only: str | None = None,
    memory: bool | None = None,
    log: Callable[[str], None] = print,
    out: str | os.PathLike | None = None,
) -> dict:
    """Run the benchmark sections of `mode` and return the report (a JSON-ready dict).

    `only` keeps the sections whose name contains it (the names of SECTIONS; one that matches none is an
    InputError); `memory` overrides the mode's choice of peak-memory probes. The smollm2 section (a real 135M
    model: minutes) runs its rows in full mode, or in any mode when `only` names it ("smol" ... "smollm2");
    otherwise it lists them as skipped, which costs nothing. With `out`, the report so far is written to `out`
    (JSON) and its .md twin after every row and every section (with "complete": false), then once more at the
    end, so a run stopped part-way still leaves its finished rows behind. A section that raises is skipped
    from there with its reason, and the run goes on.
    """
    if only and not any(only in name for name in SECTIONS):
        raise InputError(f"no bench section is named like {only!r}; the sections are {', '.join(SECTIONS)}")
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
    for name, section in SECTIONS.items():
        if only and only not in name:
            continue
        log(f"[{name}]")
        try:
            section(bench)
        except Exception as e:  # noqa: BLE001 - the rows so far stay; the reason goes into the report
            log(traceback.format_exc().rstrip())
            bench.skip(f"{name} section", f"stopped by {type(e).__name__}: {e}")
        save_partial()
    final = report(True)
    if out is not None:
        write_report(final, out)
    return final


def recording_pairs(at_least: int, call_s: float) -> int:
    """Pairs for the recording-cost row: as many as fit RECORDING_SECONDS (two calls of ~`call_s` each, the recorded
    one a little slower), between `at_least` and RECORDING_PAIRS."""
    return max(at_least, min(RECORDING_PAIRS, int(RECORDING_SECONDS / max(2.2 * call_s, 1e-3))))
