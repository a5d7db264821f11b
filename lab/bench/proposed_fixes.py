"""A/B checks of speed fixes proposed for gptviz/hooks.py and gptviz/model.py, measured without editing them.

    python lab/bench/proposed_fixes.py [--threads 1] [--repeats 10]

Each fix is applied to a copy of the model (or by patching a function for the duration of one call) and timed
against the current code with gptviz.bench's alternating harness. Ratios > 1 mean the fix is faster. Once a fix
lands, its row should read ~1.0 (the "current" side then already has it).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys

import torch
from torch import nn

import gptviz.hooks  # noqa: F401 - the module, not the `gptviz.hooks` function that shadows it
import gptviz.model
from gptviz import capture
from gptviz.bench import SMALL, build_models, measure_pair, without_hooks
from gptviz.hooks import HookPoint

H = sys.modules["gptviz.hooks"]


def memoized_hook_points():
    """Fix 1 (hooks.py): walk named_modules once per model, not 5 times per capture() call."""
    original, memo = H.hook_points, {}

    def cached(model):
        if id(model) not in memo:
            memo[id(model)] = original(model)
        return memo[id(model)]
    return original, cached


def mirror_children(model: nn.Module, only_hooks: bool) -> nn.Module:
    """Fix 2 (model.py): put child modules in the instance __dict__ too, so `self.hook_q` skips the slow
    nn.Module.__getattr__ fallback (assigning a new module later goes through __setattr__, which drops it)."""
    c = copy.deepcopy(model)
    for mod in c.modules():
        for name, child in mod._modules.items():
            if child is not None and (not only_hooks or isinstance(child, HookPoint)):
                mod.__dict__[name] = child
    return c


def skip_dropout(model: nn.Module) -> nn.Module:
    """Fix 3 (model.py): with dropout=0 (or in eval) never call nn.Dropout (one Module call + F.dropout each)."""
    c = copy.deepcopy(model)
    for mod in c.modules():
        for name, child in list(mod._modules.items()):
            if isinstance(child, nn.Dropout):
                del mod._modules[name]
                mod.__dict__[name] = lambda x: x
    return c


def decode_step(model, P=32):
    prompt = torch.randint(0, SMALL.vocab_size, (1, P), generator=torch.Generator().manual_seed(0))
    cache = model.new_kv_cache(1, P + 1)
    with torch.no_grad():
        model(prompt, cache)

    def step():
        cache.pos = P
        with torch.no_grad():
            return model(prompt[:, -1:], cache)
    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--min-time", type=float, default=0.2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ours = build_models(SMALL, "cpu")["ours"]
    original, cached = memoized_hook_points()

    def capture_call(x, fast):
        def call():
            if fast:
                H.hook_points = gptviz.model.hook_points = cached
            try:
                with torch.no_grad(), capture(ours, "blocks.*.attn.hook_pattern"):
                    ours(x)
            finally:
                H.hook_points = gptviz.model.hook_points = original
        return call

    x1 = torch.randint(0, SMALL.vocab_size, (1, 64))
    x12 = torch.randint(0, SMALL.vocab_size, (12, 64))
    rows = [
        ("1 memoized hook_points: capture patterns B1 T64", capture_call(x1, True), capture_call(x1, False), 64),
        ("1 memoized hook_points: capture patterns B12 T64", capture_call(x12, True), capture_call(x12, False), 768),
        ("2 hook points in __dict__: decode step", decode_step(mirror_children(ours, True)), decode_step(ours), 1),
        ("2 every child in __dict__: decode step", decode_step(mirror_children(ours, False)), decode_step(ours), 1),
        ("3 no-op dropout skipped: decode step", decode_step(skip_dropout(ours)), decode_step(ours), 1),
        ("2+3 together: decode step", decode_step(skip_dropout(mirror_children(ours, False))), decode_step(ours), 1),
        ("(reference) current vs no hook calls: decode step", decode_step(ours), decode_step(without_hooks(ours)), 1),
    ]
    print(f"{SMALL.label()}, torch threads {torch.get_num_threads()}; ratio = fixed / current throughput")
    for name, fixed, current, work in rows:
        a, b = measure_pair(fixed, current, work, args.repeats, 3, args.min_time, "cpu")
        paired = statistics.median(x / y for x, y in zip(a, b))
        print(f"{name:<55} ratio {statistics.median(a) / statistics.median(b):.3f}  paired {paired:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
