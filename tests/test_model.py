"""The model: shapes, configuration choices, the two attention paths, the KV cache, clear errors."""

import math

import pytest
import torch

import gptviz.model as gptviz_model
from gptviz import GPT, GPTConfig, capture, sinusoidal_encoding


def ids(B=2, T=10, V=97, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_logits_shape_and_loss(tiny_model):
    x = ids()
    logits = tiny_model(x)
    assert logits.shape == (2, 10, 97)
    loss = tiny_model.loss(x, ids(seed=1))
    assert loss.dim() == 0
    # random init predicts roughly uniformly: loss near log(V)
    assert abs(loss.item() - math.log(97)) < 0.5


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "none"])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_config_variants_run_and_train(pos_encoding, activation, bias):
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=50,
        block_size=16,
        n_layer=1,
        n_head=2,
        n_embd=16,
        pos_encoding=pos_encoding,
        activation=activation,
        bias=bias,
    )
    model = GPT(cfg)
    x = ids(2, 16, 50)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model.loss(x[:, :-1], x[:, 1:])
    for _ in range(20):
        opt.zero_grad()
        model.loss(x[:, :-1], x[:, 1:]).backward()
        opt.step()
    assert model.loss(x[:, :-1], x[:, 1:]) < first - 0.5  # it can memorise two sequences
    has_bias = any(n.endswith("bias") for n, _ in model.named_parameters())
    assert has_bias == bias


def test_sinusoidal_matches_the_seed_formula():
    pe = sinusoidal_encoding(50, 16)
    for pos in (0, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_model_has_no_position_parameters():
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_encoding="sinusoidal"))
    assert not any("wpe" in n for n, _ in m.named_parameters())


def test_attention_only_model():
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=8, mlp=False))
    assert not any("mlp" in n for n in m.hook_names)
    assert m(ids(1, 8, 20)).shape == (1, 8, 20)


def test_weights_are_tied(tiny_model):
    assert tiny_model.lm_head.weight is tiny_model.wte.weight


def test_toy_model_options_no_layer_norm_untied_head_and_init_scale(tmp_path):
    """The induction lesson's model: no LayerNorm, an LM head of its own, a wider init; it saves and loads."""
    from gptviz import checkpoint, get_tokenizer

    cfg = GPTConfig(
        vocab_size=20,
        block_size=8,
        n_layer=2,
        n_head=2,
        n_embd=8,
        mlp=False,
        layer_norm=False,
        tie_embeddings=False,
        init_std=0.1,
    )
    torch.manual_seed(0)
    m = GPT(cfg).eval()
    assert not any(isinstance(x, (gptviz_model.LayerNorm, gptviz_model.RMSNorm)) for x in m.modules())
    assert m.lm_head.weight is not m.wte.weight
    assert 0.07 < m.wte.weight.std().item() < 0.13 and 0.07 < m.lm_head.weight.std().item() < 0.13
    assert m.hook_names == [
        n
        for n in GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=8, mlp=False)).hook_names
        if ".hook_scale" not in n and ".hook_normalized" not in n
    ]  # the same hook points, less the norms' own
    x = ids(2, 8, 20)
    tok = get_tokenizer("char", text="abcdefghijklmnopqrst")
    path = checkpoint.save(tmp_path / "toy", m, tok)
    loaded, _ = checkpoint.load(path)
    assert torch.equal(loaded.lm_head.weight, m.lm_head.weight)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_fast_and_explicit_attention_paths_agree(tiny_model):
    x = ids()
    with torch.no_grad():
        fast = tiny_model(x)
        with capture(tiny_model, "blocks.*.attn.hook_pattern"):
            explicit = tiny_model(x)
    assert torch.allclose(fast, explicit, atol=1e-5)


def test_only_the_listened_layer_runs_explicitly(tiny_model, monkeypatch):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        tiny_model(ids())
        assert len(calls) == 2  # both layers fast
        calls.clear()
        with capture(tiny_model, "blocks.1.attn.hook_attn_scores"):
            tiny_model(ids())
        assert len(calls) == 1  # layer 0 stays fast, layer 1 explicit


def test_kv_cache_matches_full_forward(tiny_model):
    x = ids(2, 20)
    with torch.no_grad():
        full = tiny_model(x)
        cache = tiny_model.new_kv_cache(2)
        parts = [tiny_model(x[:, :7], cache), tiny_model(x[:, 7:12], cache)]
        parts += [tiny_model(x[:, t : t + 1], cache) for t in range(12, 20)]
    assert cache.pos == 20
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_kv_cache_with_explicit_path(tiny_model):
    x = ids(1, 12)
    with torch.no_grad():
        full = tiny_model(x)
        cache = tiny_model.new_kv_cache(1)
        tiny_model(x[:, :8], cache)
        with capture(tiny_model, "blocks.*.attn.hook_pattern") as cap:
            out = tiny_model(x[:, 8:10], cache)
    assert torch.allclose(out, full[:, 8:10], atol=1e-5)
    pattern = cap["blocks.0.attn.hook_pattern"]
    assert pattern.shape == (1, 4, 2, 10)  # (B, nh, T new, Tk = past + T)
    assert torch.allclose(pattern.sum(-1), torch.ones(1, 4, 2))
    assert pattern[0, :, 0, 9].abs().max() == 0  # position 8 cannot see position 9


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(1, 1, 5, dtype=torch.long), r"shape \(B, T\)"),  # one sequence, (T,), is a batch of one
        (torch.zeros(1, 5), r"integer tensor"),
        (torch.zeros(1, 0, dtype=torch.long), "empty"),
        (torch.zeros(1, 33, dtype=torch.long), "longer than block_size=32"),
        (torch.full((1, 3), 97), "outside the vocabulary"),
        (torch.full((1, 3), -1), "outside the vocabulary"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_model, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=30, n_head=4), "divisible"),
        (dict(pos_encoding="alibi"), "pos_encoding must be one of"),
        (dict(n_head=4, n_kv_head=3), "multiple of n_kv_head"),
        (dict(pos_encoding="rotary", rotary_dim=5), "rotary_dim must be even"),
        (dict(norm="batchnorm"), "norm must be one of"),
        (dict(activation="swish"), "activation must be one of"),
        (dict(n_layer=0), "positive integer"),
        (dict(dropout=1.0), "dropout"),
        (dict(init_std=0.0), "init_std must be in"),
    ],
)
def test_bad_config_gets_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**kwargs)


def test_config_round_trips_through_dict(tiny_config):
    assert GPTConfig.from_dict(tiny_config.to_dict()) == tiny_config
    with pytest.raises(ValueError, match="unknown GPTConfig fields"):
        GPTConfig.from_dict({**tiny_config.to_dict(), "n_layers": 3})


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    x = ids(1, 8, 20)
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


def test_autocast_bf16_on_cpu(tiny_model):
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = tiny_model(ids())
        with capture(tiny_model, "blocks.0.attn.hook_pattern") as cap:
            tiny_model(ids())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert torch.allclose(cap["blocks.0.attn.hook_pattern"].float().sum(-1), torch.ones(2, 4, 10), atol=2e-2)


def test_torch_compile(tiny_model):
    pytest.importorskip("torch._dynamo")
    compiled = torch.compile(tiny_model, backend="eager")  # the inductor backend needs a C++ toolchain + time
    x = ids()
    with torch.no_grad():
        assert torch.allclose(compiled(x), tiny_model(x), atol=1e-5)
        with capture(tiny_model, "blocks.0.attn.hook_pattern") as cap:
            compiled(x)
    assert cap["blocks.0.attn.hook_pattern"].shape == (2, 4, 10, 10)
