"""The peak-memory section: the plan's training steps, forwards with every attention map and generations, gptviz
against its transformers peer, each side probed on its own (a fresh process per probe on CPU).

Full mode only, or with --memory. Measuring one probe is memory.py's job; this module turns two probes into a row.
"""

from __future__ import annotations

from .harness import Comparison, load_average, make_comparison
from .memory import run_memory_probe
from .rows import Rows


class PeakMemory(Rows):
    """Bench's peak-memory section (suite.Bench mixes it in)."""

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
