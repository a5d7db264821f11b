"""What a benchmark run covers: the model shapes (by name, so a memory probe can name one across processes)
and each mode's plan (shapes, batch sizes, repeats, how long a timed sample lasts, whether the real-model rows run).

Running a plan is suite.py's job; building the models of a shape is peers.py's.
"""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class SmolPlan:
    """The SmolLM2-135M-Instruct rows: a real 135M Llama, so few and long samples (~10-20 tokens/s on 2 cores)."""

    forward_T: int = 128  # forward B1 T128
    gen_tokens: int = 100  # new tokens per generation, exactly (no stop at eos on either side)
    gen_repeats: int = 3  # timed generations per side (plus one calibration run each)
    forward_repeats: int = 5
    k: int = 10  # step records: top-k candidates per step
    # the prompt: the course's question in the model's chat template
    question: str = "What is the capital of France?"


SMOL = SmolPlan()


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
    # B16: nearer what an 80-141 GB card holds (B8, the first runs: 23.8% MFU with bf16 + compile on an H100)
    cuda_train: tuple[Shape, int, int] = (GPT2_SMALL, 16, 1024)
    compile_decode: bool = False  # the compiled decode step's row (tens of seconds of compiling on a CPU)
    smollm2: bool = False  # the real-model rows (SmolLM2-135M): full mode, or asked for with --only smollm2
    smollm2_memory: bool = True  # ... with its peak-memory probe (off with --no-memory)
    smol: SmolPlan = SMOL


def make_plan(mode: str) -> Plan:
    # smoke and quick skip the SmolLM2 rows (minutes of a 135M model), unless asked for: see suite.run's `only`
    if mode == "smoke":  # the test's sizes: every code path, seconds not minutes
        return Plan(
            "smoke",
            repeats=2,
            warmup=1,
            min_time=0.005,
            train=[(TINY, 2, 16)],
            forward=[(TINY, 2, 16)],
            generate=[TINY],
            gen_tokens=8,
            gen_prompt=4,
            gen_repeats=2,
            cuda_train=(TINY, 2, 16),
        )
    if mode == "quick":
        return Plan(
            "quick",
            repeats=5,
            warmup=2,
            min_time=0.15,
            train=[(SMALL, 12, 64)],
            forward=[(SMALL, 12, 64)],
            generate=[SMALL],
            gen_repeats=7,  # a 200-token generation takes 0.1-0.6 s here; 3 pairs left the median to chance
        )
    if mode == "full":
        return Plan(
            "full",
            repeats=7,
            warmup=2,
            min_time=0.4,
            train=[(SMALL, 12, 64), (MEDIUM, 8, 256)],
            forward=[(SMALL, 12, 64), (MEDIUM, 8, 256), (GPT2_SMALL, 1, 128)],
            generate=[SMALL, GPT2_SMALL],
            gen_repeats=3,
            memory=True,
            compile_decode=True,
            smollm2=True,
        )
    raise ValueError(f"unknown mode {mode!r}; use smoke, quick or full")


def smollm2_rows(plan: Plan) -> dict[str, str]:
    """The SmolLM2 section's rows, by key: named here so a skipped section still lists each row it would add."""
    s, tag = plan.smol, "SmolLM2-135M"
    return {
        "forward": f"{tag} forward B1 T{s.forward_T}",
        "generate": f"{tag} generate greedy {s.gen_tokens} tokens",
        "recording": f"{tag} recording cost: top-{s.k} records + attention rows vs plain gptviz, {s.gen_tokens} tokens",
        "memory load": f"{tag} peak memory: load vs fp32 weights",
        "memory generate": f"{tag} peak memory: loaded, generating {s.gen_tokens} tokens vs fp32 weights",
    }
