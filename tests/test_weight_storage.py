"""Linear weights keep their (out, in) shape but store the (in, out) transpose (model.store_weights_transposed).

The layout must survive every way a model is made or loaded, change no value and no saved file, and never meet
optimizer state of the other layout (the fused AdamW kernels read memory flat: mismatched strides would update
each weight with another weight's moments, without a word).
"""

import copy

import pytest
import torch
from conftest import save_random_hf_gpt2, tiny_llama
from safetensors.torch import load_file, save_file
from torch import nn

from gptviz import GPT, GPTConfig, checkpoint
from gptviz.checkpoint import load, save
from gptviz.lora import add_lora, merge_lora, remove_lora
from gptviz.tokenizers import CharTokenizer
from gptviz.train_resume import match_state_layout


def transposed(w: torch.Tensor) -> bool:
    return w.stride() == (1, w.shape[0])


def linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def assert_stored_transposed(model: nn.Module) -> None:
    weights = linear_weights(model)
    assert len(weights) >= 5
    wrong = [name for name, w in weights.items() if not transposed(w)]
    assert not wrong, f"row-major: {wrong}"


@pytest.fixture
def tok():
    return CharTokenizer.from_text("abcdefghij klmnopqrstuvwxyz.,\n")


@pytest.fixture
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()


def test_every_way_of_making_a_model_stores_the_transpose(model, tmp_path):
    assert model.lm_head.weight is model.wte.weight  # tied: the embedding holds the head's layout
    assert not transposed(model.wpe.weight)  # position rows are only looked up: kept row-major
    for made in (
        model,
        GPT.empty(model.config),
        tiny_llama(50),
        copy.deepcopy(model),
        copy.deepcopy(model).to(torch.float16),
        GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=8, tie_embeddings=False)),
    ):
        assert_stored_transposed(made)


def test_the_layout_changes_no_value_and_no_result(model):
    x = torch.randint(0, model.config.vocab_size, (2, 12))
    row_major = copy.deepcopy(model)
    for w in linear_weights(row_major).values():
        w.data = w.data.contiguous()
    assert not transposed(row_major.blocks[0].mlp.c_fc.weight)
    for (name, a), b in zip(model.state_dict().items(), row_major.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        torch.testing.assert_close(model(x), row_major(x), rtol=0, atol=1e-5)


def test_checkpoints_write_plain_row_major_files_and_load_back_transposed(model, tok, tmp_path):
    save(tmp_path / "ck", model, tok)
    stored = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert "wte.weight" in stored and "lm_head.weight" not in stored  # the tie is stored once, as before
    assert all(t.is_contiguous() for t in stored.values())
    assert torch.equal(stored["blocks.0.mlp.c_fc.weight"], model.blocks[0].mlp.c_fc.weight)
    back, _ = load(tmp_path / "ck")
    assert_stored_transposed(back)
    assert back.lm_head.weight is back.wte.weight
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("block_bytes", [8 << 20, 200])  # one block per matrix; many, the last one short
def test_checkpoints_are_read_block_by_block_into_the_transposed_layout(model, tok, tmp_path, monkeypatch, block_bytes):
    monkeypatch.setattr(checkpoint, "READ_BLOCK_BYTES", block_bytes)
    save(tmp_path / "ck", model, tok)
    back, _ = load(tmp_path / "ck")
    assert_stored_transposed(back)
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


def test_half_precision_files_load_cast_and_transposed(model, tok, tmp_path):
    save(tmp_path / "half", model, tok, weights_dtype=torch.float16)
    back, _ = load(tmp_path / "half")
    assert_stored_transposed(back)
    w = back.blocks[1].attn.c_proj.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, model.blocks[1].attn.c_proj.weight.half().float())


def test_transformers_gpt2_loads_transposed(tmp_path):
    folder = save_random_hf_gpt2(tmp_path / "hf", vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    assert_stored_transposed(GPT.from_pretrained(folder))


def test_lora_keeps_the_layout_through_merge_and_removal(model):
    add_lora(model, rank=2, targets=("attn.c_attn", "mlp.c_fc"))
    assert transposed(model.blocks[0].attn.c_attn.weight)
    with torch.no_grad():
        model.blocks[0].attn.c_attn.lora_B.normal_()
    merge_lora(model)
    remove_lora(model, merge=False)
    assert_stored_transposed(model)


@pytest.mark.parametrize("when", ["in the state_dict before loading", "in the optimizer after loading"])
def test_loaded_optimizer_moments_take_the_parameters_strides(model, when):
    """What a checkpoint gives back is row-major; the fused kernel needs the parameters' strides. One step from
    matched moments equals the non-fused optimizer's step from the same state."""
    x = torch.randint(0, model.config.vocab_size, (2, 12))

    def step(fused: bool, fix: bool) -> list[torch.Tensor]:
        m = copy.deepcopy(model)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2, fused=fused, foreach=False if not fused else None)
        for _ in range(2):
            m(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
        state = opt.state_dict()
        for per_param in state["state"].values():
            for k, v in per_param.items():
                if torch.is_tensor(v) and v.dim() == 2:
                    per_param[k] = v.contiguous()  # as read from optimizer.safetensors
        if fix and when.startswith("in the state_dict"):
            match_state_layout(opt, state)
        opt.load_state_dict(state)
        if fix and when.startswith("in the optimizer"):
            match_state_layout(opt)
        m(x).square().mean().backward()
        opt.step()
        return [p.detach().clone() for p in m.parameters()]

    reference = step(fused=False, fix=False)
    assert len(reference) == len(list(model.parameters()))
    for a, b in zip(step(fused=True, fix=True), reference):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    mismatched = step(fused=True, fix=False)  # what torch does without the fix: proves the test can fail
    assert any(not torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(mismatched, reference))


def test_the_ways_the_readme_gives_to_save_outside_gptviz_round_trip(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "model.pt")
    from_torch = GPT(model.config)
    from_torch.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    plain = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(plain, str(tmp_path / "model.safetensors"))
    from_file = GPT(model.config)
    from_file.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=False)
    for back in (from_torch, from_file):
        assert_stored_transposed(back)  # load_state_dict copies into the model's own layout
        for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
            assert torch.equal(a, b), name
