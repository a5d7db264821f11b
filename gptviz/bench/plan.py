"""What a benchmark run covers: the model shapes (by name, so a memory probe can name one across processes)
and each mode's plan (shapes, batch sizes, repeats, how long a timed sample lasts).

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
