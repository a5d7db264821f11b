"""What every benchmark section writes through: `Rows` holds a run's settings and collects its rows (timed
comparisons, skipped items with their reasons, extra tables such as MFU) and tells `run` after each one, so the
report on disk can follow the run row by row.

A measurement that raises (a peer that fails, a probe that reads 0) becomes a skipped row with its reason here,
in `record`, never the end of the report. Which rows a section adds is suite.py's job and that of the modules
suite.Bench mixes in (peak_memory.py, mixed_precision.py, real_model.py); how to time is harness.py's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import metadata

import torch

from .harness import Comparison, load_average, make_comparison, measure_pair
from .plan import Plan, Shape


class Rows:
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
        values = f"gptviz {c.ours:,.1f} vs {c.peer:,.1f} {c.unit}"
        self.log(f"  {c.name}: {values} -> ratio {c.ratio:.3f} (paired {c.paired_ratio:.3f})")
        if self.on_change is not None:
            self.on_change()

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"name": name, "reason": reason})
        self.log(f"  skipped {name}: {reason}")
        if self.on_change is not None:
            self.on_change()
