"""The compiled decode step on a GPU (torch.compile, mode="reduce-overhead": CUDA graphs); skipped without CUDA.

Run by lab/bench/gpu_checks.sh. GPTVIZ_TEST_DEVICE=cpu runs the same checks on the CPU with inductor's C++
back end (slow: tens of seconds of compiling), which is how their logic is checked without a GPU.
"""

import os

import pytest
import torch

from gptviz import GPT, GPTConfig
from gptviz.decode import want_compile
from gptviz.sampling import generate
from gptviz.steps import generate_steps

DEVICE = os.environ.get("GPTVIZ_TEST_DEVICE", "cuda")
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    pytest.skip("no CUDA device here (GPTVIZ_TEST_DEVICE=cpu runs these checks on the CPU)", allow_module_level=True)

pytestmark = pytest.mark.slow


def model_on_device(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=101, block_size=64, n_layer=3, n_head=4, n_embd=64)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).to(DEVICE).eval()


@pytest.fixture(autouse=True)
def exact_matmuls():
    if not DEVICE.startswith("cuda"):
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("parts", [{}, dict(pos_encoding="rotary", norm="rmsnorm", mlp_gated=True, n_kv_head=2)])
def test_compiled_and_eager_decoding_give_the_same_tokens(parts):
    model = model_on_device(**parts)
    ids = torch.randint(0, 101, (2, 5), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    eager = generate(model, ids, 40, compile=False)
    for _ in range(2):  # the second call replays what the first compiled (and, on CUDA, captured)
        assert torch.equal(generate(model, ids, 40, compile=True), eager)
    # the window's end: the static cache holds block_size positions, then decoding slides without a cache
    long = generate(model, ids, 70, compile=False)
    assert torch.equal(generate(model, ids, 70, compile=True), long)


def test_compiled_records_match_eager_records():
    model = model_on_device()
    ids = [3, 1, 4, 1, 5]
    eager = list(generate_steps(model, ids, 30, record_attention=True, compile=False))
    compiled = list(generate_steps(model, ids, 30, record_attention=True, compile=True))
    assert [r.token_id for r in compiled] == [r.token_id for r in eager]
    for a, b in zip(compiled, eager):
        assert a.attention.shape == b.attention.shape
        torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.stages[0].probs, b.stages[0].probs, atol=1e-5, rtol=1e-4)


def test_auto_compiles_long_generations_on_cuda_only():
    assert want_compile(None, torch.device(DEVICE), 1000) is DEVICE.startswith("cuda")
