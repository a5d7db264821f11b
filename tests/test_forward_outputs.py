"""`model(...)` called as transformers and TransformerLens users call it (gptviz.outputs): `.logits`, `labels=` ->
`.loss`, `output_attentions` / `output_hidden_states`, `return_dict=False`, a KV cache kept across calls with
`use_cache=True`, TransformerLens's `return_type` / `loss_per_token` / `stop_at_layer`, and the errors for what
gptviz does not take. Numbers are compared with the real transformers (and TransformerLens, where installed).
"""

import io
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import save_random_hf_gpt2
from test_families import FAMILIES as HF_FAMILIES
from test_families import V

from gptviz import GPT, GPTConfig, GptvizError
from gptviz import hooks as gptviz_hooks
from gptviz.outputs import CausalLMOutput, Logits
from gptviz.tokenizers import gpt2_bpe_files

transformers = pytest.importorskip("transformers")

# the families' tiny transformers configs of test_families (GPT-2 comes from conftest.save_random_hf_gpt2)
FAMILIES = {"gpt2": None, "llama": HF_FAMILIES["llama"], "gpt_neox": HF_FAMILIES["gpt_neox"]}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(name, transformers model with eager attention, the same weights as a gptviz GPT)."""
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    if name == "gpt2":
        save_random_hf_gpt2(folder, vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    else:
        torch.manual_seed(0)
        hf = transformers.AutoModelForCausalLM.from_config(FAMILIES[name]())
        with torch.no_grad():  # norms at one and zero biases would hide a mix-up
            for p in hf.parameters():
                p.add_(0.1 * torch.randn_like(p))
        hf.save_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return name, hf, GPT.from_pretrained(folder)


def ids(B=2, T=12, seed=1):
    return torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_loss_hidden_states_and_attentions_match_transformers(family):
    _, hf, ours = family
    x = ids()
    labels = x.clone()
    labels[0, :4] = -100  # positions left out of the loss
    with torch.no_grad():
        theirs = hf(x, labels=labels, output_attentions=True, output_hidden_states=True)
        mine = ours(x, labels=labels, output_attentions=True, output_hidden_states=True)
    assert isinstance(mine, CausalLMOutput)
    assert (mine.logits - theirs.logits).abs().max() <= 1e-4
    assert (mine.loss - theirs.loss).abs() <= 1e-5 and mine.loss.dtype == torch.float32
    assert len(mine.hidden_states) == len(theirs.hidden_states) == ours.config.n_layer + 1
    for a, b in zip(mine.hidden_states, theirs.hidden_states):  # the last is after the final norm, as theirs
        assert (a - b).abs().max() <= 1e-4
    assert len(mine.attentions) == len(theirs.attentions) == ours.config.n_layer
    for a, b in zip(mine.attentions, theirs.attentions):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-5
    # the tuple form and ModelOutput's indexing: the fields that are not None, in transformers' order
    with torch.no_grad():
        as_tuple = ours(x, labels=labels, return_dict=False)
        as_dict = ours(x, labels=labels)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[1], as_dict.logits)
    assert torch.equal(mine[0], mine.loss) and torch.equal(mine["logits"], mine.logits)
    assert list(mine.keys()) == ["loss", "logits", "hidden_states", "attentions"]


def test_a_kept_cache_continues_like_transformers(family):
    """The manual decode loop of the courses: model(prompt, use_cache=True), then one token at a time with the
    cache handed back; every step equals transformers' and a full recomputation, past the cache's first size."""
    _, hf, ours = family
    x = ids(B=2, T=5)
    with torch.no_grad():
        out = ours(x, use_cache=True)
        theirs = hf(x, use_cache=True)
        seq = x
        for step in range(50):  # the cache starts with room for 5 + 64 positions, then grows
            nxt = out.logits[:, -1:].argmax(-1)
            ref = theirs.logits[:, -1:].argmax(-1)
            assert torch.equal(nxt, ref), step
            seq = torch.cat([seq, nxt], dim=1)
            cache = out.cache if step % 2 else out.past_key_values  # transformers 5's name and the older one
            out = ours(nxt, cache=cache) if step % 3 else ours(nxt, past_key_values=cache, use_cache=True)
            theirs = hf(nxt, past_key_values=theirs.past_key_values, use_cache=True)
            assert (out.logits - theirs.logits).abs().max() <= 1e-4
        assert out.cache.get_seq_length() == seq.shape[1]
        full = ours(seq)
    assert (out.logits[:, -1] - full[:, -1]).abs().max() <= 1e-4


def test_a_kept_cache_grows_up_to_the_block_size(tiny_model):
    out = tiny_model(ids(B=1, T=3), use_cache=True)
    cache = out.cache
    assert cache.max_len == 3 + 64 or cache.max_len == tiny_model.config.block_size
    for _ in range(tiny_model.config.block_size - 3):
        out = tiny_model(torch.tensor([[5]]), cache=cache)
    assert cache.pos == tiny_model.config.block_size
    with pytest.raises(GptvizError, match="block_size"):
        tiny_model(torch.tensor([[5]]), cache=cache)


def test_course_snippets_of_the_forward_pass(tmp_path):
    """Forward-pass snippets from GPT courses, run with transformers' header and with gptviz's."""
    folder = save_random_hf_gpt2(tmp_path, vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    encoder_json, vocab_bpe = gpt2_bpe_files()
    shutil.copy(encoder_json, folder / "vocab.json")
    shutil.copy(vocab_bpe, folder / "merges.txt")
    headers = {
        "transformers": "from transformers import GPT2LMHeadModel, GPT2Tokenizer\n",
        "gptviz": "from gptviz import GPT as GPT2LMHeadModel\nfrom gptviz.tokenizers import GPT2Tokenizer\n",
    }
    snippet = """
model = GPT2LMHeadModel.from_pretrained(FOLDER)
tokenizer = GPT2Tokenizer.from_pretrained(FOLDER)
model.eval()
tokens = tokenizer.tokenize("The quick brown fox")
inputs = tokenizer("The quick brown fox jumps over the", return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
next_token_logits = outputs.logits[:, -1, :]
next_token = torch.argmax(next_token_logits, dim=-1)
probs = torch.softmax(model(inputs["input_ids"]).logits[0, -1], dim=-1)
with torch.no_grad():
    outputs = model(**inputs, labels=inputs["input_ids"])
perplexity = torch.exp(outputs.loss)
loss_first = outputs[0]
with torch.no_grad():
    states = model(inputs.input_ids, output_hidden_states=True).hidden_states
generated = inputs["input_ids"]
past = None
with torch.no_grad():
    for _ in range(8):
        out = model(generated if past is None else generated[:, -1:], past_key_values=past, use_cache=True)
        past = out.past_key_values
        generated = torch.cat([generated, out.logits[:, -1:].argmax(-1)], dim=-1)
text = tokenizer.decode(generated[0], skip_special_tokens=True)
sizes = (model.config.n_positions, model.config.n_embd, model.config.n_layer, model.config.n_head)
dtype = model.dtype
embedding_rows = model.get_input_embeddings().weight.shape[0]
"""
    spaces = {}
    for side, header in headers.items():
        spaces[side] = {"FOLDER": str(folder), "torch": torch}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(header + snippet, spaces[side])  # noqa: S102 - our own test code
    theirs, ours = spaces["transformers"], spaces["gptviz"]
    assert ours["tokens"] == theirs["tokens"]
    assert torch.equal(ours["next_token"], theirs["next_token"])
    assert (ours["next_token_logits"] - theirs["next_token_logits"]).abs().max() <= 1e-4
    assert (ours["probs"] - theirs["probs"]).abs().max() <= 1e-6
    assert abs(ours["perplexity"].item() - theirs["perplexity"].item()) <= 1e-3 * theirs["perplexity"].item()
    assert (ours["loss_first"] - theirs["loss_first"]).abs() <= 1e-5
    assert len(ours["states"]) == len(theirs["states"])
    assert max((a - b).abs().max().item() for a, b in zip(ours["states"], theirs["states"])) <= 1e-4
    assert ours["generated"].tolist() == theirs["generated"].tolist() and ours["text"] == theirs["text"]
    assert ours["sizes"] == theirs["sizes"] and ours["dtype"] == theirs["dtype"]
    assert ours["embedding_rows"] == theirs["embedding_rows"]


def test_a_plain_call_is_the_logits_tensor(tiny_model):
    x = torch.randint(0, 97, (2, 7))
    out = tiny_model(x)
    assert isinstance(out, torch.Tensor) and isinstance(out, Logits)
    assert type(out.logits) is torch.Tensor and torch.equal(out.logits, out)
    assert out.loss is None and out.attentions is None and out.hidden_states is None
    assert type(out[:, -1]) is torch.Tensor and type(out.softmax(-1)) is torch.Tensor  # operations give tensors
    assert repr(out).startswith("tensor(")
    with torch.no_grad():
        plain = tiny_model(x)
    buf = io.BytesIO()
    torch.save({"logits": plain}, buf)  # saved as the plain tensor it is: weights_only loads it back
    buf.seek(0)
    back = torch.load(buf, weights_only=True)["logits"]
    assert type(back) is torch.Tensor and torch.equal(back, plain)
    tiny_model(x).logits.sum().backward()  # autograd flows through .logits
    assert tiny_model.wte.weight.grad is not None
    with pytest.raises(GptvizError, match="use_cache=True"):
        _ = tiny_model(x).past_key_values
    with pytest.raises(GptvizError, match="use_cache=True"):
        _ = tiny_model(x, labels=x).cache


def test_transformer_lens_return_types(tiny_model):
    x = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = tiny_model(x)
        loss = tiny_model(x, return_type="loss")
        per_token = tiny_model(x, return_type="loss", loss_per_token=True)
        both = tiny_model(x, return_type="both")
        mask = torch.ones_like(x)
        mask[0, :3] = 0
        masked = tiny_model(x, attention_mask=mask, return_type="loss")
        masked_logits = tiny_model(x, attention_mask=mask)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 97), x[:, 1:].reshape(-1))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert per_token.shape == (2, 8) and torch.allclose(per_token.mean(), expected, atol=1e-6)
    assert isinstance(both, tuple) and torch.equal(both.logits, logits) and torch.equal(both[1], loss)
    assert tiny_model(x, return_type=None) is None
    # with a mask: only pairs of two real tokens count (row 0 loses its first 3 pairs)
    pairs = torch.ones(2, 8, dtype=torch.bool)
    pairs[0, :3] = False
    keep = F.cross_entropy(masked_logits[:, :-1].reshape(-1, 97), x[:, 1:].reshape(-1), reduction="none")
    assert torch.allclose(masked, keep[pairs.reshape(-1)].mean(), atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1, 2, -1])
def test_stop_at_layer_returns_the_residual_entering_that_block(tiny_model, layer):
    x = torch.randint(0, 97, (1, 6))
    _, cache = tiny_model.run_with_cache(x, names_filter="blocks.*.hook_resid_*")  # attention on its fast path
    L = tiny_model.config.n_layer
    want = cache[f"blocks.{L - 1}.hook_resid_post"] if layer == L else cache[f"blocks.{layer % L}.hook_resid_pre"]
    with torch.no_grad():
        got = tiny_model(x, stop_at_layer=layer)
    assert torch.equal(got, want)


def test_transformer_lens_gives_the_same_losses():
    tl = pytest.importorskip("transformer_lens")
    from gptviz import to_transformer_lens

    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
    theirs = to_transformer_lens(ours)
    assert isinstance(theirs, tl.HookedTransformer)
    x = torch.randint(0, 97, (2, 10))
    mask = torch.ones_like(x)
    mask[1, :4] = 0
    with torch.no_grad():
        for kw in ({}, {"loss_per_token": True}, {"attention_mask": mask}):
            a, b = ours(x, return_type="loss", **kw), theirs(x, return_type="loss", **kw)
            assert torch.allclose(a, b, atol=1e-5), kw
        assert torch.allclose(ours(x, stop_at_layer=1), theirs(x, stop_at_layer=1), atol=1e-5)


def test_what_the_forward_does_not_take_is_refused_with_the_fix(tiny_model):
    x = torch.randint(0, 97, (1, 5))
    cases = [
        (dict(output_attention=True), "Did you mean 'output_attentions'"),
        (dict(position_ids=torch.arange(5)[None]), "computes positions itself"),
        (dict(inputs_embeds=torch.zeros(1, 5, 32)), "hook_embed"),
        (dict(labels=x, return_type="loss"), "one convention"),
        (dict(labels=x[:, :3]), "labels have shape"),
        (dict(labels=x.float()), "integer token ids"),
        (dict(labels=torch.full_like(x, 500)), "outside the vocabulary"),
        (dict(return_type="probs"), "return_type must be"),
        (dict(stop_at_layer=7), "stop_at_layer must be"),
        (dict(past_key_values=((torch.zeros(1), torch.zeros(1)),)), "gptviz KVCache"),
        (dict(output_attentions="yes"), "True or False"),
        (dict(logits_to_keep=-1), ">= 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(GptvizError, match=message):
            tiny_model(x, **kwargs)
    other = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=3, n_head=4, n_embd=32))
    with pytest.raises(GptvizError, match="another model"):
        tiny_model(x, cache=other(x, use_cache=True).cache)
    with pytest.raises(GptvizError, match="batch of 1"):
        tiny_model(torch.randint(0, 97, (2, 1)), cache=tiny_model(x, use_cache=True).cache)
    with pytest.raises(GptvizError, match="encode first"):
        tiny_model("Hello world")
    with pytest.raises(GptvizError, match="takes ids, not text"):
        tiny_model.generate("Hello world", max_new_tokens=2)
    with pytest.raises(GptvizError, match=r"got shape \(1, 1, 5\)"):
        tiny_model.generate(x[None], max_new_tokens=2)
    assert tiny_model(x, logits_to_keep=1).logits.shape == (1, 1, 97)
    # one sequence as (T,), as transformers and TransformerLens take it: a batch of one
    assert torch.equal(tiny_model(x[0]), tiny_model(x)) and tiny_model(x[0], return_type="loss").shape == ()
    from gptviz.patching import logit_diff, patch_resid

    _, cache = tiny_model.run_with_cache(x)
    with pytest.raises(ValueError, match="pass the clean ids first, not the cache"):
        patch_resid(tiny_model, x, cache, logit_diff(1, 2))  # TransformerLens's argument order


def test_load_time_output_switches_say_to_pass_them_per_call(tmp_path):
    folder = save_random_hf_gpt2(tmp_path, vocab_size=V, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    with pytest.raises(GptvizError, match=r"per call.*model\(ids, output_attentions=True\)"):
        GPT.from_pretrained(folder, output_attentions=True)
    with pytest.raises(GptvizError, match="refused the loading options"):
        GPT.from_pretrained(folder, dtype="float12")
    GPT.from_pretrained(folder, use_cache=False)  # a config switch gptviz has no use for: accepted


def test_config_and_model_answer_transformers_and_transformer_lens_names(tiny_model):
    c = tiny_model.config
    assert (c.n_positions, c.max_position_embeddings, c.n_ctx) == (c.block_size,) * 3
    assert (c.hidden_size, c.d_model, c.num_hidden_layers, c.n_layers) == (c.n_embd, c.n_embd, c.n_layer, c.n_layer)
    assert (c.num_attention_heads, c.num_key_value_heads, c.d_head, c.d_mlp, c.d_vocab) == (4, 4, 8, 128, 97)
    assert (c.attn_only, c.act_fn, c.normalization_type, c.positional_embedding_type, c.eps, c.d_vocab_out) == (
        False,
        "gelu_pytorch_tanh",
        "LN",
        "standard",
        c.layer_norm_epsilon,
        97,
    )
    with pytest.raises(AttributeError, match="model.ln_f"):
        _ = tiny_model.ln_final
    with pytest.raises(AttributeError, match="did you mean 'n_embd'"):
        _ = c.n_emb
    assert not hasattr(c, "no_such_field")
    with pytest.raises(AttributeError, match="model.generation_config"):
        _ = c.eos_token_id
    with pytest.raises(AttributeError, match="does not grow a vocabulary"):
        tiny_model.resize_token_embeddings(200)
    assert tiny_model.dtype == torch.float32 and tiny_model.get_output_embeddings() is tiny_model.lm_head
    with pytest.raises(AttributeError, match="model.blocks"):
        _ = tiny_model.transformer.h
    assert not hasattr(tiny_model, "model")


def test_hooks_added_stay_until_reset_as_in_transformer_lens(tiny_model):
    x = torch.randint(0, 97, (1, 6))
    seen = []

    def ablate(z, hook):  # head 0 of layer 0 writes nothing
        z[:, :, 0] = 0.0
        return z

    def close(a, b):
        return torch.allclose(a, b, atol=1e-5)

    with torch.no_grad():
        plain = tiny_model(x).clone()
        with gptviz_hooks(tiny_model, {"blocks.0.attn.hook_z": ablate}):
            ablated = tiny_model(x).clone()
        assert not close(ablated, plain)

        tiny_model.add_hook("blocks.0.attn.hook_z", ablate)
        tiny_model.add_hook(lambda name: name.endswith("hook_pattern"), lambda p, hook: seen.append(hook.name))
        tiny_model.add_hook("hook_embed", lambda e, hook: seen.append("permanent"), is_permanent=True)
        assert close(tiny_model(x), ablated) and seen == [
            "permanent",
            *[f"blocks.{i}.attn.hook_pattern" for i in (0, 1)],
        ]
        assert tiny_model(x, return_type="loss").shape == ()  # forward keywords work with hooks attached
        tiny_model.reset_hooks()  # the permanent one stays
        assert torch.equal(tiny_model(x), plain) and seen.count("permanent") == 3 and len(seen) == 7
        tiny_model.reset_hooks(including_permanent=True)
        assert all(not p.fns for p in tiny_model.hook_dict.values())

        loss = tiny_model.run_with_hooks(x, return_type="loss", fwd_hooks=[("blocks.0.attn.hook_z", ablate)])
        assert close(loss, F.cross_entropy(ablated[0, :-1], x[0, 1:]))
        assert torch.equal(tiny_model(x), plain)  # removed after the call
        tiny_model.run_with_hooks(x, fwd_hooks=[("blocks.0.attn.hook_z", ablate)], reset_hooks_end=False)
        assert close(tiny_model(x), ablated)  # kept until reset_hooks
        tiny_model.reset_hooks()
        assert torch.equal(tiny_model(x), plain)
        with tiny_model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", ablate)]):
            assert close(tiny_model(x), ablated)
        assert torch.equal(tiny_model(x), plain)
        loss, cache = tiny_model.run_with_cache(x, return_type="loss")
        assert loss.shape == () and "blocks.0.attn.hook_pattern" in cache
    with pytest.raises(GptvizError, match="no backward hooks"):
        tiny_model.add_hook("hook_embed", lambda e, hook: None, dir="bwd")
    with pytest.raises(GptvizError, match="must be a function"):
        tiny_model.add_hook("hook_embed", "not a function")
    assert all(not p.fns for p in tiny_model.hook_dict.values())


def test_transformer_lens_switches_and_compute_head_results(tiny_model):
    x = torch.randint(0, 97, (2, 6))
    tiny_model.set_use_attn_result(True)  # accepted, changes nothing: hook_result is computed when listened to
    for call in ("set_use_hook_mlp_in", "set_use_attn_in", "set_use_split_qkv_input"):
        with pytest.raises(GptvizError, match="hook_resid_pre"):
            getattr(tiny_model, call)(True)
    _, with_z = tiny_model.run_with_cache(x, names_filter="blocks.*.attn.hook_z")
    _, with_result = tiny_model.run_with_cache(x, names_filter="blocks.*.attn.hook_result")
    assert "blocks.0.attn.hook_result" not in with_z
    with_z.compute_head_results()
    for layer in range(tiny_model.config.n_layer):
        a, b = with_z["result", layer], with_result["result", layer]
        assert a.shape == (2, 6, 4, 32) and torch.allclose(a, b, atol=1e-5)


def test_review_cases_deepcopy_hasattr_config_writes_and_permanent_hooks(tiny_model):
    """Found in review: each was a wrong or raw answer before."""
    import copy

    x = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        out = tiny_model(x)
    twin = copy.deepcopy({"logits": out})["logits"]
    assert isinstance(twin, Logits) and torch.equal(twin, out) and twin.data_ptr() != out.data_ptr()
    assert not hasattr(out, "past_key_values") and getattr(tiny_model(x, labels=x), "cache", None) is None
    with pytest.raises(AttributeError, match="set block_size"):
        tiny_model.config.n_positions = 64
    with pytest.raises(AttributeError, match="model.generation_config"):
        tiny_model.config.pad_token_id = 0
    with pytest.raises(GptvizError, match="drop logits_to_keep"):
        tiny_model(x, labels=x, logits_to_keep=1)
    seen = []

    def look(a, hook):
        seen.append(hook.name)

    tiny_model.add_hook("hook_embed", look)
    tiny_model.add_hook("hook_embed", look, is_permanent=True)  # the same function, also permanent
    tiny_model.reset_hooks()
    tiny_model.reset_hooks()
    tiny_model(x)
    assert seen == ["hook_embed"]  # the permanent one survived both resets
    tiny_model.reset_hooks(including_permanent=True)
    tiny_model(x)
    assert seen == ["hook_embed"]
    tiny_model.set_use_hook_mlp_in(False)  # off is what gptviz is: accepted


def test_loss_of_a_padded_batch_is_what_each_row_gives_alone(family):
    """The course recipe (pad token = eos, labels -100 at padding) with only the imports changed: gptviz pads on the
    left, so the label after a row's padding is its first real token; predicted from padding it is left out, and
    the loss equals transformers' on the same rows padded on the right."""
    _, hf, ours = family
    x = ids(B=2, T=9, seed=3)
    lengths = [9, 5]
    left, right = x.clone(), x.clone()
    mask_left, mask_right = torch.ones_like(x), torch.ones_like(x)
    left[1], mask_left[1, : 9 - lengths[1]] = torch.cat([x[1, : 9 - lengths[1]], x[1, : lengths[1]]]), 0
    right[1, lengths[1] :], mask_right[1, lengths[1] :] = x[1, : 9 - lengths[1]], 0
    labels_left = left.masked_fill(mask_left == 0, -100)
    labels_right = right.masked_fill(mask_right == 0, -100)
    with torch.no_grad():
        mine = ours(left, attention_mask=mask_left, labels=labels_left).loss
        theirs = hf(right, attention_mask=mask_right, labels=labels_right).loss
        alone = [ours(x[i : i + 1, :n], labels=x[i : i + 1, :n]).loss * (n - 1) for i, n in enumerate(lengths)]
    assert (mine - theirs).abs() <= 1e-5
    assert (mine - sum(alone) / sum(n - 1 for n in lengths)).abs() <= 1e-5
