"""Shared test fixtures: tiny models on CPU, deterministic threads."""

import pytest
import torch

# Tiny models are faster on one thread, and the suite shares 2 cores with browser and kernel processes.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one thread and leaves it so, whatever it (or a Trainer it builds) set."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    from gptviz import GPTConfig

    return GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture
def tiny_model(tiny_config):
    from gptviz import GPT

    torch.manual_seed(0)
    return GPT(tiny_config).eval()


def save_random_hf_gpt2(folder, vocab_size: int, n_positions: int, n_embd: int, n_layer: int, n_head: int):
    """A random-init transformers GPT-2 saved to `folder`, with biases and LayerNorms perturbed (random init
    leaves them at zero / identity, which would hide mapping mistakes). bos/eos = 0, inside small vocabularies."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


# The Llama family's parts (RMSNorm, RoPE, SwiGLU, no biases): tests add n_kv_head for grouped-query attention.
LLAMA_PARTS = dict(pos_encoding="rotary", norm="rmsnorm", mlp_gated=True, activation="silu", bias=False)


def tiny_llama(vocab_size: int, seed: int = 0):
    """A tiny Llama-style GPT in eval mode: 2 layers, 4 query heads reading 2 key/value heads (0, 1 -> 0; 2, 3 -> 1)."""
    from gptviz import GPT, GPTConfig

    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, **LLAMA_PARTS)
    return GPT(config).eval()
