"""Measuring and comparing two numbers fairly: units and the orientation of ratios, `Comparison` (one row of
the report), the alternating A B, B A timing loop, the load average, and FLOPs / peak FLOP/s for MFU.

What is measured (models, workloads) is peers.py's and memory.py's job; which rows run is suite.py's.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..model import GPT

# ---- units and the orientation of ratios -----------------------------------------------------------------
HIGHER_IS_BETTER = {"tokens/s": True, "ms": False, "MB": False}


class MeasurementError(ValueError):
    """A measurement that cannot make a ratio (zero, negative or not finite): its row is skipped, with this reason."""


def oriented_ratio(ours: float, peer: float, unit: str) -> float:
    """ours/peer for throughputs, peer/ours for times and memory: > 1 always means gptviz is better."""
    if unit not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown unit {unit!r}; known: {sorted(HIGHER_IS_BETTER)}")
    for side, value in (("gptviz", ours), ("peer", peer)):
        if not (math.isfinite(value) and value > 0):
            # Seen as a ZeroDivisionError that ended a full run (issue 15): a 0 is a broken probe or timer,
            # never a result, so say so instead of dividing by it.
            raise MeasurementError(
                f"{side} measured {value} {unit}; a ratio needs positive, finite numbers on "
                "both sides. A 0 means the probe saw no growth or the timer saw no time: "
                "rerun with bigger shapes or a longer min_time"
            )
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
    """A row from the two sides' samples (raises MeasurementError when a sample cannot make a ratio)."""
    pairs = [oriented_ratio(o, p, unit) for o, p in zip(ours, peer)]
    mo, mp = statistics.median(ours), statistics.median(peer)
    return Comparison(
        name=name,
        ours=mo,
        peer=mp,
        unit=unit,
        ratio=oriented_ratio(mo, mp, unit),
        ours_min=min(ours),
        ours_max=max(ours),
        peer_min=min(peer),
        peer_max=max(peer),
        repeats=len(ours),
        paired_ratio=statistics.median(pairs),
        **kw,
    )


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded for the report (Unix)."""
    return [round(x, 2) for x in os.getloadavg()]


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


def measure_pair(
    ours: Callable[[], object],
    peer: Callable[[], object],
    work: float,
    repeats: int,
    warmup: int,
    min_time: float,
    device: str,
) -> tuple[list[float], list[float]]:
    """Throughput samples (work units per second) of two calls, alternated A B, B A, A B, ..."""
    fns, inner = (ours, peer), []
    for fn in fns:
        for _ in range(warmup):
            fn()
        t = _timed(fn, 1, device)  # calibration, also one more warm-up
        inner.append(max(1, math.ceil(min_time / max(t, 1e-9))))
    samples: tuple[list[float], list[float]] = ([], [])
    for r in range(repeats):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            samples[i].append(work * inner[i] / _timed(fns[i], inner[i], device))
    return samples


# ---- FLOPs and peaks ------------------------------------------------------------------------------------------
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756,
    "H100": 989,
    "H200": 989,
    "GH200": 989,
    "A100": 312,
    "L4": 121,
    "A10G": 70,
    "RTX 4090": 165,
}  # dense bf16, no sparsity


def peak_bf16_flops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS.items():  # most specific names first
        if key in device_name:
            return tflops * 1e12
    return None


def train_flops_per_token(model: GPT, T: int) -> float:
    """6N for the matmuls forward + backward (N without position embeddings) + 12 L C T for attention."""
    c = model.config
    return 6 * model.num_parameters(exclude_embeddings=True) + 12 * c.n_layer * c.n_embd * T
