"""Hook points: the pinned name list, capture, interventions, cleanup, budgets, error messages."""

import pytest
import torch

import gptviz
from gptviz import GPT, CaptureBudgetError, GPTConfig, HookNameError, capture, hooks, run_with_cache
from gptviz.hooks import estimate_capture_bytes, hook_points

BLOCK_HOOKS = [
    "hook_resid_pre",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
]


def test_hook_names_are_pinned(tiny_model):
    """TransformerLens's names, in forward order; hook_logits is gptviz's own."""
    expected = ["hook_embed", "hook_pos_embed"]
    for layer in range(2):
        expected += [f"blocks.{layer}.{h}" for h in BLOCK_HOOKS]
    expected += ["ln_final.hook_scale", "ln_final.hook_normalized", "hook_logits"]
    assert gptviz.hook_names(tiny_model) == expected


def test_family_hook_names_are_pinned():
    """RoPE adds hook_rot_q/k after hook_q/k; a gated MLP adds hook_pre_linear; a parallel block has no middle."""
    llama = GPT(
        GPTConfig(
            vocab_size=11,
            block_size=8,
            n_layer=1,
            n_head=2,
            n_kv_head=1,
            n_embd=8,
            pos_encoding="rotary",
            norm="rmsnorm",
            mlp_gated=True,
            activation="silu",
            bias=False,
        )
    )
    block = [h for h in BLOCK_HOOKS if h != "attn.hook_v"]
    block[block.index("attn.hook_k") + 1 : block.index("attn.hook_k") + 1] = [
        "attn.hook_v",
        "attn.hook_rot_q",
        "attn.hook_rot_k",
    ]
    block.insert(block.index("mlp.hook_post"), "mlp.hook_pre_linear")
    assert [n.removeprefix("blocks.0.") for n in gptviz.hook_names(llama)] == [
        "hook_embed",
        "hook_pos_embed",
        *block,
        "ln_final.hook_scale",
        "ln_final.hook_normalized",
        "hook_logits",
    ]
    neox = GPT(
        GPTConfig(
            vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_encoding="rotary", parallel_residual=True
        )
    )
    assert "blocks.0.hook_resid_mid" not in gptviz.hook_names(neox)


def test_old_names_say_the_new_spelling(tiny_model):
    for old, new in (
        ("hook_tok_emb", "hook_embed"),
        ("blocks.0.attn.hook_scores", "blocks.0.attn.hook_attn_scores"),
        ("hook_final_ln", "ln_final.hook_normalized"),
        ("hook_pos_emb", "hook_pos_embed"),
    ):
        with pytest.raises(HookNameError, match=f"renamed '{new}'"):
            capture(tiny_model, old).__enter__()


def test_hooks_are_called_as_transformer_lens_calls_them(tiny_model):
    """fn(activation, hook=point): keyword-only `hook` works; hook.layer(); a wrong shape is refused by name."""
    seen = []

    def kw_only(z, *, hook):
        seen.append((hook.name, hook.layer(), tuple(z.shape)))

    with torch.no_grad(), hooks(tiny_model, {"blocks.1.attn.hook_z": kw_only}):
        tiny_model(x())
    assert seen == [("blocks.1.attn.hook_z", 1, (2, 10, 4, 8))]  # (B, T, nh, hs) as in TransformerLens
    from gptviz.hooks import HookShapeError

    with pytest.raises(HookShapeError, match=r"at blocks\.0\.attn\.hook_z returned \(2, 4, 10, 8\)"):
        with torch.no_grad(), hooks(tiny_model, {"blocks.0.attn.hook_z": lambda z, hook: z.transpose(1, 2)}):
            tiny_model(x())


def test_head_ablation_uses_transformer_lens_layout(tiny_model):
    """z[:, :, h] = 0 zeroes head h (it used to zero position h): the habit TransformerLens users bring."""
    head = 1

    def ablate(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    with torch.no_grad():
        with (
            capture(tiny_model, "blocks.0.attn.hook_result") as cap,
            hooks(tiny_model, {"blocks.0.attn.hook_z": ablate}),
        ):
            tiny_model(x())
    result = cap["blocks.0.attn.hook_result"]  # (B, T, nh, C)
    assert result[:, :, head].abs().sum() == 0 and result[:, :, 0].abs().sum() > 0


def test_hook_result_sums_to_the_attention_output(tiny_model):
    with torch.no_grad(), capture(tiny_model, ["blocks.0.attn.hook_result", "blocks.0.hook_attn_out"]) as cap:
        tiny_model(x())
    out = cap["blocks.0.attn.hook_result"].sum(2) + tiny_model.blocks[0].attn.c_proj.bias
    assert torch.allclose(out, cap["blocks.0.hook_attn_out"], atol=1e-6)


def test_layer_norm_hooks_match_the_fast_path(tiny_model):
    with torch.no_grad():
        fast = tiny_model(x())
        with capture(tiny_model, ["blocks.*.ln1.hook_scale", "ln_final.hook_normalized"]) as cap:
            explicit = tiny_model(x())
    assert (fast - explicit).abs().max() <= 1e-5
    assert cap["blocks.0.ln1.hook_scale"].shape == (2, 10, 1)


def x():
    return torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(0))


def test_every_hook_fires_with_its_documented_shape(tiny_model):
    with torch.no_grad(), capture(tiny_model, "*") as cap:
        tiny_model(x())
    shapes = tiny_model.hook_shapes(2, 10)
    assert set(cap.keys()) == set(tiny_model.hook_names)
    for name in tiny_model.hook_names:
        assert tuple(cap[name].shape) == shapes[name], name


def test_capture_values_are_what_the_model_computes(tiny_model):
    with (
        torch.no_grad(),
        capture(tiny_model, ["hook_logits", "blocks.*.attn.hook_pattern", "blocks.0.attn.hook_attn_scores"]) as cap,
    ):
        logits = tiny_model(x())
    assert torch.equal(cap["hook_logits"], logits)
    pattern = cap["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 4, 10), atol=1e-6)  # rows sum to 1
    assert torch.all(pattern.triu(1) == 0)  # causal: nothing above the diagonal
    assert torch.allclose(torch.softmax(cap["blocks.0.attn.hook_attn_scores"], -1), pattern)
    assert torch.isinf(cap["blocks.0.attn.hook_attn_scores"].triu(1)[..., 0, 1:]).all()  # masked with -inf


def test_captured_tensors_are_detached_copies(tiny_model):
    with capture(tiny_model, "blocks.0.hook_resid_post") as cap:
        out = tiny_model(x())
    t = cap["blocks.0.hook_resid_post"]
    assert not t.requires_grad and out.requires_grad


def test_capture_in_train_mode_records_pre_dropout_pattern():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=1, n_head=2, n_embd=16, dropout=0.5)).train()
    with capture(m, "blocks.0.attn.hook_pattern") as cap:
        m(x())
    assert torch.allclose(cap["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(2, 2, 10), atol=1e-6)


def test_nothing_stays_registered_even_on_exception(tiny_model):
    with pytest.raises(RuntimeError, match="boom"):
        with capture(tiny_model, "*"), hooks(tiny_model, {"blocks.*.attn.hook_z": lambda t, h: t}):
            assert any(p.active for p in hook_points(tiny_model).values())
            raise RuntimeError("boom")
    assert not any(p.active for p in hook_points(tiny_model).values())


def test_ablating_a_head_changes_the_output_and_matches_manual_computation(tiny_model):
    def zero_head(z, hook):
        z = z.clone()
        z[:, :, 1] = 0  # (B, T, nh, hs): silence head 1
        return z

    with torch.no_grad():
        clean = tiny_model(x())
        with hooks(tiny_model, {"blocks.0.attn.hook_z": zero_head}):
            ablated = tiny_model(x())
        # the same ablation done by hand: zero head 1's slice of c_proj's input
        attn = tiny_model.blocks[0].attn
        w = attn.c_proj.weight.data.clone()
        attn.c_proj.weight.data[:, 8:16] = 0
        manual = tiny_model(x())
        attn.c_proj.weight.data.copy_(w)
    assert not torch.allclose(clean, ablated)
    assert torch.allclose(ablated, manual, atol=1e-6)


def test_patching_the_residual_stream(tiny_model):
    a, b = x(), torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with capture(tiny_model, "blocks.1.hook_resid_post") as cap:
            target = tiny_model(b)
        with hooks(tiny_model, {"blocks.1.hook_resid_post": lambda t, h: cap["blocks.1.hook_resid_post"]}):
            patched = tiny_model(a)
    assert torch.allclose(patched, target, atol=1e-6)  # the last residual decides the logits


def test_observer_hooks_see_the_hook_name(tiny_model):
    seen = []
    with torch.no_grad(), hooks(tiny_model, {"blocks.*.attn.hook_q": lambda t, h: seen.append(h.name)}):
        tiny_model(x())
    assert seen == ["blocks.0.attn.hook_q", "blocks.1.attn.hook_q"]


def test_unknown_hook_name_lists_the_closest(tiny_model):
    with pytest.raises(HookNameError, match=r"Closest: blocks\.0\.attn\.hook_pattern"):
        with capture(tiny_model, "blocks.0.attn.hook_patern"):
            pass
    with pytest.raises(KeyError, match="hook_pattern"):  # a HookNameError is a KeyError
        with hooks(tiny_model, {"blocks.9.attn.hook_pattern": lambda t, h: None}):
            pass
    with pytest.raises(TypeError, match="must be a function"):
        with hooks(tiny_model, {"hook_logits": 3}):
            pass


def test_keep_all_records_every_call(tiny_model):
    with torch.no_grad(), capture(tiny_model, "hook_logits", keep="all") as cap:
        tiny_model(x())
        tiny_model(x()[:, :4])
    assert [t.shape[1] for t in cap.history("hook_logits")] == [10, 4]
    assert cap["hook_logits"].shape[1] == 4


def test_hook_that_never_fired_says_so():
    m = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=1, n_head=2, n_embd=16, pos_encoding="none"))
    with torch.no_grad(), capture(m, "hook_pos_embed") as cap:
        m(x())
    with pytest.raises(KeyError, match="never fired"):
        cap["hook_pos_embed"]


def test_capture_budget_refuses_with_a_message_and_leaves_nothing_behind(tiny_model):
    need = estimate_capture_bytes(tiny_model, "blocks.*.attn.hook_pattern", 2, 10)
    assert need == 2 * (2 * 4 * 10 * 10) * 4  # L x (B x nh x T x T) x fp32
    with pytest.raises(CaptureBudgetError, match=r"over the capture budget.*Narrow it"):
        with capture(tiny_model, "blocks.*.attn.hook_pattern", budget_mb=need / 2**20 / 2) as cap:
            tiny_model(x())
    assert len(cap) == 0  # refused before anything was stored
    assert not any(p.active for p in hook_points(tiny_model).values())
    with capture(tiny_model, "blocks.*.attn.hook_pattern", budget_mb=need / 2**20 * 1.01) as cap:
        tiny_model(x())
    assert len(cap) == 2


def test_run_with_cache(tiny_model):
    logits, cache = run_with_cache(tiny_model, x(), "blocks.*.attn.hook_pattern", to_cpu=True)
    assert logits.shape == (2, 10, 97) and cache["blocks.1.attn.hook_pattern"].device.type == "cpu"


def test_in_place_edits_at_hooks_work_with_autograd_and_never_reach_a_buffer():
    """TransformerLens's head-ablation habit edits v in place (a slice of one q/k/v product) with grad on; an edit of
    hook_pos_embed must not write into the sinusoidal table (it is an expanded view of a buffer)."""
    from functools import partial

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, pos_encoding="sinusoidal"))
    model.eval()
    ids = torch.randint(0, 50, (3, 10))
    before = model(ids).detach()

    def ablate(v, hook, h):
        v[:, :, h, :] = 0.0
        return v

    with torch.no_grad():
        want = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_v", partial(ablate, h=2))])
    got = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_v", partial(ablate, h=2))])
    got.sum().backward()  # autograd through the edited copy
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, before)
    model.run_with_hooks(ids, fwd_hooks=[("hook_pos_embed", lambda x, hook: x.zero_())])
    model.run_with_hooks(ids[:1], fwd_hooks=[("hook_pos_embed", lambda x, hook: x.zero_())])
    assert torch.equal(model(ids), before)  # the table is untouched
