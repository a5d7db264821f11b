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
    with pytest.raises(ValueError, match="layer_norm=False"):
        toy.save_pretrained(tmp_path)


def test_unsupported_variant_and_missing_folder_are_clear(hf_folder, tmp_path):
    cfg = transformers.GPT2Config(
        vocab_size=20,
        n_positions=8,
        n_embd=8,
        n_layer=1,
        n_head=2,
        activation_function="quick_gelu",
        bos_token_id=0,
        eos_token_id=0,
    )
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "quick")
    with pytest.raises(ValueError, match="activation_function='quick_gelu'"):
        GPT.from_pretrained(tmp_path / "quick")
    cfg.activation_function, cfg.scale_attn_by_inverse_layer_idx = "gelu_new", True
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "scaled")
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True"):
        GPT.from_pretrained(tmp_path / "scaled")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        GPT.from_pretrained(tmp_path / "nope")


@pytest.mark.parametrize(
    "variant",
    [
        dict(activation_function="gelu"),  # the erf GELU
        dict(activation_function="silu", n_inner=48),
        dict(activation_function="relu", n_inner=80),
        dict(activation_function="gelu_fast"),
        dict(tie_word_embeddings=False),  # an LM head of its own: loaded as its own, not the embedding
    ],
    ids=lambda v: ",".join(f"{k}={w}" for k, w in v.items()),
)
def test_gpt2_variants_load_and_export_exactly(variant, tmp_path):
    """GPT2Config switches gptviz has the parts for; their logits and greedy ids equal transformers', both ways.
    The tiny config keeps GPT2Config's default eos/bos 50256, outside its vocabulary: unset, with a warning."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, **variant)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # biases and norms off their init; a sharper head below, so no near ties
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        hf.lm_head.weight.mul_(20)
    hf.save_pretrained(tmp_path / "hf")
    with pytest.warns(UserWarning, match="outside the 97-token vocabulary"):
        ours = GPT.from_pretrained(tmp_path / "hf")
    assert ours.config.tie_embeddings == cfg.tie_word_embeddings
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)).abs().max() <= 1e-4
        theirs = hf.generate(x[:1], max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert torch.equal(ours.generate(x[:1], max_new_tokens=12), theirs)
    ours.save_pretrained(tmp_path / "back")
    again = load_hf(tmp_path / "back")
    assert again.config.activation_function == (
        "gelu_new" if cfg.activation_function == "gelu_fast" else cfg.activation_function
    )
    with torch.no_grad():
        assert (again(x).logits - hf(x).logits).abs().max() <= 1e-4
