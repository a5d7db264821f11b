"""Parity with the real transformers implementations of Llama, Qwen2 and GPT-NeoX (random init, tiny, offline).

Each family is built as a tiny random transformers model, saved to a folder, and loaded with
`GPT.from_pretrained`; logits, attention patterns, greedy and beam generations, KV-cache decoding and the
round trip back to transformers must all agree. GPT-2's own parity lives in test_hf_parity.py.
"""

import pytest
import torch

from gptviz import GPT, GPTConfig, capture
from gptviz.hf import UnsupportedModelError, config_from_hf, family_of

transformers = pytest.importorskip("transformers")

V = 97
ROPE = {"rope_type": "default", "rope_theta": 500.0}
FAMILIES = {
    # grouped-query attention (6 query heads over 2 key/value heads), untied head, SwiGLU
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        rope_parameters=ROPE,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    ),
    # tied embeddings and q/k/v biases only
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=V,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_parameters=ROPE,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    ),
    # parallel residual, partial rotary (a quarter of each head), exact GELU, untied head
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        vocab_size=V,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        rope_parameters={**ROPE, "partial_rotary_factor": 0.25},
        use_parallel_residual=True,
        hidden_act="gelu",
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    ),
}


def random_init(hf):
    """transformers zero-inits some biases and sets norms to one: randomise everything so a mix-up shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 and p.shape[0] <= 64 else 0.0))
    return hf


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    torch.manual_seed(0)
    hf = random_init(transformers.AutoModelForCausalLM.from_config(FAMILIES[name](), attn_implementation="eager"))
    folder = tmp_path_factory.mktemp(name)
    hf.save_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return name, folder, hf, GPT.from_pretrained(folder)


def ids(T=24, B=2):
    return torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(1))


def test_config_says_what_the_family_is(family):
    name, _, hf, ours = family
    c = ours.config
    assert family_of(c) == name
    assert c.pos_encoding == "rotary"
    if name == "llama":
        assert (c.n_head, c.kv_heads, c.norm, c.mlp_gated, c.tie_embeddings) == (6, 2, "rmsnorm", True, False)
    if name == "qwen2":
        assert c.has_bias("qkv") and not c.has_bias("attn_out") and not c.has_bias("mlp") and c.tie_embeddings
    if name == "gpt_neox":
        assert c.parallel_residual and c.rotary_size == 4 and c.activation == "gelu_exact"


def test_logits_match_transformers(family):
    _, _, hf, ours = family
    with torch.no_grad():
        diff = (hf(ids()).logits - ours(ids())).abs().max().item()
    assert diff <= 1e-4, diff


def test_attention_patterns_match_transformers_eager(family):
    _, _, hf, ours = family
    with torch.no_grad():
        theirs = hf(ids(), output_attentions=True).attentions
        with capture(ours, "blocks.*.attn.hook_pattern") as cap:
            ours(ids())
    assert len(theirs) == ours.config.n_layer
    for layer, a in enumerate(theirs):
        assert a.shape == cap[f"blocks.{layer}.attn.hook_pattern"].shape
        assert (a - cap[f"blocks.{layer}.attn.hook_pattern"]).abs().max() <= 1e-5


def test_fast_and_explicit_attention_agree(family):
    """SDPA (with enable_gqa) when nobody listens; the explicit path with repeated k/v when someone does."""
    _, _, _, ours = family
    with torch.no_grad():
        fast = ours(ids())
        with capture(ours, "blocks.*.attn.hook_pattern"):
            explicit = ours(ids())
    assert (fast - explicit).abs().max() <= 1e-5


def test_greedy_and_beam_generation_match_transformers(family):
    _, _, hf, ours = family
    prompt = ids(T=6, B=1)
    for kw in ({"do_sample": False}, {"do_sample": False, "num_beams": 3}):
        theirs = hf.generate(prompt, max_new_tokens=12, min_new_tokens=12, pad_token_id=0, eos_token_id=None, **kw)
        mine = ours.generate(prompt, max_new_tokens=12, **kw)
        assert torch.equal(theirs, mine), kw


def test_kv_cache_decoding_equals_full_recomputation(family):
    _, _, _, ours = family
    prompt = ids(T=5, B=2)
    cached = ours.generate(prompt, max_new_tokens=15, use_cache=True)
    full = ours.generate(prompt, max_new_tokens=15, use_cache=False)
    assert torch.equal(cached, full)
    cache = ours.new_kv_cache(2, 32)
    assert cache.k.shape[2] == ours.config.kv_heads  # grouped-query models cache only their key/value heads


def test_rotary_hooks_exist_and_fire(family):
    _, _, _, ours = family
    with capture(ours, ["blocks.0.attn.hook_q", "blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k"]) as cap:
        ours(ids(T=8, B=1))
    c = ours.config
    assert cap["blocks.0.attn.hook_rot_q"].shape == (1, 8, c.n_head, c.head_size)  # TransformerLens's layout
    assert cap["blocks.0.attn.hook_rot_k"].shape == (1, 8, c.kv_heads, c.head_size)
    # position 0 is not turned at all; later positions are
    q, rq = cap["blocks.0.attn.hook_q"], cap["blocks.0.attn.hook_rot_q"]
    assert torch.allclose(q[:, 0], rq[:, 0]) and not torch.allclose(q[:, 5], rq[:, 5])
    shapes = ours.hook_shapes(1, 8)
    assert all(tuple(cap[n].shape) == shapes[n] for n in cap)


def test_round_trip_back_to_transformers_is_exact(family, tmp_path):
    name, _, hf, ours = family
    ours.save_pretrained(tmp_path / "out")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert again.config.model_type == name
    back = GPT.from_pretrained(tmp_path / "out")
    for (k, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    with torch.no_grad():
        assert (again(ids()).logits - ours(ids())).abs().max() <= 1e-4


def test_unsupported_settings_are_refused_by_name():
    llama = FAMILIES["llama"]()
    llama.rope_parameters = {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 8.0}
    with pytest.raises(UnsupportedModelError, match="'yarn'"):
        config_from_hf(llama)
    llama.rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    with pytest.raises(UnsupportedModelError, match="'llama3' without low_freq_factor"):
        config_from_hf(llama)
    qwen = FAMILIES["qwen2"]()
    qwen.use_sliding_window = True
    with pytest.raises(UnsupportedModelError, match="sliding-window"):
        config_from_hf(qwen)
    with pytest.raises(UnsupportedModelError, match="model_type 'mixtral'"):
        config_from_hf(transformers.MixtralConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4))


def test_gptviz_built_family_models_export(tmp_path):
    """A model made in gptviz (not loaded) with a family's parts is written as that family."""
    c = GPTConfig(
        vocab_size=50,
        block_size=32,
        n_layer=1,
        n_head=4,
        n_kv_head=2,
        n_embd=32,
        norm="rmsnorm",
        pos_encoding="rotary",
        mlp_gated=True,
        activation="silu",
        n_inner=48,
        bias=False,
    )
    torch.manual_seed(0)
    GPT(c).save_pretrained(tmp_path)
    assert transformers.AutoConfig.from_pretrained(tmp_path).model_type == "llama"
    with pytest.raises(UnsupportedModelError, match="no transformers family"):
        GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=2, n_embd=16, norm="rmsnorm")).save_pretrained(
            tmp_path / "x"
        )


@pytest.mark.parametrize("rope_type", ["llama3", "linear"])
def test_scaled_rope_matches_transformers_and_round_trips(rope_type, tmp_path):
    """Llama 3.1 / 3.2's RoPE scaling ("llama3") and linear scaling: past the original context the frequencies
    change, so a model without them would give other logits; with them, transformers' logits and greedy ids."""
    rope = {"rope_type": rope_type, "rope_theta": 500000.0, "factor": 8.0}
    if rope_type == "llama3":
        rope.update(low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)
    config = FAMILIES["llama"]()
    config.max_position_embeddings, config.rope_parameters = 128, rope
    torch.manual_seed(0)
    hf = random_init(transformers.LlamaForCausalLM(config)).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = GPT.from_pretrained(tmp_path / "hf")
    assert ours.config.rope_scaling == rope_type and ours.config.rope_factor == 8.0
    x = ids(T=100)
    with torch.no_grad():
        assert (hf(x).logits - ours(x)).abs().max() <= 1e-4
        plain = GPT(GPTConfig(**{**ours.config.to_dict(), "rope_scaling": "none", "rope_factor": 1.0})).eval()
        plain.load_state_dict(ours.state_dict())
        assert (plain(x) - ours(x)).abs().max() > 1e-2  # the scaling matters at these positions
        theirs = hf.generate(x[:1, :60], max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert torch.equal(ours.generate(x[:1, :60], max_new_tokens=20, eos_token_id=None), theirs)
    ours.save_pretrained(tmp_path / "back")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert back.config.rope_parameters["rope_type"] == rope_type
    with torch.no_grad():
        assert (back(x).logits - hf(x).logits).abs().max() <= 1e-5
    tl = pytest.importorskip("transformer_lens") if rope_type == "llama3" else None
    if tl is not None:
        from gptviz import from_transformer_lens, to_transformer_lens

        tl_model = to_transformer_lens(ours)
        with torch.no_grad():
            assert (tl_model(x) - ours(x)).abs().max() <= 1e-4
        assert from_transformer_lens(tl_model).config == ours.config
