"""Weight views (gptviz.weights): TransformerLens's shapes, views where promised, and the hooks recomputed from them.

No TransformerLens needed: every check is against gptviz's own parameters and hook points.
"""

import pytest
import torch
from conftest import LLAMA_PARTS

import gptviz
from gptviz import GPT, GPTConfig
from gptviz.weights import AttentionWeights, MLPWeights

CONFIGS = {
    "gpt2": dict(),
    "llama": dict(**LLAMA_PARTS, n_kv_head=2, n_inner=48, tie_embeddings=False),
    "qwen2-gated-biases": dict(n_kv_head=1, pos_encoding="rotary", norm="rmsnorm", mlp_gated=True, activation="silu"),
    "neox": dict(pos_encoding="rotary", rotary_dim=4, parallel_residual=True, activation="gelu_exact"),
    "toy": dict(mlp=False, layer_norm=False, tie_embeddings=False, pos_encoding="sinusoidal"),
}


def make(name: str) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=53, block_size=16, n_layer=2, n_head=4, n_embd=32, **CONFIGS[name])).eval()
    with torch.no_grad():  # biases and norm weights away from 0 and 1, so a misplaced one shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def per_layer(module, name: str):
    """A per-layer view as `model.blocks[l].attn.<name>` gives it once the module inherits the mixin."""
    cls = AttentionWeights if hasattr(module, "c_attn") else MLPWeights
    return getattr(cls, name).__get__(module)


def shares_storage(view: torch.Tensor, param: torch.Tensor) -> bool:
    return view.untyped_storage().data_ptr() == param.untyped_storage().data_ptr()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_level_shapes_are_transformer_lens(name):
    model = make(name)
    c = model.config
    L, nh, C, hs, V, n = c.n_layer, c.n_head, c.n_embd, c.head_size, c.vocab_size, c.mlp_width
    want = {
        "W_E": (V, C),
        "W_U": (C, V),
        "b_U": (V,),
        "W_Q": (L, nh, C, hs),
        "W_K": (L, nh, C, hs),  # grouped-query heads repeated, as TransformerLens's W_K
        "W_V": (L, nh, C, hs),
        "W_O": (L, nh, hs, C),
        "b_Q": (L, nh, hs),
        "b_K": (L, nh, hs),
        "b_V": (L, nh, hs),
        "b_O": (L, C),
    }
    if c.pos_encoding in ("learned", "sinusoidal"):
        want["W_pos"] = (c.block_size, C)
    if c.mlp:
        want.update(W_in=(L, C, n), W_out=(L, n, C), b_in=(L, n), b_out=(L, C))
        if c.mlp_gated:
            want["W_gate"] = (L, C, n)
    got = {k: tuple(getattr(model, k).shape) for k in want}
    assert got == want
    assert (model.W_gate is None) == (not c.mlp_gated)


def test_per_layer_shapes_under_grouped_query_attention():
    model = make("llama")
    attn, mlp = model.blocks[1].attn, model.blocks[1].mlp
    nh, nkv, C, hs = 4, 2, 32, 8
    shapes = {k: tuple(per_layer(attn, k).shape) for k in ("W_Q", "W_K", "_W_K", "W_V", "_W_V", "W_O")}
    assert shapes == {
        "W_Q": (nh, C, hs),
        "W_K": (nh, C, hs),
        "_W_K": (nkv, C, hs),
        "W_V": (nh, C, hs),
        "_W_V": (nkv, C, hs),
        "W_O": (nh, hs, C),
    }
    assert tuple(per_layer(attn, "_b_K").shape) == (nkv, hs) and tuple(per_layer(attn, "b_K").shape) == (nh, hs)
    # query head h reads key/value head h // (nh / nkv), as in transformers and TransformerLens
    for h in range(nh):
        assert torch.equal(per_layer(attn, "W_K")[h], per_layer(attn, "_W_K")[h // 2])
        assert torch.equal(per_layer(attn, "W_V")[h], per_layer(attn, "_W_V")[h // 2])
    assert tuple(per_layer(mlp, "W_gate").shape) == (C, 48) and tuple(per_layer(mlp, "W_in").shape) == (C, 48)


def test_per_layer_views_share_the_parameters_and_edits_reach_the_model():
    model = make("llama")
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    views = {
        "W_Q": attn.c_attn.weight,
        "_W_K": attn.c_attn.weight,
        "_W_V": attn.c_attn.weight,
        "W_O": attn.c_proj.weight,
    }
    for name, param in views.items():
        assert shares_storage(per_layer(attn, name), param), name
    for name in ("W_in", "W_gate", "W_out"):
        assert shares_storage(per_layer(mlp, name), mlp.c_fc.weight if name != "W_out" else mlp.c_proj.weight)
    ids = torch.randint(0, 53, (1, 10))
    before = model(ids)
    with torch.no_grad():
        per_layer(attn, "W_O")[2].zero_()  # head 2 of layer 0 writes nothing now
    assert model.blocks[0].attn.c_proj.weight[:, 16:24].abs().sum() == 0  # hs=8: head 2 is columns 16..23
    assert not torch.allclose(model(ids), before)
    with torch.no_grad():  # _W_K edits key head 1, which query heads 2 and 3 read
        per_layer(attn, "_W_K")[1, 5, 3] = 7.0
    q_size = 4 * 8
    assert model.blocks[0].attn.c_attn.weight[q_size + 8 + 3, 5] == 7.0


def test_stacked_properties_are_copies_and_grouped_w_k_is_a_copy():
    model = make("llama")
    stacked = model.W_Q
    with torch.no_grad():
        stacked.zero_()
    assert model.blocks[0].attn.c_attn.weight.abs().sum() > 0  # documented: model-level stacks are copies
    W_K = per_layer(model.blocks[0].attn, "W_K")  # nkv=2 < nh=4: repeated, so a copy
    assert not shares_storage(W_K, model.blocks[0].attn.c_attn.weight)
    W_K_mha = per_layer(make("gpt2").blocks[0].attn, "W_K")  # nkv = nh: the view itself
    assert W_K_mha._base is not None


def test_embedding_views_and_tied_unembedding():
    model = make("gpt2")
    assert model.W_E is model.wte.weight and model.W_pos is model.wpe.weight
    assert shares_storage(model.W_U, model.W_E)  # tied: W_U is W_E transposed, one storage
    assert torch.equal(model.b_U, torch.zeros(53))
    untied = make("llama")
    assert not shares_storage(untied.W_U, untied.W_E) and shares_storage(untied.W_U, untied.lm_head.weight)
    toy = make("toy")
    assert toy.W_pos is toy.pe  # the fixed sinusoidal table


def test_missing_parts_are_explained():
    with pytest.raises(ValueError, match="pos_encoding='rotary'.*hook_rot_q"):
        getattr(make("llama"), "W_pos")  # noqa: B009 (a property that raises)
    with pytest.raises(ValueError, match="attention-only"):
        getattr(make("toy"), "W_in")  # noqa: B009
    llama = make("llama")  # no biases: zeros of TransformerLens's shapes, new tensors
    assert torch.equal(llama.b_Q, torch.zeros(2, 4, 8)) and torch.equal(llama.b_out, torch.zeros(2, 32))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hooks_recomputed_from_the_views(name):
    model = make(name)
    c = model.config
    group = c.n_head // c.kv_heads
    ids = torch.randint(0, 53, (2, 11))
    with torch.no_grad(), gptviz.capture(model, "*", budget_mb=None) as cap:
        logits = model(ids)
    T = ids.shape[1]

    def close(a, b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    embed = model.W_E[ids] + (model.W_pos[:T] if c.pos_encoding in ("learned", "sinusoidal") else 0)
    close(cap["blocks.0.hook_resid_pre"], embed)

    def affine(x, ln):  # hook_normalized is before the norm's weight and bias, as in TransformerLens
        return x * ln.weight + (ln.bias if getattr(ln, "bias", None) is not None else 0)

    for l, block in enumerate(model.blocks):
        attn, p = block.attn, f"blocks.{l}."
        x = affine(cap[p + "ln1.hook_normalized"], block.ln_1) if c.layer_norm else cap[p + "hook_resid_pre"]
        close(cap[p + "attn.hook_q"], torch.einsum("btc,nch->btnh", x, per_layer(attn, "W_Q")) + per_layer(attn, "b_Q"))
        k = torch.einsum("btc,nch->btnh", x, per_layer(attn, "_W_K")) + per_layer(attn, "_b_K")
        close(cap[p + "attn.hook_k"], k)  # (B, T, nkv, hs)
        v = torch.einsum("btc,nch->btnh", x, per_layer(attn, "W_V")) + per_layer(attn, "b_V")
        close(cap[p + "attn.hook_v"].repeat_interleave(group, dim=2), v)  # per query head, as W_V
        z = cap[p + "attn.hook_z"]  # (B, T, nh, hs)
        result = torch.einsum("btnh,nhc->btnc", z, per_layer(attn, "W_O"))
        close(cap[p + "attn.hook_result"], result)
        close(cap[p + "hook_attn_out"], result.sum(2) + per_layer(attn, "b_O"))
        if not c.mlp:
            continue
        mlp = block.mlp
        x = affine(cap[p + "ln2.hook_normalized"], block.ln_2)
        if c.mlp_gated:
            close(cap[p + "mlp.hook_pre"], x @ per_layer(mlp, "W_gate") + per_layer(mlp, "b_gate"))
            close(cap[p + "mlp.hook_pre_linear"], x @ per_layer(mlp, "W_in") + per_layer(mlp, "b_in"))
        else:
            close(cap[p + "mlp.hook_pre"], x @ per_layer(mlp, "W_in") + per_layer(mlp, "b_in"))
        close(cap[p + "hook_mlp_out"], cap[p + "mlp.hook_post"] @ per_layer(mlp, "W_out") + per_layer(mlp, "b_out"))
    final = (
        affine(cap["ln_final.hook_normalized"], model.ln_f)
        if c.layer_norm
        else cap[f"blocks.{c.n_layer - 1}.hook_resid_post"]
    )
    close(logits, final @ model.W_U + model.b_U)
    # the stacks hold the same numbers as the per-layer views
    close(model.W_O[1], per_layer(model.blocks[1].attn, "W_O"))
    close(model.b_K[0], per_layer(model.blocks[0].attn, "b_K"))


def test_blocks_expose_the_views_when_the_modules_inherit_the_mixins():
    model = make("gpt2")
    if not isinstance(model.blocks[0].attn, AttentionWeights):
        pytest.skip(
            "CausalSelfAttention / MLP do not inherit gptviz.weights.AttentionWeights / MLPWeights yet, so "
            "model.blocks[l].attn.W_Q is not there; the views are tested through the mixins above"
        )
    assert torch.equal(model.blocks[1].attn.W_Q, model.W_Q[1])
    assert torch.equal(model.blocks[1].mlp.W_in, model.W_in[1])
