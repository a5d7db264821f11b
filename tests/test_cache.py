"""ActivationCache, GPT.run_with_cache and GPT.run_with_hooks: TransformerLens's indexing and residual-stream analysis.

Checked against explicit formulas (the issue's "stored expectations computed from our own explicit formulas") on a
tiny GPT-2 and a tiny Llama (RMSNorm, RoPE, grouped-query heads, SwiGLU); and against TransformerLens itself on the
same weights when it is installed (the `bench` extra).
"""

import inspect
from types import SimpleNamespace

import pytest
import torch
from conftest import LLAMA_PARTS

import gptviz
from gptviz import GPT, GPTConfig, HookNameError
from gptviz.cache import ActivationCache, act_name
from gptviz.hooks import DEFAULT_CAPTURE_BUDGET_MB, Capture, hook_points

CONFIGS = {
    "gpt2": dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32),
    "llama": dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, **LLAMA_PARTS),
    "neox": dict(  # parallel residual: attention and MLP read the same resid_pre
        vocab_size=50,
        block_size=32,
        n_layer=2,
        n_head=4,
        n_embd=32,
        pos_encoding="rotary",
        rotary_dim=4,
        parallel_residual=True,
        activation="gelu_exact",
    ),
    "attn_only": dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32, mlp=False, layer_norm=False),
}
B, T = 2, 9


def build(kind: str) -> GPT:
    torch.manual_seed(0)
    # init_std=0.2: activations of order 1, so the tolerances below mean something
    model = GPT(GPTConfig(**CONFIGS[kind], init_std=0.2)).eval()
    with (
        torch.no_grad()
    ):  # random init leaves norms at 1 / 0 and biases at 0, which would hide a missing weight or bias
        for name, p in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return model


def run(kind: str, **kwargs) -> SimpleNamespace:
    model = build(kind)
    ids = torch.randint(0, 50, (B, T), generator=torch.Generator().manual_seed(1))
    logits, cache = model.run_with_cache(ids, **kwargs)
    return SimpleNamespace(model=model, ids=ids, logits=logits, cache=cache, cfg=model.config)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def r(request):
    return run(request.param)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- explicit formulas, written apart from gptviz.cache --------------------------------------------------------
def W_U(model: GPT) -> torch.Tensor:
    return model.lm_head.weight.detach().T  # (C, V)


def norm_share(model: GPT, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """What x contributes to a norm's hook_normalized when the whole stream's scale was `scale`."""
    if model.config.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return x / scale


def affine(norm, normalized: torch.Tensor) -> torch.Tensor:
    """A norm's output from its hook_normalized: times the weight, plus the bias (LayerNorm)."""
    return normalized * norm.weight.detach() + bias_of(norm)


def bias_of(norm) -> torch.Tensor:
    return norm.bias.detach() if getattr(norm, "bias", None) is not None else torch.zeros_like(norm.weight.detach())


def full_norm(model: GPT, norm, x: torch.Tensor) -> torch.Tensor:
    """A norm with x's own statistics, written out."""
    if model.config.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return affine(norm, x / (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt())


# ---- names and indexing ---------------------------------------------------------------------------------------
SHORT_NAMES = [
    (("pattern", 0), "blocks.0.attn.hook_pattern"),
    (("attn", 0), "blocks.0.attn.hook_pattern"),
    (("attn_scores", 1), "blocks.1.attn.hook_attn_scores"),
    (("resid_pre", 3), "blocks.3.hook_resid_pre"),
    (("resid_mid", 0), "blocks.0.hook_resid_mid"),
    (("attn_out", 1), "blocks.1.hook_attn_out"),
    (("mlp_out", 1), "blocks.1.hook_mlp_out"),
    (("q", 2), "blocks.2.attn.hook_q"),
    (("value", 1, "a"), "blocks.1.attn.hook_v"),
    (("result", 0), "blocks.0.attn.hook_result"),
    (("embed",), "hook_embed"),
    (("pos_embed",), "hook_pos_embed"),
    (("scale",), "ln_final.hook_scale"),
    (("normalized",), "ln_final.hook_normalized"),
    (("normalized", 1, "ln2"), "blocks.1.ln2.hook_normalized"),
    (("scale", 0, "ln1"), "blocks.0.ln1.hook_scale"),
    (("pre", 2), "blocks.2.mlp.hook_pre"),
    (("post", 0), "blocks.0.mlp.hook_post"),
    (("pre_linear", 1), "blocks.1.mlp.hook_pre_linear"),
    (("k6",), "blocks.6.attn.hook_k"),
    (("scale4ln1",), "blocks.4.ln1.hook_scale"),
    (("pre5",), "blocks.5.mlp.hook_pre"),
    (("blocks.0.attn.hook_q",), "blocks.0.attn.hook_q"),
    (("hook_logits",), "hook_logits"),
]


@pytest.mark.parametrize("args, full", SHORT_NAMES)
def test_act_name_spells_transformer_lens_names(args, full):
    assert act_name(*args) == full


def test_act_name_reads_underscored_names_with_a_layer_suffix():
    # TransformerLens turns "resid_pre5" into "hook_resid_pre5"; gptviz reads the layer, as "k6" is read
    assert act_name("resid_pre5") == "blocks.5.hook_resid_pre"


def test_cache_is_indexed_as_transformer_lens(r):
    c, cfg = r.cache, r.cfg
    assert isinstance(c, ActivationCache) and isinstance(c, Capture) and c.model is r.model
    assert c["pattern", 0] is c["blocks.0.attn.hook_pattern"]
    assert c["resid_pre", 1] is c["blocks.1.hook_resid_pre"]
    assert c["normalized", 1, "ln2"] is c["blocks.1.ln2.hook_normalized"]
    assert c["scale"] is c["ln_final.hook_scale"] and c["scale"].shape == (B, T, 1)
    assert c["resid_post", -1] is c["blocks.1.hook_resid_post"]  # negative layers count from the end
    assert c["k1"] is c["blocks.1.attn.hook_k"] and c["embed"] is c["hook_embed"]
    assert c["q", 1].shape == (B, T, cfg.n_head, cfg.head_size)
    assert c["k", 1].shape == (B, T, cfg.kv_heads, cfg.head_size)
    assert c["pattern", 1].shape == (B, cfg.n_head, T, T)
    assert c["result", 0].shape == (B, T, cfg.n_head, cfg.n_embd)
    assert "blocks.0.attn.hook_pattern" in c
    fired = [n for n in gptviz.hook_names(r.model) if not (n == "hook_pos_embed" and cfg.pos_encoding == "rotary")]
    assert c.keys() == fired  # every hook point that fired, in forward order
    assert [n for n, _ in c.items()] == fired and len(c.values()) == len(fired)
    close(r.logits, r.model(r.ids))  # caching everything (explicit attention, per-head results) changes nothing


# ---- accumulated_resid ----------------------------------------------------------------------------------------
def test_accumulated_resid_stacks_the_stream_before_each_block(r):
    c = r.cache
    stack, labels = c.accumulated_resid(return_labels=True)
    assert labels == ["0_pre", "1_pre", "final_post"] and stack.shape == (3, B, T, r.cfg.n_embd)
    for i, name in enumerate(["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]):
        assert torch.equal(stack[i], c[name])
    assert c.accumulated_resid(incl_mid=True, return_labels=True)[1] == [
        "0_pre",
        "0_mid",
        "1_pre",
        "1_mid",
        "final_post",
    ]
    mid, labels = c.accumulated_resid(layer=1, mlp_input=True, return_labels=True)
    assert labels == ["0_pre", "1_pre", "1_mid"] and torch.equal(mid[-1], c["resid_mid", 1])
    assert torch.equal(c.accumulated_resid(pos_slice=-1), stack[:, :, -1])  # an int position drops T
    assert torch.equal(c.accumulated_resid(pos_slice=(2, 5)), stack[:, :, 2:5])


def test_accumulated_resid_apply_ln_is_the_logit_lens(r):
    c, model = r.cache, r.model
    lens = c.accumulated_resid(apply_ln=True)  # each stage through the final norm with its own statistics
    close(lens[-1], affine(model.ln_f, c["ln_final.hook_normalized"]))  # the model's ln_final output
    close((lens @ W_U(model))[-1], r.logits)
    for i, l in enumerate(range(2)):
        close(lens[i], full_norm(model, model.ln_f, c["resid_pre", l]))
    # into a block: that block's ln1 cached scale, before its weight (TransformerLens's apply_ln_to_stack)
    into_1 = c.accumulated_resid(layer=1, apply_ln=True)
    close(into_1[-1], c["normalized", 1, "ln1"])
    close(into_1[0], norm_share(model, c["resid_pre", 0], c["scale", 1, "ln1"]))


# ---- decompose_resid ------------------------------------------------------------------------------------------
def test_decompose_resid_sums_to_the_stream(r):
    c = r.cache
    stack, labels = c.decompose_resid(return_labels=True)
    embeds = ["embed", "pos_embed"] if r.cfg.pos_encoding == "learned" else ["embed"]  # RoPE adds no vector
    assert labels == embeds + ["0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    close(stack.sum(0), c["resid_post", 1])
    close(c.decompose_resid(layer=1).sum(0), c["resid_pre", 1])
    into_mlp, labels = c.decompose_resid(layer=1, mlp_input=True, return_labels=True)
    assert labels[-1] == "1_attn_out"
    close(into_mlp.sum(0), c["resid_mid", 1])
    assert c.decompose_resid(mode="attn", incl_embeds=False, return_labels=True)[1] == ["0_attn_out", "1_attn_out"]
    assert c.decompose_resid(mode="mlp", incl_embeds=False, return_labels=True)[1] == ["0_mlp_out", "1_mlp_out"]
    assert c.decompose_resid(layer=0, return_labels=True)[1] == embeds


def test_decompose_resid_apply_ln_splits_the_logits(r):
    """Shares of hook_normalized, summed, through ln_final's weight and bias, times W_U: the logits."""
    c, model = r.cache, r.model
    shares = c.decompose_resid(apply_ln=True)
    close(shares.sum(0), c["ln_final.hook_normalized"])
    close(affine(model.ln_f, shares.sum(0)) @ W_U(model), r.logits)
    into_mlp = c.decompose_resid(layer=1, mlp_input=True, apply_ln=True)  # into block 1's ln2
    close(into_mlp.sum(0), c["normalized", 1, "ln2"])
    # direct logit attribution: the components' attributions add up to the logit of each next token
    targets = torch.roll(r.ids, -1, dims=1)  # (B, T)
    attrs = c.logit_attrs(c.decompose_resid(), targets)  # (k, B, T)
    logit = r.logits.gather(-1, targets[..., None])[..., 0]
    close(attrs.sum(0) + (bias_of(model.ln_f) @ W_U(model))[targets], logit)


# ---- stack_head_results ---------------------------------------------------------------------------------------
def test_stack_head_results_are_z_times_W_O_per_head(r):
    c, model, cfg = r.cache, r.model, r.cfg
    nh, hs = cfg.n_head, cfg.head_size
    stack, labels = c.stack_head_results(return_labels=True)
    assert stack.shape == (2 * nh, B, T, cfg.n_embd)
    assert labels == [f"L{l}H{h}" for l in range(2) for h in range(nh)]
    for l in range(2):
        proj = model.blocks[l].attn.c_proj
        b_O = proj.bias.detach() if proj.bias is not None else 0.0
        close(stack[l * nh : (l + 1) * nh].sum(0) + b_O, c["attn_out", l])
        for h in range(nh):
            W_O_h = proj.weight.detach()[:, h * hs : (h + 1) * hs].T  # (hs, C)
            close(stack[l * nh + h], c["z", l][:, :, h] @ W_O_h)
    first, labels = c.stack_head_results(layer=1, incl_remainder=True, return_labels=True)
    assert labels[-1] == "remainder" and first.shape[0] == nh + 1
    close(first.sum(0), c["resid_pre", 1])
    assert c.stack_head_results(layer=0).shape == (0, B, T, cfg.n_embd)
    close(c.stack_head_results(apply_ln=True), c.apply_ln_to_stack(stack))
    close(c.stack_head_results(pos_slice=-1), stack[:, :, -1])


def test_stack_head_results_from_z_when_results_were_not_cached():
    r = run("gpt2", names_filter=lambda n: not n.endswith("hook_result"))
    assert "blocks.0.attn.hook_result" not in r.cache
    full = run("gpt2").cache
    close(r.cache.stack_head_results(), full.stack_head_results())


# ---- apply_ln_to_stack and logit_attrs ------------------------------------------------------------------------
def test_apply_ln_to_stack_uses_the_cached_scale(r):
    c, model = r.cache, r.model
    stack = c.decompose_resid()
    close(c.apply_ln_to_stack(stack), norm_share(model, stack, c["scale"]))
    close(c.apply_ln_to_stack(stack, layer=1, mlp_input=True), norm_share(model, stack, c["scale", 1, "ln2"]))
    last = c.decompose_resid(pos_slice=-1)  # (k, B, C)
    close(c.apply_ln_to_stack(last, pos_slice=-1), norm_share(model, last, c["scale"][:, -1]))
    one_row = c.apply_ln_to_stack(stack, batch_slice=1)  # the batch slice is taken of stack and scale
    close(one_row, norm_share(model, stack[:, 1], c["scale"][1]))


def test_logit_attrs_match_the_direct_computation(r):
    c, model = r.cache, r.model
    stack = c.decompose_resid(pos_slice=-1)  # (k, B, C) at the last position
    right, wrong = torch.tensor([3, 41]), torch.tensor([7, 7])
    shares = norm_share(model, stack, c["scale"][:, -1]) * model.ln_f.weight.detach()  # (k, B, C) as W_U reads them
    direct = (shares * W_U(model)[:, right].T).sum(-1)  # (k, B)
    close(c.logit_attrs(stack, right, pos_slice=-1), direct)
    diff = (shares * (W_U(model)[:, right] - W_U(model)[:, wrong]).T).sum(-1)
    close(c.logit_attrs(stack, right, incorrect_tokens=wrong, pos_slice=-1), diff)
    one = c.logit_attrs(stack, 3, pos_slice=-1)  # one id: the same direction for every row
    assert one.shape == (stack.shape[0], B)
    close(one[:, 0], direct[:, 0])
    close(c.logit_attrs(stack, torch.tensor(3), pos_slice=-1), one)
    close(c.logit_attrs(stack, 3, pos_slice=-1, batch_slice=0), one[:, 0])


def test_a_model_without_norms_attributes_without_scaling():
    r = run("attn_only")  # notebook 06's toy: attention only, no LayerNorm
    c = r.cache
    stack, labels = c.decompose_resid(return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "1_attn_out"]
    close(stack.sum(0) @ W_U(r.model), r.logits)
    targets = torch.roll(r.ids, -1, dims=1)
    close(c.logit_attrs(stack, targets).sum(0), r.logits.gather(-1, targets[..., None])[..., 0])
    for call in (lambda: c.apply_ln_to_stack(stack), lambda: c.decompose_resid(apply_ln=True)):
        with pytest.raises(ValueError, match=r"no norms.*layer_norm=False"):
            call()


def test_parallel_blocks_decompose_without_a_middle():
    r = run("neox")
    c = r.cache
    close(c.decompose_resid().sum(0), c["resid_post", 1])
    into_mlp, labels = c.decompose_resid(layer=1, mlp_input=True, return_labels=True)
    assert labels[-1] == "0_mlp_out"  # the MLP of a parallel block reads resid_pre, not attention's output
    close(into_mlp.sum(0), c["resid_pre", 1])
    close(
        c.decompose_resid(layer=1, mlp_input=True, apply_ln=True).sum(0),
        c["normalized", 1, "ln2"],
    )
    close(c.stack_head_results(layer=1, incl_remainder=True).sum(0), c["resid_pre", 1])
    assert c.accumulated_resid(layer=1, mlp_input=True, return_labels=True)[1] == ["0_pre", "1_pre"]
    with pytest.raises(ValueError, match="no resid_mid"):
        c.accumulated_resid(incl_mid=True)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_full_resid_decomposition_sums_to_the_stream(kind):
    """Every head, every neuron (or each MLP), the embeddings and the biases: the parts add up to the stream entering
    each layer (and its MLP with mlp_input; a parallel block's MLP reads resid_pre, so that block's heads are left
    out there, where TransformerLens includes them). Neurons are post[n] * W_out[n]."""
    r = run(kind)
    c, L = r.cache, r.cfg.n_layer
    for layer in (0, 1, None):
        for mlp_input in (False, True) if layer is not None else (False,):
            into = c._resid_into(L if layer is None else layer)
            if mlp_input and kind != "neox":
                into = c["resid_mid", layer]
            for expand in (True, False):
                stack, labels = c.get_full_resid_decomposition(
                    layer, mlp_input=mlp_input, expand_neurons=expand, return_labels=True
                )
                assert len(labels) == stack.shape[0] and labels[-1] == "bias"
                close(stack.sum(0), into)
    stack, labels = c.get_full_resid_decomposition(return_labels=True)
    n_heads, width = L * r.cfg.n_head, r.cfg.mlp_width
    assert labels[0] == "L0H0" and labels[n_heads] == "L0N0" and labels[n_heads + L * width] == "embed"
    neurons = c.stack_neuron_results(1, neuron_slice=[3, 5])
    W_out = r.model.blocks[0].mlp.c_proj.weight.detach()
    close(neurons[1], c["post", 0][..., 5, None] * W_out[:, 5])
    rest = c.stack_neuron_results(1, neuron_slice=(0, 4), incl_remainder=True)
    close(rest.sum(0), c["resid_pre", 1])
    last = c.decompose_resid(pos_slice=-1)  # sliced, then analysed without the slice: said, not broadcast
    with pytest.raises(ValueError, match="pass the same pos_slice"):
        c.apply_ln_to_stack(last, -1)
    with pytest.raises(ValueError, match="pass the same pos_slice"):
        c.logit_attrs(last, tokens=torch.zeros(B, dtype=torch.long))


def test_full_resid_decomposition_matches_transformer_lens():
    tl = pytest.importorskip("transformer_lens")
    if not hasattr(tl, "HookedTransformer"):
        pytest.skip("this transformer_lens has no HookedTransformer")
    r = run("gpt2")
    _, theirs = gptviz.to_transformer_lens(r.model).run_with_cache(r.ids)
    for kw in ({}, {"layer": 1, "mlp_input": True, "apply_ln": True}, {"expand_neurons": False}):
        a, la = r.cache.get_full_resid_decomposition(return_labels=True, **kw)
        b, lb = theirs.get_full_resid_decomposition(return_labels=True, **kw)
        assert la == lb and (a - b).abs().max() <= 1e-4, kw
    a, la = r.cache.stack_neuron_results(2, neuron_slice=(2, 9), return_labels=True)
    b, lb = theirs.stack_neuron_results(2, neuron_slice=(2, 9), return_labels=True)
    assert la == lb and (a - b).abs().max() <= 1e-4


def test_stack_activation(r):
    c = r.cache
    assert torch.equal(c.stack_activation("pattern"), torch.stack([c["pattern", 0], c["pattern", 1]]))
    assert torch.equal(c.stack_activation("scale", 1, "ln2"), c["scale", 0, "ln2"][None])


# ---- run_with_cache ------------------------------------------------------------------------------------------
def test_names_filter_forms():
    model = build("gpt2")
    ids = torch.randint(0, 50, (B, T))
    by = lambda f: model.run_with_cache(ids, names_filter=f)[1].keys()
    assert by("blocks.0.attn.hook_pattern") == ["blocks.0.attn.hook_pattern"]
    assert by("blocks.*.attn.hook_pattern") == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    assert by(["hook_logits", "hook_embed"]) == ["hook_embed", "hook_logits"]  # forward order
    assert by(lambda name: name.endswith("hook_scale")) == [
        "blocks.0.ln1.hook_scale",
        "blocks.0.ln2.hook_scale",
        "blocks.1.ln1.hook_scale",
        "blocks.1.ln2.hook_scale",
        "ln_final.hook_scale",
    ]
    assert by(None) == gptviz.hook_names(model)
    with pytest.raises(ValueError, match="selected no hook point"):
        model.run_with_cache(ids, names_filter=lambda name: False)
    with pytest.raises(HookNameError, match="Closest: blocks.0.attn.hook_pattern"):
        model.run_with_cache(ids, names_filter="blocks.0.attn.hook_patern")
    with pytest.raises(TypeError, match="names_filter must be"):
        model.run_with_cache(ids, names_filter=3)
    assert not any(p.active for p in hook_points(model).values())  # nothing left attached


def test_run_with_cache_options():
    model = build("gpt2")
    ids = torch.randint(0, 50, (1, T))
    logits, plain = model.run_with_cache(ids, "blocks.*.attn.hook_pattern", return_cache_object=False)
    assert isinstance(plain, dict) and list(plain) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    _, one = model.run_with_cache(ids, remove_batch_dim=True)
    assert one["pattern", 0].shape == (4, T, T) and one["resid_pre", 1].shape == (T, 32)
    close(one.decompose_resid().sum(0), one["resid_post", 1])  # the analysis works without a batch dim
    close(one.accumulated_resid(apply_ln=True)[-1], affine(model.ln_f, one["ln_final.hook_normalized"]))
    _, on_cpu = model.run_with_cache(ids, "hook_embed", device="cpu")
    assert on_cpu["embed"].device.type == "cpu" and on_cpu.to("cpu") is on_cpu
    default = inspect.signature(GPT.run_with_cache).parameters["budget_mb"].default
    assert default == DEFAULT_CAPTURE_BUDGET_MB  # the method's literal default follows gptviz.hooks'
    with pytest.raises(gptviz.CaptureBudgetError):
        model.run_with_cache(ids, budget_mb=0.001)


def test_gptviz_run_with_cache_returns_the_activation_cache():
    model = build("gpt2")
    logits, cache = gptviz.run_with_cache(
        model, torch.randint(0, 50, (B, T)), "blocks.*.attn.hook_pattern", to_cpu=True
    )
    assert isinstance(cache, ActivationCache) and cache["pattern", 1].device.type == "cpu"
    assert gptviz.ActivationCache is ActivationCache and gptviz.act_name is act_name


# ---- run_with_hooks ------------------------------------------------------------------------------------------
def test_run_with_hooks_with_a_filter_function():
    model = build("gpt2")
    ids = torch.randint(0, 50, (B, T))
    seen = []

    def ablate_head_1(z, hook):  # (B, T, nh, hs): TransformerLens's habit
        seen.append(hook.name)
        z[:, :, 1] = 0
        return z

    logits = model.run_with_hooks(ids, fwd_hooks=[(lambda name: name.endswith("attn.hook_z"), ablate_head_1)])
    assert seen == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    with gptviz.hooks(model, {"blocks.*.attn.hook_z": ablate_head_1}):
        close(logits, model(ids))
    assert not torch.allclose(logits, model(ids))
    assert not any(p.active for p in hook_points(model).values())

    order = []
    model.run_with_hooks(
        ids,
        fwd_hooks=[
            ("blocks.0.hook_resid_pre", lambda x, hook: order.append("first")),
            ("blocks.0.hook_resid_pre", lambda x, *, hook: order.append("second")),  # keyword-only hook works too
        ],
    )
    assert order == ["first", "second"]


def test_run_with_hooks_refusals():
    model = build("gpt2")
    ids = torch.randint(0, 50, (B, T))
    with pytest.raises(TypeError, match=r"fwd_hooks\[0\] must be a pair"):
        model.run_with_hooks(ids, fwd_hooks=[lambda x, hook: None])
    with pytest.raises(ValueError, match="selected no hook point"):
        model.run_with_hooks(ids, fwd_hooks=[(lambda name: False, lambda x, hook: None)])
    with pytest.raises(HookNameError, match="Closest"):
        model.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_prre", lambda x, hook: None)])
    assert not any(p.active for p in hook_points(model).values())


# ---- errors a user can act on ------------------------------------------------------------------------------------
def test_cache_errors_say_what_to_do():
    narrow = run("gpt2", names_filter="blocks.*.hook_resid_*")
    c = narrow.cache
    with pytest.raises(HookNameError, match=r"the cache has no blocks.0.attn.hook_pattern.*names_filter"):
        c["pattern", 0]
    with pytest.raises(HookNameError, match=r"'pattern', 5\).*blocks.5.attn.hook_pattern.*unknown hook name"):
        c["pattern", 5]
    with pytest.raises(HookNameError, match=r"needs each head's output.*'blocks\.\*\.attn\.hook_result'"):
        c.stack_head_results()
    with pytest.raises(HookNameError, match=r"cached scale ln_final.hook_scale.*names_filter"):
        c.apply_ln_to_stack(c.accumulated_resid())
    with pytest.raises(HookNameError, match=r"needs hook_embed.*incl_embeds=False"):
        c.decompose_resid()
    with pytest.raises(TypeError, match="index the cache with"):
        c[3]
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.2"):
        c.accumulated_resid(layer=5)
    with pytest.raises(ValueError, match="batch of one"):
        c.remove_batch_dim()
    full = run("gpt2").cache
    stack = full.decompose_resid()
    with pytest.raises(TypeError, match="no tokenizer"):
        full.logit_attrs(stack, " road")
    with pytest.raises(ValueError, match="same shape"):
        full.logit_attrs(stack, torch.tensor([1, 2]), incorrect_tokens=3)
    with pytest.raises(ValueError, match=r"token ids must be in 0\.\.49"):
        full.logit_attrs(stack, 50)
    with pytest.raises(ValueError, match="the unembedding has no MLP"):
        full.decompose_resid(mlp_input=True)


# ---- TransformerLens on the same weights (optional: the bench extra installs it) ------------------------------------
def transformer_lens_pair(model: GPT):
    """`model` in TransformerLens twice: as gptviz.to_transformer_lens gives it (unprocessed), and folded as
    TransformerLens folds pretrained models (fold_ln: the norms' weights move into W_Q, W_in, W_U, ln_final's bias
    into b_U), the unembedding left uncentred. Both cache attn.hook_result, as gptviz's run_with_cache does."""
    from gptviz.transformer_lens import to_transformer_lens

    raw, folded = to_transformer_lens(model), to_transformer_lens(model)
    folded.load_and_process_state_dict(  # process_weights_ would also fold b_V into b_O, changing each head's result
        folded.state_dict(), fold_ln=True, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    for tl in (raw, folded):
        tl.set_use_attn_result(True)
    return raw, folded


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.x deprecates HookedTransformer for 4.0's bridge
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_same_numbers_as_transformer_lens(kind):
    pytest.importorskip(
        "transformer_lens",
        reason="TransformerLens is not installed (pip install -e '.[bench]'); the explicit-formula tests above "
        "check the same quantities",
    )
    from transformer_lens.utilities import get_act_name

    for args, full in SHORT_NAMES:
        if args != ("hook_logits",):  # gptviz's own hook
            assert get_act_name(*args) == full
    r = run(kind)
    c, (raw, folded) = r.cache, transformer_lens_pair(r.model)
    tl_logits, t = raw.run_with_cache(r.ids)
    close(r.logits, tl_logits)
    for name in ["blocks.1.hook_resid_mid", "blocks.1.attn.hook_result", "scale", "ln_final.hook_normalized"]:
        close(c[name], t[name])
    # unprocessed, the same weights: every stack and its apply_ln, TransformerLens's labels
    for method, kwargs in [
        ("accumulated_resid", dict(incl_mid=True)),
        ("accumulated_resid", dict(apply_ln=True)),  # the logit lens: ln_final recomputed, weight and bias
        ("accumulated_resid", dict(layer=1, apply_ln=True, mlp_input=True)),
        ("decompose_resid", dict()),
        ("decompose_resid", dict(apply_ln=True)),
        ("decompose_resid", dict(layer=1, mlp_input=True, apply_ln=True, pos_slice=-1)),
        ("stack_head_results", dict(incl_remainder=True)),
        ("stack_head_results", dict(apply_ln=True)),
    ]:
        ours, labels = getattr(c, method)(return_labels=True, **kwargs)
        theirs, tl_labels = getattr(t, method)(return_labels=True, **kwargs)
        assert labels == tl_labels, method
        close(ours, theirs)
    # logit attributions: TransformerLens's on the folded model, whose W_U holds ln_final's weight
    _, f = folded.run_with_cache(r.ids)
    right, wrong = torch.tensor([3, 41]), torch.tensor([7, 7])
    for stack, tl_stack in [
        (c.decompose_resid(pos_slice=-1), f.decompose_resid(pos_slice=-1)),
        (c.stack_head_results(pos_slice=-1), f.stack_head_results(pos_slice=-1)),
    ]:
        close(c.logit_attrs(stack, right, pos_slice=-1), f.logit_attrs(tl_stack, right, pos_slice=-1))
        close(c.logit_attrs(stack, right, wrong, pos_slice=-1), f.logit_attrs(tl_stack, right, wrong, pos_slice=-1))
