"""The GPU path: run on a machine with CUDA (`pytest tests/test_cuda.py`); skipped elsewhere, never in CI's way.

GPTVIZ_TEST_DEVICE=cpu runs the same checks on the CPU, which is how their logic is checked on machines
without a GPU. Each test compares the device's result with a reference: the real transformers GPT-2 on the
same device, or the same model on the CPU.
"""

import os

import pytest
import torch
from conftest import save_random_hf_gpt2

from gptviz import GPT, GPTConfig, capture, checkpoint
from gptviz.sampling import generate
from gptviz.tokenizers import get_tokenizer

DEVICE = os.environ.get("GPTVIZ_TEST_DEVICE", "cuda")
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    pytest.skip("no CUDA device here (GPTVIZ_TEST_DEVICE=cpu runs these checks on the CPU)", allow_module_level=True)

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def exact_matmuls():
    """TF32 would put ~1e-3 errors into fp32 parity checks; the Trainer turns it on, so restore it after."""
    if not DEVICE.startswith("cuda"):
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def small_model(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=101, block_size=64, n_layer=3, n_head=4, n_embd=64)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def ids(B=2, T=48, V=101, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_logits_match_transformers_on_device(tmp_path):
    save_random_hf_gpt2(tmp_path, vocab_size=211, n_positions=64, n_embd=64, n_layer=3, n_head=4)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").to(DEVICE).eval()
    ours = GPT.from_pretrained(tmp_path).to(DEVICE)
    x = ids(V=211).to(DEVICE)
    with torch.no_grad():
        diff = (hf(x).logits - ours(x)).abs().max().item()
    assert diff <= 1e-4, diff


def test_fast_attention_path_matches_recorded_path():
    """SDPA (flash / memory-efficient kernels on GPU) and the explicit path that hooks record agree."""
    model = small_model().to(DEVICE)
    x = ids().to(DEVICE)
    with torch.no_grad():
        fast = model(x)
        with capture(model, "blocks.*.attn.hook_pattern") as cap:
            slow = model(x)
    assert (fast - slow).abs().max().item() < 1e-4
    pattern = cap["blocks.2.attn.hook_pattern"]
    assert pattern.device.type == torch.device(DEVICE).type and pattern.shape == (2, 4, 48, 48)
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 4, 48, device=pattern.device), atol=1e-5)


def test_bf16_autocast_forward_is_close_to_fp32():
    if DEVICE.startswith("cuda") and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = small_model().to(DEVICE)
    x = ids().to(DEVICE)
    with torch.no_grad():
        ref = model(x).float()
        with torch.autocast(device_type=torch.device(DEVICE).type, dtype=torch.bfloat16):
            low = model(x).float()
    rel = ((low - ref).norm() / ref.norm()).item()
    assert rel < 2e-2, rel


def test_kv_cache_decode_matches_full_forward_on_device():
    model = small_model().to(DEVICE)
    x = ids(B=1, T=20).to(DEVICE)
    with torch.no_grad():
        full = model(x)
        cache = model.new_kv_cache(1, 20)
        steps = [model(x[:, :12], kv_cache=cache)[:, -1]]
        for t in range(12, 20):
            steps.append(model(x[:, t : t + 1], kv_cache=cache)[:, -1])
    assert (torch.stack(steps[:-1], 1) - full[:, 11:19]).abs().max().item() < 1e-4


def test_greedy_generation_on_device_matches_cpu():
    cpu = small_model()
    dev = small_model().to(DEVICE)
    prompt = ids(B=1, T=10)
    a = generate(cpu, prompt, max_new_tokens=30)
    b = generate(dev, prompt.to(DEVICE), max_new_tokens=30).cpu()
    assert torch.equal(a, b)


def test_seeded_sampling_on_device_is_reproducible():
    dev = small_model().to(DEVICE)
    prompt = ids(B=1, T=10).to(DEVICE)
    kw = dict(max_new_tokens=25, do_sample=True, temperature=0.9, top_k=20, top_p=0.9, seed=7)
    assert torch.equal(generate(dev, prompt, **kw), generate(dev, prompt, **kw))


def test_bad_token_id_is_a_clear_error_not_a_device_assert():
    model = small_model().to(DEVICE)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, 2, 500]], device=DEVICE))
    model(torch.tensor([[1, 2, 3]], device=DEVICE))  # the device is still usable afterwards


def test_trainer_on_device_learns_and_checkpoint_loads_on_cpu(tmp_path):
    from gptviz.data import TokenDataset
    from gptviz.train import TrainConfig, Trainer

    text = "to be, or not to be, that is the question. " * 200
    tok = get_tokenizer("char", text=text)
    data = TokenDataset(torch.tensor(tok.encode(text)).numpy(), tok.vocab_size)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))
    cfg = TrainConfig(
        batch_size=16,
        max_steps=120,
        lr=3e-3,
        warmup_steps=10,
        eval_interval=60,
        eval_batches=2,
        snapshot_interval=60,
        device=DEVICE,
        seed=0,
    )
    trainer = Trainer(model, tok, data, data, cfg)
    stats = trainer.train_steps(120)
    assert trainer.device.type == torch.device(DEVICE).type
    if DEVICE.startswith("cuda"):
        assert trainer.amp_dtype in (torch.bfloat16, torch.float16)
    assert stats[-1].loss < stats[0].loss - 1.0, (stats[0].loss, stats[-1].loss)
    path = trainer.save_checkpoint(tmp_path / "ckpt")
    loaded, loaded_tok = checkpoint.load(path, device="cpu")
    x = torch.tensor([tok.encode("to be, or not")])
    if DEVICE.startswith("cuda"):  # the Trainer turned TF32 on for speed; compare in exact fp32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        on_cpu = loaded(x)
        on_dev = trainer.raw_model.eval()(x.to(trainer.device)).float().cpu()
    assert next(loaded.parameters()).device.type == "cpu"
    assert loaded_tok.decode(x[0].tolist()) == "to be, or not"
    assert (on_cpu - on_dev).abs().max().item() < 1e-3
