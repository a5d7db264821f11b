"""gptviz and TransformerLens 3.x on the same weights compute the same numbers, within 1e-5.

Every cached activation by name (gptviz.capture vs run_with_cache, shapes first), logits, induction scores,
the head-ablation loss table, residual-stream patching (against transformer_lens.patching), and the round trip
to_transformer_lens -> from_transformer_lens. Needs TransformerLens (`pip install 'gptviz[bench]'`); `make test`
does not install it, so this module skips with that message.
"""

import sys
import warnings

import pytest
import torch
from conftest import LLAMA_PARTS

transformer_lens = pytest.importorskip(
    "transformer_lens",
    reason="TransformerLens is not installed (pip install 'gptviz[bench]', i.e. transformer-lens>=3.9,<4)",
)
if not hasattr(transformer_lens, "HookedTransformer"):
    pytest.skip(
        "this TransformerLens has no HookedTransformer (4.x); install transformer-lens<4", allow_module_level=True
    )

import torch.nn.functional as F  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig, patching  # noqa: E402

import gptviz  # noqa: E402
from gptviz import GPT, GPTConfig  # noqa: E402
from gptviz.heads import induction_score  # noqa: E402
from gptviz.hf import UnsupportedModelError  # noqa: E402
from gptviz.transformer_lens import config_from_tl, from_transformer_lens, to_transformer_lens  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

V = 61
FAMILIES = {
    "gpt2": dict(),
    "llama-gqa": dict(**LLAMA_PARTS, n_kv_head=2, n_inner=48, tie_embeddings=False, rope_theta=500.0),
    "neox-parallel-partial-rotary": dict(
        pos_encoding="rotary", rotary_dim=4, parallel_residual=True, activation="gelu_exact", tie_embeddings=False
    ),
    "attn-only-toy": dict(mlp=False, layer_norm=False, tie_embeddings=False, init_std=0.07),
}
# gptviz names TransformerLens lacks, and the reverse; each pair below is checked to hold the same tensor.
ONLY_GPTVIZ = {"hook_logits"}  # TransformerLens: unembed.hook_out
ONLY_TL = {"unembed.hook_in", "unembed.hook_out"}  # gptviz: the LM head's input has no hook; hook_logits


def make(family: str, **overrides) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=V, block_size=24, n_layer=2, n_head=4, n_embd=32, **{**FAMILIES[family], **overrides})
    model = GPT(config).eval()
    with torch.no_grad():  # biases and norm weights away from 0 and 1, so a misplaced one shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(params=list(FAMILIES))
def pair(request):
    model = make(request.param)
    return model, to_transformer_lens(model)


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_logits_and_every_cached_activation_by_name(pair):
    model, tl = pair
    tl.set_use_attn_result(True)  # TransformerLens computes hook_result only when asked; gptviz when listened to
    ids = torch.randint(0, V, (2, 13))
    with torch.no_grad(), gptviz.capture(model, "*", budget_mb=None) as cap:
        logits = model(ids)
    tl_logits, tl_cache = tl.run_with_cache(ids)
    close(logits, tl_logits)

    ours, theirs = set(cap.keys()), set(tl_cache.keys())
    only_ours = ONLY_GPTVIZ | (
        # an attention-only TransformerLens block has no hook_resid_mid; gptviz's fires (== hook_resid_post)
        {f"blocks.{l}.hook_resid_mid" for l in range(2)} if not model.config.mlp else set()
    )
    assert ours - theirs == only_ours
    assert theirs - ours == ONLY_TL
    shared = sorted(ours & theirs)
    assert len(shared) > 20
    wrong_shape = {
        n: (tuple(cap[n].shape), tuple(tl_cache[n].shape)) for n in shared if cap[n].shape != tl_cache[n].shape
    }
    assert not wrong_shape
    for name in shared:
        torch.testing.assert_close(cap[name], tl_cache[name], atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")

    # the names that differ hold the same tensors under their other names
    close(cap["hook_logits"], tl_cache["unembed.hook_out"])
    if model.config.layer_norm:  # the LM head's input is ln_final's output: normalized * w (+ b)
        ln = model.ln_f
        want = cap["ln_final.hook_normalized"] * ln.weight + (ln.bias if getattr(ln, "bias", None) is not None else 0)
        close(want, tl_cache["unembed.hook_in"])
    else:
        close(cap["blocks.1.hook_resid_post"], tl_cache["unembed.hook_in"])
        close(cap["blocks.0.hook_resid_mid"], tl_cache["blocks.0.hook_resid_post"])


def test_induction_scores_agree():
    model = make("attn-only-toy")
    tl = to_transformer_lens(model)
    n = 10
    torch.manual_seed(1)
    half = torch.randperm(V)[:n]  # distinct tokens: the only earlier copies are the repeat's
    ids = half.repeat(2)[None]  # (1, 2n)
    with torch.no_grad(), gptviz.capture(model, "blocks.*.attn.hook_pattern") as cap:
        model(ids)
    ours = induction_score(cap.stack("blocks.*.attn.hook_pattern")[:, 0], ids[0])  # (L, nh)
    _, tl_cache = tl.run_with_cache(ids)
    # direct: query q in the second half looks at q - n + 1, the token after the first copy of ids[q]
    theirs = torch.stack(
        [tl_cache["pattern", l][0].diagonal(offset=-(n - 1), dim1=-2, dim2=-1)[:, 1:].mean(-1) for l in range(2)]
    )
    assert ours.shape == (2, 4)
    close(ours, theirs)


def test_head_ablation_loss_table_agrees(pair):
    model, tl = pair
    torch.manual_seed(2)
    ids = torch.randint(0, V, (3, 16))
    L, nh = model.config.n_layer, model.config.n_head

    def zero_head(h):
        def fn(z, hook):  # (B, T, nh, hs) in both tools
            z = z.clone()
            z[:, :, h] = 0
            return z

        return fn

    with torch.no_grad():
        clean = model.loss(ids[:, :-1], ids[:, 1:])
        tl_clean = tl(ids, return_type="loss")
        ours, theirs = torch.zeros(L, nh), torch.zeros(L, nh)
        for l in range(L):
            for h in range(nh):
                name = f"blocks.{l}.attn.hook_z"
                with gptviz.hooks(model, {name: zero_head(h)}):
                    ours[l, h] = model.loss(ids[:, :-1], ids[:, 1:]) - clean
                theirs[l, h] = tl.run_with_hooks(ids, return_type="loss", fwd_hooks=[(name, zero_head(h))]) - tl_clean
    close(clean, tl_clean)
    assert ours.abs().max() > 1e-3  # heads matter, so the table is not trivially zero
    close(ours, theirs)


def test_residual_patching_agrees_with_transformer_lens_patching(pair):
    """Clean activations patched into the corrupted run at every (layer, position) of resid_pre, as
    transformer_lens.patching.get_act_patch_resid_pre does; gptviz side written with gptviz.hooks."""
    model, tl = pair
    torch.manual_seed(3)
    clean_ids = torch.randint(0, V, (1, 8))
    corrupted_ids = clean_ids.clone()
    corrupted_ids[0, 2] = (clean_ids[0, 2] + 1) % V
    answer = int(clean_ids[0, -1])

    def metric(logits):
        return F.log_softmax(logits[0, -1], dim=-1)[answer]

    with torch.no_grad(), gptviz.capture(model, "blocks.*.hook_resid_pre") as clean_cap:
        model(clean_ids)
    L, T = model.config.n_layer, clean_ids.shape[1]
    ours = torch.zeros(L, T)
    with torch.no_grad():
        for l in range(L):
            name = f"blocks.{l}.hook_resid_pre"
            for p in range(T):

                def patch(x, hook, p=p, clean=clean_cap[name]):
                    x = x.clone()
                    x[:, p] = clean[:, p]
                    return x

                with gptviz.hooks(model, {name: patch}):
                    ours[l, p] = metric(model(corrupted_ids))
    _, tl_clean_cache = tl.run_with_cache(clean_ids)
    theirs = patching.get_act_patch_resid_pre(tl, corrupted_ids, tl_clean_cache, metric)
    assert theirs.shape == (L, T)
    close(ours, theirs)
    close(ours[0, 2], metric(model(clean_ids)).detach())  # patching the changed token restores the clean run


@pytest.mark.parametrize(
    "family,overrides",
    [(f, {}) for f in FAMILIES]
    + [
        ("gpt2", dict(pos_encoding="sinusoidal")),
        ("gpt2", dict(pos_encoding="none", bias=False)),
        ("gpt2", dict(n_inner=40, head_dim=12, attn_out_bias=False)),
        ("llama-gqa", dict(qkv_bias=True)),  # Qwen2's layout
    ],
)
def test_round_trip_is_exact(family, overrides):
    model = make(family, **overrides)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tl = to_transformer_lens(model)
    back = from_transformer_lens(tl)
    assert back.config == model.config
    assert set(back.state_dict()) == set(before)
    for k, v in back.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert torch.equal(model.state_dict()[k], before[k]), f"to_transformer_lens changed the model's {k}"
    # the config is read back from TransformerLens's config and weights alone as well
    del tl.gptviz_config
    inferred = from_transformer_lens(tl)
    ids = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        close(inferred(ids), model(ids))
    assert inferred.config.pos_encoding == model.config.pos_encoding


@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_a_transformer_lens_native_model_converts(norm):
    """A HookedTransformer built by TransformerLens (GQA, rotary, random biases), then folded as from_pretrained
    folds it (normalization_type LNPre / RMSPre: the norms' weights moved into W_Q, W_in, W_U)."""
    cfg = HookedTransformerConfig(
        d_model=32,
        d_head=8,
        n_heads=4,
        n_key_value_heads=2,
        n_layers=2,
        n_ctx=24,
        d_vocab=V,
        d_mlp=64,
        act_fn="gelu_new",
        normalization_type=norm,
        positional_embedding_type="rotary",
        rotary_dim=8,
        seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tl = HookedTransformer(cfg).eval()
    with torch.no_grad():
        for name, p in tl.named_parameters():
            # ln_final.b stays 0: fold_ln would move it into unembed.b_U, which gptviz has no place for
            if name.endswith((".w", "ln1.b", "ln2.b", "b_Q", "_b_K", "_b_V", "b_O", "b_in", "b_out")):
                p.add_(0.1 * torch.randn_like(p))
    ids = torch.randint(0, V, (2, 12))
    model = from_transformer_lens(tl)
    assert model.config.kv_heads == 2 and not model.config.tie_embeddings
    assert model.config.norm == ("rmsnorm" if norm == "RMS" else "layernorm")
    with torch.no_grad():
        close(model(ids), tl(ids))
    tl.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    assert tl.cfg.normalization_type == norm + "Pre"
    folded = from_transformer_lens(tl)
    with torch.no_grad():
        close(folded(ids), tl(ids))


def test_folding_our_own_model_in_transformer_lens_and_back():
    """fold_ln + centring on a converted model without norm biases: LNPre back to LayerNorms of weight 1."""
    model = make("gpt2", bias=False, tie_embeddings=False)
    tl = to_transformer_lens(model)
    tl.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    ids = torch.randint(0, V, (2, 12))
    back = from_transformer_lens(tl)
    assert back.config == model.config and torch.equal(back.blocks[0].ln_1.weight, torch.ones(32))
    with torch.no_grad():
        close(back(ids), tl(ids))
        close(back(ids).log_softmax(-1), model(ids).log_softmax(-1))  # centring the unembed moved logits only


def test_what_transformer_lens_cannot_hold_is_refused_by_name():
    model = make("llama-gqa", bias=True)  # a gated MLP with biases before the product
    with pytest.raises(UnsupportedModelError, match="gated MLP"):
        to_transformer_lens(model)
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.c_fc.bias.zero_()
    tl = to_transformer_lens(model)  # zero gate/up biases: the same function, b_out carried over
    assert from_transformer_lens(tl).config == model.config


def test_what_gptviz_cannot_hold_is_refused_by_name():
    tl = to_transformer_lens(make("gpt2"))
    with torch.no_grad():
        tl.unembed.b_U.add_(1.0)
    with pytest.raises(UnsupportedModelError, match="unembed.b_U.*from_pretrained_no_processing"):
        from_transformer_lens(tl)
    tl = to_transformer_lens(make("gpt2"))
    with torch.no_grad():
        tl.unembed.W_U.mul_(2.0)  # TransformerLens's untied copy trained apart
    with pytest.raises(UnsupportedModelError, match="tie_embeddings=True"):
        from_transformer_lens(tl)
    assert not from_transformer_lens(tl, config=config_from_tl(tl)).config.tie_embeddings
    adjacent = HookedTransformerConfig(
        d_model=16,
        d_head=4,
        n_layers=1,
        n_ctx=8,
        d_vocab=V,
        act_fn="relu",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=True,
        attn_only=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        gptj_style = HookedTransformer(adjacent)
    with pytest.raises(UnsupportedModelError, match="rotary_adjacent_pairs"):
        from_transformer_lens(gptj_style)


def test_missing_transformer_lens_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'gptviz\[bench\]'"):
        to_transformer_lens(make("gpt2"))
