"""Peak memory of building and running one workload (a training step, a forward with every attention map,
or a generation), for gptviz and for a transformers peer.

A workload is named by a small spec dict, e.g. dict(kind="train", impl="ours", shape="small", B=12, T=64, n=200),
so it can cross into a fresh process. On CPU `run_memory_probe` runs each probe in its own spawned process
(peak RSS only grows, and the benchmarking process already holds other models); on CUDA it runs in-process
and reads the allocator's peak. Turning probes into rows of the report is peak_memory.py's and real_model.py's job.

SmolLM2 probes (kind "smollm2-load" or "smollm2-generate", see `smollm2_probe`) load the real model with
gptviz.load instead of building a random one, and report the peak against its fp32 weight bytes.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..hooks import capture
from ..model import GPT
from .peers import gptviz_generate, hf_config, hf_eager_attentions, hf_generate, train_step
from .plan import SHAPES

PROBE_TIMEOUT_S = 900.0  # the biggest probe (GPT-2 small generation) takes a few minutes on 2 cores


def memory_workload(spec: dict, device: str) -> Callable[[], None]:
    """Build the model named by `spec` (random init) and return a call that runs its workload 3 times."""
    from transformers import GPT2LMHeadModel

    from ..hf import config_from_hf

    shape, B, T, n = SHAPES[spec["shape"]], spec["B"], spec["T"], spec["n"]
    torch.manual_seed(0)
    hf_attn = "eager" if spec["impl"] == "eager" else "sdpa"
    if spec["impl"] == "ours":
        model = GPT(config_from_hf(hf_config(shape))).to(device)
    else:
        model = GPT2LMHeadModel(hf_config(shape, hf_attn)).to(device)
    ours = spec["impl"] == "ours"
    d = torch.randint(0, shape.vocab_size, (B, T + 1), device=device)
    x, y = d[:, :-1], d[:, 1:]
    if spec["kind"] == "train":
        V = shape.vocab_size
        loss = (
            model.loss
            if ours
            else (lambda x, y: F.cross_entropy(model(x, use_cache=False).logits.view(-1, V), y.reshape(-1)))
        )
        step = train_step(model.train(), loss, x, y, device)
    elif spec["kind"] == "attention":
        model.eval()

        def step():
            with torch.no_grad():
                if ours:
                    with capture(model, "blocks.*.attn.hook_pattern"):
                        model(x)
                else:
                    hf_eager_attentions(model, x)
    else:
        model.eval()
        step = gptviz_generate(model, x, n)[0] if ours else (lambda: hf_generate(model, x, n))
    return lambda: [step() for _ in range(3)]


def peak_rss_bytes() -> int:
    """This process's own peak resident set size.

    On Linux, VmHWM from /proc/self/status, not getrusage: ru_maxrss keeps the peak of the process that
    started this one (the kernel folds the old memory's high-water mark in at exec), so a probe started by a
    big bench process would read the parent's peak before and after, and report a growth of 0 MB.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    import resource  # Unix only; imported here so the module still imports on Windows

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def rss_bytes() -> int | None:
    """This process's resident set size now (Linux /proc only; None elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def smollm2_probe(spec: dict, device: str = "cpu") -> dict:
    """Memory of SmolLM2-135M loaded with gptviz.load, in MB, beside its fp32 weight MB.

    kind "smollm2-load": the peak while loading (file read + copy into the model). kind "smollm2-generate": the
    peak while the loaded model generates `n` tokens greedily with the KV cache (the peak is reset after the load,
    so the load's transient is left out): the memory of a loaded model at work. Both are counted from the
    process's memory before the load, and `resident_mb` is what stays after the load.

    CPU: first the same code paths run once on a tiny Llama-shaped GPT (rotary, RMSNorm, SwiGLU, GQA, KV cache,
    generate) and the libraries the load uses are imported, so lazy imports and thread pools are in the
    baseline; then the peak RSS is reset to the current RSS (Linux); where that is impossible, the peak so far
    is the baseline and the generate kind includes the load. The cached checkpoint must exist (the bench's
    SmolLM2 section loads the model first): a probe that had to convert the GGUF file would measure
    transformers' conversion instead, so it refuses.
    """
    from ..config import GPTConfig
    from ..pretrained import cache_dir, load
    from ..sampling import generate
    from .peers import SMOLLM2

    if not (cache_dir() / SMOLLM2 / "source.json").is_file():
        raise RuntimeError(
            f"no cached gptviz checkpoint of {SMOLLM2} in {cache_dir()}: load it once first "
            "(gptviz.load), or this probe would measure the GGUF conversion"
        )
    n = int(spec.get("n", 0)) if spec["kind"] == "smollm2-generate" else 0
    prompt = torch.tensor([spec.get("prompt") or [1, 2, 3, 4]], device=device)
    cuda = device.startswith("cuda")
    import safetensors.torch  # noqa: F401 - what gptviz.load reads the weights with
    import tokenizers  # noqa: F401 - SmolLM2's tokenizer

    tiny = GPT(
        GPTConfig(
            vocab_size=64,
            block_size=32,
            n_layer=1,
            n_head=4,
            n_kv_head=2,
            n_embd=32,
            bias=False,
            pos_encoding="rotary",
            norm="rmsnorm",
            activation="silu",
            mlp_gated=True,
            n_inner=48,
        )
    )
    generate(tiny.to(device).eval(), torch.tensor([[1, 2, 3]], device=device), 2)
    del tiny
    gc.collect()

    def start() -> tuple[int, bool]:  # (baseline bytes, whether the peak was reset to now)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated(), True
        reset, now = reset_peak_rss(), rss_bytes()
        return (now, True) if reset and now is not None else (peak_rss_bytes(), False)

    def peak() -> int:
        if cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return peak_rss_bytes()

    def now() -> int | None:
        return torch.cuda.memory_allocated() if cuda else rss_bytes()

    if cuda:
        torch.cuda.empty_cache()
    base, reset = start()
    model, _ = load(SMOLLM2, device=device)
    peak_load = peak() - base
    after_load = now()
    resident = (after_load - base) if after_load is not None else float("nan")
    what = (
        ("cuda max_memory_allocated" if cuda else "subprocess peak RSS")
        + " - "
        + ("allocated" if cuda else "RSS" if reset else "peak RSS")
        + " before the load"
    )
    if n:
        if reset:
            start()  # the peak from here on: the generation's, on top of the loaded model
        with torch.no_grad():
            out = generate(model, prompt, n)
        if out.shape[1] != prompt.shape[1] + n:
            raise RuntimeError(f"generated {out.shape[1] - prompt.shape[1]} tokens, not {n}")
        measured = peak() - base
        what = (
            (
                f"peak while generating {n} tokens (reset after the load) - "
                if reset
                else f"peak of load + generating {n} tokens (could not reset the peak after the load) - "
            )
            + ("allocated" if cuda else "RSS")
            + " before the load"
            + ("" if cuda else ", in a fresh process")
        )
    else:
        measured = peak_load
    fp32 = sum(p.numel() * 4 for p in model.parameters())  # a tied head counts once
    return {
        "peak_mb": measured / 2**20,
        "load_peak_mb": peak_load / 2**20,
        "resident_mb": resident / 2**20,
        "fp32_weights_mb": fp32 / 2**20,
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype),
        "how": what,
        "n": n,
    }


def memory_probe(spec: dict, device: str = "cpu") -> float | dict:
    """Peak MB of building and running one workload (CPU: meaningful only in a fresh process).

    SmolLM2 kinds return `smollm2_probe`'s dict instead.
    """
    if spec["kind"].startswith("smollm2"):
        return smollm2_probe(spec, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run = memory_workload(spec, device)
        run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del run
        torch.cuda.empty_cache()
        return peak / 2**20
    # Lazy imports, thread pools and oneDNN/allocator set-up would otherwise land in whichever side runs first:
    # run every implementation once on the tiny shape, so the baseline already holds them.
    for impl in ("ours", "eager") if spec["kind"] == "attention" else ("ours", "hf", "eager"):
        memory_workload({**spec, "impl": impl, "shape": "tiny", "B": 1, "T": 4, "n": 2}, device)()
    gc.collect()
    base = peak_rss_bytes()
    memory_workload(spec, device)()
    return (peak_rss_bytes() - base) / 2**20


def _probe_in_child(conn, spec: dict, device: str, threads: int) -> None:
    """The spawned process's body: one probe, its result or its traceback sent back through `conn`."""
    torch.set_num_threads(threads)
    try:
        result = (True, memory_probe(spec, device))
    except Exception:
        result = (False, traceback.format_exc()[-500:])
    conn.send(result)
    conn.close()


def run_memory_probe(spec: dict, device: str, timeout: float = PROBE_TIMEOUT_S) -> float | dict:
    """Peak MB of one workload, measured in a fresh process on CPU (in this one on CUDA); a dict for SmolLM2.

    The process is spawned, so like any multiprocessing spawn it imports the script that started the bench:
    a script calling `gptviz.bench.run` needs `if __name__ == "__main__":` (notebooks and `gptviz bench` do not).
    """
    if device.startswith("cuda"):
        return memory_probe(spec, device)
    # spawn, not fork: a forked child would start with this process's heap (the models it already built)
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_probe_in_child,
        args=(send, spec, device, torch.get_num_threads()),
        name="gptviz-memory-probe",
        daemon=True,
    )
    proc.start()
    send.close()  # the child holds its own copy; closing ours makes a dead child read as EOF, not a hang
    try:
        if not receive.poll(timeout):
            raise RuntimeError(
                f"memory probe {spec} gave no result in {timeout:.0f} s; run it alone with "
                "gptviz.bench.memory_probe(spec) to see where it stalls"
            )
        ok, value = receive.recv()
    except EOFError:
        proc.join(5)
        raise RuntimeError(
            f"memory probe {spec} died without a result (exit code {proc.exitcode}): -9 is "
            "usually the out-of-memory killer (try a smaller shape or free some memory); an error "
            "about bootstrapping above means the calling script lacks `if __name__ == "
            '"__main__":`'
        ) from None
    finally:
        receive.close()
        proc.join(5)
        if proc.is_alive():  # a timed-out probe: it must not keep a core busy under the next measurement
            proc.kill()
            proc.join()
    if not ok:
        raise RuntimeError(f"memory probe {spec} failed: {value.strip()}")
    return value if isinstance(value, dict) else float(value)
