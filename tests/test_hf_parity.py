"""Parity with the real transformers GPT-2 (random init, saved to a folder, no network)."""

import pytest
import torch
from conftest import save_random_hf_gpt2

from gptviz import GPT, GPTConfig, capture

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_random_hf_gpt2(
        tmp_path_factory.mktemp("hf-gpt2"), vocab_size=211, n_positions=48, n_embd=64, n_layer=3, n_head=4
    )


def load_hf(folder):
    return transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()


def ids():
    return torch.randint(0, 211, (3, 40), generator=torch.Generator().manual_seed(1))


def test_logits_match_transformers(hf_folder):
    hf, ours = load_hf(hf_folder), GPT.from_pretrained(hf_folder)
    with torch.no_grad():
        diff = (hf(ids()).logits - ours(ids())).abs().max().item()
    assert diff <= 1e-4, diff


def test_attention_patterns_match_transformers_eager(hf_folder):
    hf, ours = load_hf(hf_folder), GPT.from_pretrained(hf_folder)
    with torch.no_grad():
        hf_attn = hf(ids(), output_attentions=True).attentions
        with capture(ours, "blocks.*.attn.hook_pattern") as cap:
            ours(ids())
    assert len(hf_attn) == 3
    for layer, a in enumerate(hf_attn):
        assert (a - cap[f"blocks.{layer}.attn.hook_pattern"]).abs().max() <= 1e-5


def test_round_trip_gptviz_hf_gptviz_is_exact(hf_folder, tmp_path):
    ours = GPT.from_pretrained(hf_folder)
    ours.save_pretrained(tmp_path / "out")
    hf = load_hf(tmp_path / "out")  # transformers itself reads what we wrote
    back = GPT.from_pretrained(tmp_path / "out")
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert (hf(ids()).logits - ours(ids())).abs().max() <= 1e-4


def test_own_model_exports_to_transformers(tmp_path):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=16, activation="relu")).eval()
    ours.save_pretrained(tmp_path)
    hf = load_hf(tmp_path)
    assert hf.config.activation_function == "relu" and hf.config.eos_token_id is None
    x = torch.randint(0, 65, (1, 16))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)).abs().max() <= 1e-4


def test_models_transformers_cannot_hold_are_refused(tmp_path):
    m = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, pos_encoding="sinusoidal"))
    with pytest.raises(ValueError, match="learned positions"):
        m.save_pretrained(tmp_path)
    toy = GPT(
        GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, layer_norm=False, tie_embeddings=False)
    )
    with pytest.raises(ValueError, match="layer_norm=False.*tie_embeddings=False"):
        toy.save_pretrained(tmp_path)


def test_unsupported_variant_and_missing_folder_are_clear(hf_folder, tmp_path):
    cfg = transformers.GPT2Config(
        vocab_size=20,
        n_positions=8,
        n_embd=8,
        n_layer=1,
        n_head=2,
        activation_function="gelu",
        bos_token_id=0,
        eos_token_id=0,
    )
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "erf")
    with pytest.raises(ValueError, match="activation_function='gelu'"):
        GPT.from_pretrained(tmp_path / "erf")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        GPT.from_pretrained(tmp_path / "nope")
