"""The rest of transformers' tokenizer surface that course code uses: tokenize, get_vocab, special_tokens_map,
convert_tokens_to_string, add_special_tokens for a token the vocabulary has, apply_chat_template, and
save_pretrained, each compared with transformers on the same files; and what gptviz refuses (new tokens, text
pairs, a char vocabulary in transformers' format, writing over a gptviz checkpoint's own tokenizer)."""

import json
import shutil

import pytest
import torch
from conftest import save_random_hf_gpt2

import gptviz
from gptviz import GptvizError
from gptviz.tokenizers import BPETokenizer, CharTokenizer, GPT2Tokenizer, PretrainedTokenizer, gpt2_bpe_files

transformers = pytest.importorskip("transformers")

TEXTS = ["Once upon a time", " The quick  brown fox\n\njumps", "人工智能科学家 <|endoftext|> ok"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2-tok")
    encoder_json, vocab_bpe = gpt2_bpe_files()
    shutil.copy(encoder_json, folder / "vocab.json")
    shutil.copy(vocab_bpe, folder / "merges.txt")
    return transformers.GPT2TokenizerFast.from_pretrained(folder)


@pytest.fixture(scope="module")
def chat_pair():
    """A gptviz PretrainedTokenizer and the transformers tokenizer it came from, with a chat template."""
    bpe = BPETokenizer.train(" ".join(TEXTS * 50) + " What is the capital of France? Paris.", 300)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe._tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    fast.chat_template = TEMPLATE
    ours = PretrainedTokenizer.from_transformers(fast)
    fast.pad_token, fast.padding_side = fast.eos_token, "left"  # transformers pads only with a pad token
    return ours, fast


def test_vocabulary_calls_match_transformers(hf_gpt2):
    tok = GPT2Tokenizer()
    for text in TEXTS:
        assert tok.tokenize(text) == hf_gpt2.tokenize(text)
        assert tok.convert_tokens_to_string(hf_gpt2.tokenize(text)) == hf_gpt2.convert_tokens_to_string(
            hf_gpt2.tokenize(text)
        )
    assert tok.get_vocab() == hf_gpt2.get_vocab()
    assert tok.special_tokens_map["eos_token"] == hf_gpt2.special_tokens_map["eos_token"] == "<|endoftext|>"


def test_add_special_tokens_gives_a_role_to_a_token_the_vocabulary_has():
    tok = GPT2Tokenizer()
    assert "pad_token" not in tok.special_tokens_map
    assert tok.add_special_tokens({"pad_token": tok.eos_token}) == 0
    assert tok.pad_token_id == 50256 and tok.special_tokens_map["pad_token"] == "<|endoftext|>"
    enc = tok(["a", "a b c"], padding=True, return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == 50256 and enc["attention_mask"][0].tolist() == [0, 0, 1]
    with pytest.raises(GptvizError, match="not in the vocabulary.*gptviz does not add tokens"):
        tok.add_special_tokens({"pad_token": "[PAD]"})
    assert tok.pad_token_id == 50256  # nothing changed by the refused call
    with pytest.raises(GptvizError, match="not supported"):
        tok.add_special_tokens({"additional_special_tokens": ["<x>"]})
    with pytest.raises(GptvizError, match="does not add tokens"):
        tok.add_tokens(["<new>"])
    with pytest.raises(GptvizError, match="text pairs are not"):
        tok("question", "answer")


def test_apply_chat_template_matches_transformers(chat_pair):
    ours, theirs = chat_pair
    for generation in (False, True):
        kw = dict(add_generation_prompt=generation)
        assert ours.apply_chat_template(FRANCE, tokenize=False, **kw) == theirs.apply_chat_template(
            FRANCE, tokenize=False, **kw
        )
        a, b = ours.apply_chat_template(FRANCE, **kw), theirs.apply_chat_template(FRANCE, **kw)
        assert list(a["input_ids"]) == list(b["input_ids"])  # transformers 5: a BatchEncoding by default
        a = ours.apply_chat_template(FRANCE, return_tensors="pt", return_dict=False, **kw)
        b = theirs.apply_chat_template(FRANCE, return_tensors="pt", return_dict=False, **kw)
        assert torch.equal(a, b)
    two = [FRANCE, FRANCE + [{"role": "assistant", "content": "Paris."}] + FRANCE]
    a = ours.apply_chat_template(two, padding=True, return_tensors="pt", add_generation_prompt=True)
    b = theirs.apply_chat_template(two, padding=True, return_tensors="pt", add_generation_prompt=True)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    with pytest.raises(GptvizError, match="no chat template"):
        GPT2Tokenizer().apply_chat_template(FRANCE)
    with pytest.raises(GptvizError, match="tools=.* is not supported"):
        ours.apply_chat_template(FRANCE, tools=[{"name": "search"}])


@pytest.mark.parametrize("kind", ["gpt2", "bpe", "pretrained"])
def test_save_pretrained_writes_what_transformers_reads(kind, chat_pair, tmp_path):
    tok = {"gpt2": GPT2Tokenizer, "bpe": lambda: BPETokenizer.train(" ".join(TEXTS * 40), 290)}.get(
        kind, lambda: chat_pair[0]
    )()
    written = tok.save_pretrained(tmp_path)
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == ["tokenizer.json", "tokenizer_config.json"]
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert theirs.encode(text) == tok.encode(text)
    assert (theirs.eos_token, theirs.padding_side) == (tok.eos_token, tok.padding_side)
    if kind == "pretrained":
        assert theirs.apply_chat_template(FRANCE, tokenize=False) == tok.apply_chat_template(FRANCE, tokenize=False)


def test_a_transformers_folder_written_by_both_save_pretrained_loads(tmp_path):
    """A folder without tokenizer files: GPT-2's vocabulary says GPT-2's tokenizer (with a warning), any other is
    refused with the fix (transformers 5 would give an empty tokenizer that encodes every text to nothing)."""
    gpt2, other = tmp_path / "gpt2", tmp_path / "other"
    save_random_hf_gpt2(gpt2, vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    save_random_hf_gpt2(other, vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    with pytest.warns(UserWarning, match="no tokenizer files; using GPT-2's tokenizer"):
        _, tok = gptviz.load(gpt2)
    assert tok.encode(TEXTS[0]) == GPT2Tokenizer().encode(TEXTS[0])
    with pytest.raises(GptvizError, match=r"tokenizer.save_pretrained\(folder\)"):
        gptviz.load(other)
    bpe = BPETokenizer.train(" ".join(TEXTS * 40), 290)
    bpe.save_pretrained(other)
    model, tok = gptviz.load(other)
    assert tok.encode(TEXTS[1]) == bpe.encode(TEXTS[1]) and model.config.vocab_size == 300


def test_save_pretrained_refuses_what_it_cannot_write_truly(tmp_path):
    char = CharTokenizer.from_text("hello world")
    with pytest.raises(GptvizError, match=r"no transformers format.*tok.save\(folder\)"):
        char.save_pretrained(tmp_path / "char")
    assert not (tmp_path / "char").exists()
    # a gptviz checkpoint keeps its own tokenizer.json: never overwritten by transformers' format
    model = gptviz.GPT(gptviz.GPTConfig(vocab_size=char.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8))
    folder = tmp_path / "ckpt"
    gptviz.save(folder, model, char)
    before = (folder / "tokenizer.json").read_bytes()
    with pytest.raises(GptvizError, match="holds a gptviz checkpoint"):
        GPT2Tokenizer().save_pretrained(folder)
    assert (folder / "tokenizer.json").read_bytes() == before
    assert "kind" in json.loads(before)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GptvizError, match="is a file"):
        GPT2Tokenizer().save_pretrained(tmp_path / "file")


def test_options_that_would_change_the_ids_are_refused_not_dropped():
    with pytest.raises(GptvizError, match="add_prefix_space=True is not supported"):
        GPT2Tokenizer.from_pretrained("gpt2", add_prefix_space=True)
    with pytest.raises(GptvizError, match="truncation_side='left'"):
        GPT2Tokenizer.from_pretrained("gpt2", truncation_side="left")
    tok = GPT2Tokenizer.from_pretrained("gpt2", model_max_length=4, cache_dir="/nowhere", add_prefix_space=False)
    assert len(tok("one two three four five six", truncation=True)["input_ids"]) == 4
    with pytest.raises(GptvizError, match="keep the start"):
        tok.truncation_side = "left"
    tok.truncation_side = "right"
    assert tok.unk_token is None and "<|endoftext|>" in tok.all_special_tokens
