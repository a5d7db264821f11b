"""Two benchmark sections about decoding: the model families against their transformers classes (Llama with
grouped-query attention, GPT-NeoX with a parallel residual), and the compiled one-token decode step against
the eager one, with the compile time and the number of tokens after which compiling pays.

`suite.run` calls `families(bench)` and `compiled_decode(bench)`; timing and the report are the harness's and
suite's. Both families are random models of the small shape built by gptviz and given to transformers through
`hf.state_dict_to_hf`, so the two sides compute the same function (the logit gap is in the notes).
"""

from __future__ import annotations

import time

import torch

from ..config import GPTConfig
from ..model import GPT
from .peers import build_models, hf_generate, max_logit_gap
from .plan import Shape

FAMILY_PARTS = {
    # the Llama family's parts with 2 key/value heads for 4 query heads (SmolLM2's layout, scaled down)
    "llama": dict(pos_encoding="rotary", norm="rmsnorm", mlp_gated=True, activation="silu", bias=False, n_kv_head=2),
    # GPT-NeoX / Pythia: partial rotary, parallel attention + MLP, LayerNorms with biases
    "gpt_neox": dict(pos_encoding="rotary", rotary_dim=8, parallel_residual=True, activation="gelu_exact"),
}
HF_CLASSES = {"llama": "LlamaForCausalLM", "gpt_neox": "GPTNeoXForCausalLM"}


def build_family(family: str, shape: Shape, device: str, seed: int = 0) -> dict[str, torch.nn.Module]:
    """A random gptviz model of `family` at `shape` and transformers' class with the same weights (sdpa)."""
    import transformers

    from .. import hf as gh

    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=shape.vocab_size,
        block_size=shape.block_size,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        n_embd=shape.n_embd,
        **FAMILY_PARTS[family],
    )
    ours = GPT(config).eval()
    hf_config = gh.hf_config_for(config)
    hf_config._attn_implementation = "sdpa"
    peer = getattr(transformers, HF_CLASSES[family])(hf_config)
    missing, unexpected = peer.load_state_dict(gh.state_dict_to_hf(ours.state_dict(), config, family), strict=False)
    missing = [m for m in missing if not (hf_config.tie_word_embeddings and m.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise RuntimeError(f"{family} weight mapping failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if getattr(hf_config, "tie_word_embeddings", False):
        peer.tie_weights()
    peer.generation_config.pad_token_id = 0
    return {"ours": ours.to(device), "hf": peer.to(device).eval()}


def families(bench) -> None:
    """Forward and greedy generation of each family at the plan's first generation shape, vs transformers."""
    p = bench.plan
    shape, n = p.generate[0], p.gen_tokens
    B, T = p.forward[0][1], p.forward[0][2]
    for family, cls in HF_CLASSES.items():
        peer = f"transformers {bench.hf_version} {cls} sdpa"
        try:
            m = build_family(family, shape, bench.device)
        except Exception as e:  # noqa: BLE001 - an old transformers without the class: the rows say so
            for what in ("forward", "generate greedy"):
                bench.skip(f"{family} {what} {shape.label()}", f"{type(e).__name__}: {e}")
            continue
        ours, hf = m["ours"], m["hf"]
        x = bench.data(shape, B, T)[:, :-1]
        gap = max_logit_gap(ours, lambda x, hf=hf: hf(x, use_cache=False).logits, x)

        def ours_forward(ours=ours, x=x):
            with torch.no_grad():
                return ours(x)

        def hf_forward(hf=hf, x=x):
            with torch.no_grad():
                return hf(x, use_cache=False).logits

        bench.compare(
            f"{family} forward {shape.label()} B{B} T{T}",
            ours_forward,
            hf_forward,
            B * T,
            peer_name=peer,
            notes=f"same weights (hf.state_dict_to_hf); no_grad, eval; max|dlogits| {gap:.1e}",
        )
        prompt = bench.data(shape, 1, p.gen_prompt)[:, :-1]

        def ours_gen(ours=ours, prompt=prompt):
            return ours.generate(prompt, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)

        def hf_gen(hf=hf, prompt=prompt):
            return hf_generate(hf, prompt, n)

        same = torch.equal(ours_gen(), hf_gen())
        bench.compare(
            f"{family} generate greedy {shape.label()} {n} tokens",
            ours_gen,
            hf_gen,
            n,
            repeats=p.gen_repeats,
            warmup=0,
            peer_name=f"{peer} generate(use_cache=True, do_sample=False)",
            notes=f"same tokens as HF: {same}",
        )


def compiled_decode(bench) -> None:
    """Greedy generation with the compiled decode step vs the eager one at the plan's biggest generation shape; the
    notes give the compile time and after how many tokens it pays (first call / time saved per token). Runs in
    full mode and on a GPU; quick and smoke modes on a CPU skip it."""
    p = bench.plan
    cuda = bench.device.startswith("cuda")
    if not (p.compile_decode or cuda):
        bench.skip(
            "compiled decode step vs eager",
            f"{p.mode} mode on a CPU: compiling takes tens of seconds (run the full mode, or on a GPU)",
        )
        return
    from ..decode import compile_seconds
    from ..sampling import generate

    n = p.gen_tokens
    for shape in p.generate[-1:]:  # the biggest shape only: each shape compiles anew
        ours = build_models(shape, bench.device)["ours"]
        prompt = bench.data(shape, 1, p.gen_prompt)[:, :-1]
        eager = generate(ours, prompt, n, compile=False)
        t0 = time.perf_counter()
        compiled = generate(ours, prompt, n, compile=True)  # the first call compiles
        first = time.perf_counter() - t0
        key = f"GPT B1 M{shape.block_size}"  # gptviz.decode's name for this model's compiled step
        c = bench.compare(
            f"generate greedy, compiled decode step vs eager {shape.label()} {n} tokens",
            lambda ours=ours, prompt=prompt: generate(ours, prompt, n, compile=True),
            lambda ours=ours, prompt=prompt: generate(ours, prompt, n, compile=False),
            n,
            repeats=p.gen_repeats,
            warmup=0,
            ours_name="gptviz generate(compile=True)" + (" (reduce-overhead: CUDA graphs)" if cuda else ""),
            peer_name="gptviz generate(compile=False)",
        )
        if c is not None:
            saved = 1 / c.peer - 1 / c.ours  # seconds per token
            pays = f"pays after ~{first / saved:,.0f} tokens" if saved > 0 else "never pays at this shape"
            c.notes = (
                f"same tokens: {torch.equal(eager, compiled)}; first call {first:.1f} s "
                f"(compile {compile_seconds.get(key, float('nan')):.1f} s); {pays}"
            )
            if bench.on_change is not None:
                bench.on_change()
