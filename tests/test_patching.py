"""Activation patching and head ablation (gptviz.patching) on tiny CPU models, and their figures.

Invariants that need no reference implementation: patching clean into clean changes nothing; the only position
where two inputs differ carries the whole answer at layer 0; one head's z is one head's result; a zeroed head is
the model with that head's columns of c_proj zeroed by hand. Batched runs agree with one-at-a-time runs.
"""

import copy

import pytest
import torch

from gptviz import GPT, GPTConfig, hook_names, hooks, plots
from gptviz.hooks import hook_points
from gptviz.patching import (
    ablate_heads,
    logit_diff,
    next_token_loss,
    normalized_metric,
    patch_heads,
    patch_resid,
)

V, T = 61, 12


def make(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=32, init_std=0.2)
    return GPT(GPTConfig(**{**cfg, **kw})).eval()


def llama(**kw) -> GPT:
    """Llama-style: RMSNorm, RoPE, grouped-query heads (4 query heads read 2 key/value heads), SwiGLU, no biases."""
    return make(
        n_kv_head=2,
        norm="rmsnorm",
        pos_encoding="rotary",
        mlp_gated=True,
        activation="silu",
        n_inner=48,
        bias=False,
        **kw,
    )


@pytest.fixture(scope="module")
def model():
    return make()


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, V, (2, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, 4] = (clean[:, 4] + 7) % V  # one position differs
    return clean, corrupted


METRIC = logit_diff(3, 5)


def values(model, ids, metric=METRIC) -> float:
    with torch.no_grad():
        return float(metric(model(ids)))


def loss(model, ids) -> float:
    with torch.no_grad():
        return float(model.loss(ids[:, :-1], ids[:, 1:]))


def no_listeners(model) -> bool:
    return all(not p.fns for p in hook_points(model).values())


# ---- metrics ----------------------------------------------------------------------------------------------


def test_logit_diff_is_the_difference_of_two_logits_averaged_over_rows():
    logits = torch.randn(3, 5, 10)
    expected = (logits[:, -1, 2] - logits[:, -1, 7]).mean()
    assert torch.allclose(logit_diff(2, 7)(logits), expected)
    per_row = logit_diff([1, 2, 3], [4, 5, 6], position=2)(logits)
    assert torch.allclose(per_row, (logits[[0, 1, 2], 2, [1, 2, 3]] - logits[[0, 1, 2], 2, [4, 5, 6]]).mean())


def test_normalized_metric_maps_corrupted_to_0_and_clean_to_1():
    norm = normalized_metric(torch.tensor(4.0), -2.0)
    assert norm(4.0) == pytest.approx(1.0) and norm(-2.0) == pytest.approx(0.0) and norm(1.0) == pytest.approx(0.5)
    assert torch.allclose(norm(torch.tensor([[4.0, -2.0]])), torch.tensor([[1.0, 0.0]]))


def test_next_token_loss_is_model_loss(model, pair):
    clean, _ = pair
    with torch.no_grad():
        assert values(model, clean, next_token_loss(clean)) == pytest.approx(loss(model, clean), abs=1e-5)


# ---- patching ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"])
def test_patching_clean_into_clean_changes_nothing(model, pair, site):
    clean, _ = pair
    table = patch_resid(model, clean, clean, METRIC, site=site)
    assert table.shape == (2, T) and table.dtype == torch.float32
    assert torch.allclose(table, torch.full_like(table, values(model, clean)), atol=1e-5)
    assert no_listeners(model)


@pytest.mark.parametrize("site", ["z", "pattern", "result"])
@pytest.mark.parametrize("by_position", [False, True])
def test_head_patching_clean_into_clean_changes_nothing(model, pair, site, by_position):
    clean, _ = pair
    table = patch_heads(model, clean, clean, METRIC, site=site, by_position=by_position)
    assert table.shape == ((2, T, 4) if by_position else (2, 4))
    assert torch.allclose(table, torch.full_like(table, values(model, clean)), atol=1e-5)


def test_layer_0_carries_the_whole_answer_where_the_inputs_differ(model, pair):
    clean, corrupted = pair
    norm = normalized_metric(values(model, clean), values(model, corrupted))
    row = norm(patch_resid(model, clean, corrupted, METRIC))[0]  # resid_pre of layer 0: the embeddings
    expected = torch.zeros(T)
    expected[4] = 1.0  # the one position that differs: patching it is the clean run
    assert torch.allclose(row, expected, atol=1e-4)


def test_patching_the_last_residual_at_the_metric_position_is_the_clean_run(model, pair):
    clean, corrupted = pair
    table = patch_resid(model, clean, corrupted, METRIC, site="resid_post")
    assert table[-1, -1] == pytest.approx(values(model, clean), abs=1e-5)
    assert torch.allclose(table[-1, :-1], torch.full((T - 1,), values(model, corrupted)), atol=1e-5)


def test_batched_runs_equal_single_runs_and_a_hand_written_patch(model, pair):
    clean, corrupted = pair
    batched = patch_resid(model, clean, corrupted, METRIC, site="attn_out")
    assert torch.allclose(
        batched, patch_resid(model, clean, corrupted, METRIC, site="attn_out", batch_size=1), atol=1e-5
    )
    assert torch.allclose(
        batched, patch_resid(model, clean, corrupted, METRIC, site="attn_out", batch_size=5), atol=1e-5
    )
    from gptviz import capture

    with torch.no_grad(), capture(model, "blocks.1.hook_attn_out") as cap:
        model(clean)

    def patch(x, hook):
        x = x.clone()
        x[:, 7] = cap["blocks.1.hook_attn_out"][:, 7]
        return x

    with torch.no_grad(), hooks(model, {"blocks.1.hook_attn_out": patch}):
        by_hand = float(METRIC(model(corrupted)))
    assert batched[1, 7] == pytest.approx(by_hand, abs=1e-5)


def test_one_head_patched_everywhere_is_attn_out_patched_when_the_layer_has_one_head(pair):
    clean, corrupted = pair
    one = make(n_head=1)
    heads = patch_heads(one, clean, corrupted, METRIC, site="z", by_position=True)  # (L, T, 1)
    attn = patch_resid(one, clean, corrupted, METRIC, site="attn_out")  # (L, T)
    assert torch.allclose(heads[..., 0], attn, atol=1e-5)
    assert not torch.allclose(attn, torch.full_like(attn, values(one, corrupted)), atol=1e-3)  # patches do something


def test_z_and_result_are_the_same_patch(model, pair):
    clean, corrupted = pair
    z = patch_heads(model, clean, corrupted, METRIC, site="z")
    assert torch.allclose(z, patch_heads(model, clean, corrupted, METRIC, site="result"), atol=1e-5)
    assert z.std() > 1e-3  # the heads differ: the test would see a wrong head index


def test_head_patching_on_a_grouped_query_model(pair):
    clean, corrupted = pair
    m = llama()
    for site in ("z", "pattern", "result"):
        assert torch.allclose(
            patch_heads(m, clean, clean, METRIC, site=site), torch.full((2, 4), values(m, clean)), atol=1e-5
        )
    z = patch_heads(m, clean, corrupted, METRIC, by_position=True)
    assert z.shape == (2, T, 4)
    assert torch.allclose(z, patch_heads(m, clean, corrupted, METRIC, site="result", by_position=True), atol=1e-5)
    norm = normalized_metric(values(m, clean), values(m, corrupted))
    assert torch.allclose(norm(patch_resid(m, clean, corrupted, METRIC))[0, 4], torch.tensor(1.0), atol=1e-4)


# ---- ablation ---------------------------------------------------------------------------------------------


def knocked_out(model, layer, head, mean_z=None) -> GPT:
    """A copy with head `head` of `layer` removed by hand: its columns of c_proj zeroed (mean: folded into bias)."""
    m = copy.deepcopy(model)
    hs = m.config.head_size
    proj = m.blocks[layer].attn.c_proj
    with torch.no_grad():
        cols = slice(head * hs, (head + 1) * hs)
        if mean_z is not None:
            proj.bias += proj.weight[:, cols] @ mean_z
        proj.weight[:, cols] = 0
    return m


@pytest.mark.parametrize("build", [make, llama], ids=["gpt2", "llama"])
def test_zero_ablation_is_the_head_zeroed_by_hand(build, pair):
    clean, _ = pair
    m = build()
    table = ablate_heads(m, clean)
    assert table.shape == (2, 4)
    base = loss(m, clean)
    for layer in range(2):
        for head in range(4):
            by_hand = loss(knocked_out(m, layer, head), clean)
            assert table[layer, head] == pytest.approx(by_hand - base, abs=1e-5)
    assert table.abs().max() > 1e-3


def test_mean_ablation_is_the_mean_output_folded_into_the_bias(model, pair):
    clean, _ = pair
    from gptviz import capture

    with torch.no_grad(), capture(model, "blocks.*.attn.hook_z") as cap:
        model(clean)
    table = ablate_heads(model, clean, kind="mean")
    base = loss(model, clean)
    for layer, head in [(0, 1), (1, 3)]:
        mean_z = cap[f"blocks.{layer}.attn.hook_z"][:, :, head].mean((0, 1))  # (hs,)
        by_hand = loss(knocked_out(model, layer, head, mean_z), clean)
        assert table[layer, head] == pytest.approx(by_hand - base, abs=1e-5)


def test_ablation_with_a_metric_and_the_models_mode_is_kept(pair):
    clean, _ = pair
    m = make(dropout=0.5).train()
    table = ablate_heads(m, clean, metric=METRIC)
    assert m.training and no_listeners(m)
    m.eval()
    assert table[1, 2] == pytest.approx(values(knocked_out(m, 1, 2), clean) - values(m, clean), abs=1e-5)


# ---- bad inputs ---------------------------------------------------------------------------------------------


def test_bad_inputs_say_what_to_do(model, pair):
    clean, corrupted = pair
    with pytest.raises(ValueError, match=r"same shape.*line up token for token"):
        patch_resid(model, clean, corrupted[:, :-1], METRIC)
    with pytest.raises(ValueError, match=r"unknown residual site 'resid'.*'resid_pre'"):
        patch_resid(model, clean, corrupted, METRIC, site="resid")
    with pytest.raises(ValueError, match=r"unknown head site 'q'.*'z', 'pattern', 'result'"):
        patch_heads(model, clean, corrupted, METRIC, site="q")
    with pytest.raises(ValueError, match=r"no 'blocks.0.hook_mlp_out'.*mlp=False.*'resid_pre'"):
        patch_resid(make(mlp=False), clean, corrupted, METRIC, site="mlp_out")
    with pytest.raises(ValueError, match=r"no 'blocks.0.hook_resid_mid'.*parallel"):
        patch_resid(make(parallel_residual=True), clean, corrupted, METRIC, site="resid_mid")
    with pytest.raises(ValueError, match="kind must be 'zero' or 'mean'"):
        ablate_heads(model, clean, kind="random")
    with pytest.raises(TypeError, match="metric must be a function"):
        patch_resid(model, clean, corrupted, 3)
    with pytest.raises(ValueError, match="token ids"):
        patch_resid(model, clean.float(), corrupted.float(), METRIC)
    with pytest.raises(ValueError, match=r"one number.*\.mean\(\)"):
        patch_resid(model, clean, corrupted, lambda logits: logits[:, -1, 0])
    assert no_listeners(model)  # an error inside a patched run leaves no hook behind
    with pytest.raises(ValueError, match="same on the clean and the corrupted input"):
        normalized_metric(1.5, torch.tensor(1.5))
    with pytest.raises(ValueError, match=r"answer_id 99 is outside the vocabulary \(0..60\)"):
        patch_resid(model, clean, corrupted, logit_diff(99, 0))
    with pytest.raises(ValueError, match="batch_size"):
        patch_resid(model, clean, corrupted, METRIC, batch_size=0)


def test_one_sequence_may_be_given_without_a_batch_dim(model, pair):
    clean, corrupted = pair
    assert torch.allclose(
        patch_resid(model, clean[0], corrupted[0], METRIC), patch_resid(model, clean[:1], corrupted[:1], METRIC)
    )
    assert "blocks.0.attn.hook_result" in hook_names(model)


# ---- figures ----------------------------------------------------------------------------------------------


def test_the_position_heatmap_draws_the_table_with_token_ticks_centred_on_0():
    table = torch.tensor([[0.0, 1.0, -0.2], [0.5, 0.1, 0.0]])
    fig = plots.patching_heatmap(table, tokens=["a", "b", "c"], site="attn_out")
    heat = fig.data[0]
    assert heat.type == "heatmap" and heat.z.shape == (2, 3) and list(heat.z[0]) == pytest.approx([0.0, 1.0, -0.2])
    assert heat.zmid == 0 and heat.zmin == -heat.zmax and heat.zmax >= 1
    assert list(fig.layout.xaxis.ticktext) == ["a<br>0", "b<br>1", "c<br>2"]  # token, then its position
    title = fig.layout.title.text
    assert "attn_out" in title and "1 = " in title and "0 = " in title
    with pytest.raises(ValueError, match="one per position"):
        plots.patching_heatmap(table, tokens=["a"])
    with pytest.raises(ValueError, match=r"\(L, T\) table"):
        plots.patching_heatmap(torch.zeros(2, 3, 4))


def test_the_head_heatmaps_draw_layers_by_heads():
    table = torch.arange(8.0).view(2, 4) - 3
    fig = plots.head_patching_heatmap(table)
    assert fig.data[0].z.shape == (2, 4) and fig.data[0].zmid == 0
    assert fig.data[0].zmax == pytest.approx(4.0)  # symmetric around 0: the largest |value|
    assert "one head at a time" in fig.layout.title.text and "1 = " in fig.layout.title.text
    ablation = plots.head_ablation_heatmap(table, kind="mean")
    assert ablation.data[0].z.shape == (2, 4)
    assert "replaced by its mean" in ablation.layout.title.text and "0 = " in ablation.layout.title.text
    with pytest.raises(ValueError, match=r"\(L, nh\) table"):
        plots.head_patching_heatmap(torch.zeros(4))


# ---- TransformerLens ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [make, llama], ids=["gpt2", "llama"])
def test_the_same_numbers_as_transformer_lens_patching(build, pair):
    """TransformerLens's own patching functions on the same weights (skipped where it is not installed)."""
    pytest.importorskip("transformer_lens", reason="TransformerLens is not installed (pip install 'gptviz[bench]')")
    from transformer_lens import patching as tl_patching

    from gptviz.transformer_lens import to_transformer_lens

    clean, corrupted = pair
    m = build()
    tl = to_transformer_lens(m)
    _, clean_cache = tl.run_with_cache(clean)
    ours_and_theirs = [
        (patch_resid(m, clean, corrupted, METRIC, site="resid_pre"), tl_patching.get_act_patch_resid_pre),
        (patch_resid(m, clean, corrupted, METRIC, site="attn_out"), tl_patching.get_act_patch_attn_out),
        (patch_resid(m, clean, corrupted, METRIC, site="mlp_out"), tl_patching.get_act_patch_mlp_out),
        (patch_heads(m, clean, corrupted, METRIC), tl_patching.get_act_patch_attn_head_out_all_pos),
        (patch_heads(m, clean, corrupted, METRIC, by_position=True), tl_patching.get_act_patch_attn_head_out_by_pos),
        (patch_heads(m, clean, corrupted, METRIC, site="pattern"), tl_patching.get_act_patch_attn_head_pattern_all_pos),
    ]
    for i, (ours, theirs) in enumerate(ours_and_theirs):
        assert torch.allclose(ours, theirs(tl, corrupted, clean_cache, METRIC).cpu(), atol=1e-5), f"table {i}"
    by_query = tl_patching.get_act_patch_attn_head_pattern_by_pos(
        tl, corrupted, clean_cache, METRIC
    ).cpu()  # (L, nh, T)
    ours = patch_heads(m, clean, corrupted, METRIC, site="pattern", by_position=True)  # (L, T, nh)
    assert torch.allclose(ours, by_query.permute(0, 2, 1), atol=1e-5)
