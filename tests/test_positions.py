"""Position computations: RoPE's angles and relative scores against the model's own rotation, and position-only
scores of grouped-query models against a forward pass."""

import math

import numpy as np
import pytest
import torch

from gptviz import GPT, GPTConfig, hooks
from gptviz.model import apply_rotary, rotary_tables
from gptviz.positions import (
    RopeScores,
    position_matrix,
    position_scores,
    rope_angles,
    rope_frequencies,
    rope_head_scores,
    rope_relative_scores,
    rope_score_matrix,
    rope_settings,
    rope_wavelengths,
)


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    base = dict(vocab_size=20, block_size=48, n_layer=2, n_head=4, n_embd=32)
    return GPT(GPTConfig(**{**base, **kw})).eval()


@pytest.fixture(scope="module")
def rotary():
    """Llama-like: RoPE, grouped-query (4 query heads over 2 key/value heads), head_dim set apart from C / nh."""
    return tiny(pos_encoding="rotary", n_kv_head=2, head_dim=12, rope_theta=500.0, norm="rmsnorm", bias=False)


def layer0_scores(model, ids):
    """Layer 0's pre-softmax scores (nh, T, T) of one forward of `ids`."""
    seen = {}

    def keep(x, hook):
        seen["s"] = x[0].detach()

    with torch.no_grad(), hooks(model, {"blocks.0.attn.hook_attn_scores": keep}):
        model(torch.tensor([ids]))
    return seen["s"]


# ---- RoPE's formula ----------------------------------------------------------------------------------------
def test_rope_settings_of_a_model_a_config_and_an_int(rotary):
    assert rope_settings(rotary) == rope_settings(rotary.config) == (12, 500.0)
    assert rope_settings(64) == (64, 10000.0) and rope_settings(64, theta=1e5) == (64, 1e5)
    partial = tiny(pos_encoding="rotary", rotary_dim=4)  # NeoX-style: 4 of the 8 dims of each head turn
    assert rope_settings(partial) == (4, 10000.0)
    with pytest.raises(ValueError, match="not rotary.*pass its head size as an int"):
        rope_settings(tiny())
    with pytest.raises(ValueError, match="rope_theta=500"):
        rope_angles(rotary, 8, theta=1e4)  # a model's own theta is what it uses
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)


def test_rope_angles_are_the_models_own_tables(rotary):
    rd = rotary.config.rotary_size
    a = rope_angles(rotary, 48)
    assert a.shape == (48, rd // 2)
    np.testing.assert_allclose(np.cos(a), rotary.rope_cos[:, : rd // 2].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.sin(a), rotary.rope_sin[:, rd // 2 :].numpy(), atol=1e-5)  # cat(angles, angles)
    f = rope_frequencies(64)
    assert f[0] == 1.0 and f[-1] == pytest.approx(10000 ** (-62 / 64))
    assert rope_wavelengths(64)[0] == pytest.approx(2 * math.pi)
    np.testing.assert_allclose(rope_angles(64, 5)[3], 3 * f)


def test_rope_scores_of_a_vector_with_itself_at_distance_0_are_its_squared_norm():
    s = rope_relative_scores(16, max_distance=40, n_random=8, seed=3)
    x = np.random.default_rng(3).standard_normal((8, 16))
    assert s.ones[0] == pytest.approx(16.0)
    np.testing.assert_allclose(s.random[:, 0], (x**2).sum(1), rtol=1e-12)
    assert s.ones_fraction[0] == 1.0 and np.all(s.ones_fraction <= 1 + 1e-12)  # never above |x|²
    assert s.ones.shape == (41,) and s.random.shape == (8, 41)


@pytest.mark.parametrize("rd,theta", [(16, 10000.0), (8, 100.0)])
def test_rope_relative_scores_equal_the_models_rotation_at_any_offset(rd, theta):
    """The curve is q·k of x turned at m + Δ against x turned at m, computed with apply_rotary at several
    absolute offsets m: the same for every m (RoPE's translation invariance)."""
    D, n = 30, 4
    s = rope_relative_scores(rd, max_distance=D, theta=theta, n_random=n, seed=1)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((n, rd))).float()
    x = torch.cat([torch.ones(1, rd), x])  # (1 + n, rd): the ones vector, then the random ones
    cos, sin = rotary_tables(200, rd, theta)
    turned = apply_rotary(x[None, :, None, :].expand(1, -1, 200, -1), cos, sin)[0]  # (1+n, 200, rd)
    expected = np.vstack([s.ones, s.random])  # (1+n, D+1)
    for m in (0, 7, 150):
        direct = (turned[:, m + np.arange(D + 1)] * turned[:, m : m + 1]).sum(-1).numpy()  # query at m+Δ, key at m
        np.testing.assert_allclose(direct, expected, atol=2e-3 * rd, err_msg=f"offset m={m}")


def test_rope_scores_decay_on_average_and_slower_for_a_larger_theta():
    """Llama's head (rd=64): the ones vector's q·k halves by Δ=28 with theta=10000, by Δ=59 with 100000; the
    random vectors' average follows the ones curve (each pair's expected |x_pair|² is equal)."""
    base, slow = rope_relative_scores(64, 2048), rope_relative_scores(64, 2048, theta=1e5)
    assert base.first_below(0.5) == 28 and slow.first_below(0.5) == 59
    assert slow.first_below(0.5) > base.first_below(0.5)
    np.testing.assert_allclose(base.random_fraction.mean(0), base.ones_fraction, atol=0.05)
    assert base.first_below(-2.0) is None
    assert isinstance(base, RopeScores) and base.rotary_dim == 64 and base.theta == 1e4


def test_rope_head_scores_equal_a_forward_with_the_same_token_delta_apart(rotary):
    """Put token t at position 0 and again at Δ: layer 0's score from Δ to 0 is the head's curve at Δ."""
    r = rope_head_scores(rotary, max_distance=20, layer=0, head=3, token_ids=[5, 11])
    assert r.kv_head == 1 and r.scores.shape == (2, 21)  # 4 query heads share 2 key/value heads: 3 reads 1
    for row, t in enumerate([5, 11]):
        for d in (0, 1, 9, 20):
            ids = [t] + [0] * (d - 1) + [t] if d else [t]
            s = layer0_scores(rotary, ids)
            assert r.scores[row, d] == pytest.approx(s[3, d, 0].item(), abs=1e-5)
    assert rope_head_scores(rotary, max_distance=500).scores.shape[1] == 48  # cropped to the block size
    with pytest.raises(ValueError, match="out of range"):
        rope_head_scores(rotary, head=4)
    with pytest.raises(ValueError, match="token ids"):
        rope_head_scores(rotary, token_ids=[20])


def test_rotary_models_have_no_position_vectors(rotary):
    for fn in (position_scores, position_matrix):
        with pytest.raises(ValueError, match="RoPE adds no position vector; it turns q and k"):
            fn(rotary, 8)


# ---- position-only scores of grouped-query models ---------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(n_kv_head=2), dict(n_kv_head=1, head_dim=6), dict(head_dim=10)])
def test_position_scores_of_grouped_query_models_equal_layer0_scores_without_tokens(kw):
    """c_attn gives q (nh*hs), k (nkv*hs), v (nkv*hs): not three equal C-sized parts when nkv < nh or head_dim
    is set. Checked against layer 0 of a forward with the token embeddings zeroed, and a direct computation."""
    model = tiny(**kw)
    T = 12
    scores = position_scores(model, T)  # (L, nh, T, T)
    assert scores.shape == (2, 4, T, T)
    seen = {}

    def zero(x, hook):
        return torch.zeros_like(x)

    def keep(x, hook):
        seen["s"] = x[0].detach()

    with torch.no_grad(), hooks(model, {"hook_embed": zero, "blocks.0.attn.hook_attn_scores": keep}):
        model(torch.zeros(1, T, dtype=torch.long))
    lower = torch.ones(T, T, dtype=torch.bool).tril()
    torch.testing.assert_close(scores[0][:, lower], seen["s"][:, lower], atol=1e-5, rtol=1e-5)
    # layer 1, by hand: query head h reads key head h // (nh / nkv)
    c, block = model.config, model.blocks[1]
    nh, nkv, hs = c.n_head, c.kv_heads, c.head_size
    with torch.no_grad():
        out = block.attn.c_attn(block.ln_1(model.wpe.weight[:T]))
    for h in range(nh):
        q = out[:, h * hs : (h + 1) * hs]
        g = h // (nh // nkv)
        k = out[:, nh * hs + g * hs : nh * hs + (g + 1) * hs]
        torch.testing.assert_close(scores[1, h][lower], (q @ k.T / math.sqrt(hs))[lower], atol=1e-5, rtol=1e-5)


def test_rope_score_matrix_depends_only_on_the_distance():
    m = rope_score_matrix(16, 40)  # the ones vector, turned by the model's own apply_rotary at every position
    curve = rope_relative_scores(16, 39).ones_fraction
    assert m.shape == (40, 40)
    for d in (0, 1, 5, 39):
        np.testing.assert_allclose(np.diagonal(m, -d), curve[d], atol=1e-5)  # query i, key i - d
    np.testing.assert_allclose(m, m.T, atol=1e-5)  # cos is even: Δ and -Δ score alike
