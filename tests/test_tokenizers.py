"""Tokenizers: round trips, GPT-2 parity with transformers and tiktoken (offline), display strings, save/load."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from gptviz.tokenizers import (
    ENDOFTEXT,
    GPT2_EOS_ID,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    _split_at_safe_newlines,
    get_tokenizer,
    gpt2_bpe_files,
    load_tokenizer,
    tokenizer_from_dict,
)

TEXTS = [
    "Once upon a time",
    "The quick brown fox jumps over the lazy dog",
    "What is the capital of France?",
    "人工智能科学家",
    "ROMEO:\nBut, soft! what light\nthrough yonder window breaks?\n\n\nJULIET:\nAy me!\n",
    "multiple   spaces,\ttabs  and trailing spaces   ",
    "   leading spaces and a final newline\n",
    "emoji 🙂👍🏽 and accents: café, naïve, Ünïcödé",
    "numbers 1234567 and 3.14159, it's they're we'll I'd",
    f"end of one document.{ENDOFTEXT}Start of the next",
    " ",
    "",
]

CORPUS = "".join(TEXTS) * 3 + "Shakespeare wrote plays. " * 50


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer()


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def char():
    return CharTokenizer.from_text(CORPUS)


# ---------------------------------------------------------------------------------------------------------
# GPT-2 parity


def test_gpt2_ids_equal_transformers(gpt2, tmp_path):
    transformers = pytest.importorskip("transformers")
    encoder_json, vocab_bpe = gpt2_bpe_files()
    # The file names from_pretrained expects; the same bytes our tokenizer reads.
    shutil.copy(encoder_json, tmp_path / "vocab.json")
    shutil.copy(vocab_bpe, tmp_path / "merges.txt")
    hf = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    assert len(hf) == gpt2.vocab_size == 50257
    for text in TEXTS:
        ids = gpt2.encode(text)
        assert ids == hf.encode(text), text
        assert gpt2.decode(ids) == hf.decode(ids) == text


def test_gpt2_ids_equal_tiktoken_offline(gpt2, tmp_path, monkeypatch):
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken not installed (optional test dependency)")
    from tiktoken import load as tiktoken_load

    # tiktoken caches each downloaded file under sha1(url) in TIKTOKEN_CACHE_DIR; its gpt2 encoding reads
    # these two URLs (tiktoken_ext/openai_public.py) and checks their sha256, so pre-filling works offline.
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    encoder_json, vocab_bpe = gpt2_bpe_files()
    for url, src in ((base + "encoder.json", encoder_json), (base + "vocab.bpe", vocab_bpe)):
        shutil.copy(src, tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def no_network(url):
        raise AssertionError(f"tiktoken tried to download {url}; the cache file names are wrong")

    monkeypatch.setattr(tiktoken_load, "read_file", no_network)
    enc = tiktoken.get_encoding("gpt2")
    long_text = "\n".join(TEXTS) * 20
    for text in [*TEXTS, long_text]:
        assert gpt2.encode(text) == enc.encode(text, allowed_special="all"), text[:40]


def test_gpt2_known_ids_and_endoftext(gpt2):
    assert gpt2.encode("Once upon a time") == [7454, 2402, 257, 640]
    assert gpt2.eos_id == GPT2_EOS_ID == 50256
    ids = gpt2.encode(f"a{ENDOFTEXT}b")
    assert ids == [64, GPT2_EOS_ID, 65]  # the literal string is the special token, as in HF
    assert gpt2.decode(ids) == f"a{ENDOFTEXT}b"
    assert gpt2.tokens(ids) == ["a", ENDOFTEXT, "b"]


def test_long_text_is_encoded_in_chunks_with_identical_ids(gpt2):
    # Whitespace before and after newlines is where a careless cut would change the pieces (" \n " vs " ").
    verse = "To be, or not to be  \n\n   indented line \n word\t\n\n人工智能科学家 \n  \n end.\nplain\nlines\n"
    text = "".join(f"{i} {verse}" for i in range(3000))
    assert len(_split_at_safe_newlines(text, gpt2._CHUNK_CHARS)) > 3  # the chunked path really runs
    assert "".join(_split_at_safe_newlines(text, gpt2._CHUNK_CHARS)) == text
    assert gpt2.encode(text) == gpt2._tk.encode(text, add_special_tokens=False).ids
    # the safety claim itself: cut at every allowed place, encode the pieces separately, same ids
    pieces = _split_at_safe_newlines(verse * 3, 1)
    assert len(pieces) >= 9
    assert [i for p in pieces for i in gpt2.encode(p)] == gpt2.encode(verse * 3)


# ---------------------------------------------------------------------------------------------------------
# Round trips and display


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe"])
def test_round_trip(kind, char, gpt2, bpe):
    tok = {"char": char, "gpt2": gpt2, "bpe": bpe}[kind]
    for text in TEXTS:
        if kind == "char":
            text = text.replace(ENDOFTEXT, "")  # the char vocabulary has no special token; chars are in CORPUS
        ids = tok.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
        assert len(tok.tokens(ids)) == len(ids)


def test_decode_accepts_tensors_and_arrays(gpt2, char):
    ids = gpt2.encode("The quick brown fox")
    assert gpt2.decode(torch.tensor(ids)) == gpt2.decode(np.array(ids, dtype=np.int64)) == "The quick brown fox"
    assert gpt2.tokens(torch.tensor(ids)) == gpt2.tokens(ids)
    assert char.decode(torch.tensor(char.encode("Once"))) == "Once"


def test_decode_rejects_bad_ids(gpt2, char):
    with pytest.raises(ValueError, match=r"outside the vocabulary.*0\.\.50256"):
        gpt2.decode([50257])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        char.decode([-1])
    with pytest.raises(ValueError, match="1-D.*one row at a time"):
        gpt2.decode(torch.zeros(2, 3, dtype=torch.long))


def test_display_whitespace():
    tok = CharTokenizer.from_text("a b\n\tc\r")
    assert tok.tokens(tok.encode("a b\n\tc\r")) == ["a", "␣", "b", "↵", "⇥", "c", "␍"]
    gpt2 = GPT2Tokenizer()
    assert gpt2.tokens(gpt2.encode("Once upon a time")) == ["Once", "␣upon", "␣a", "␣time"]
    shown = gpt2.tokens(gpt2.encode("ROMEO:\n\n  But soft\t"))
    assert shown[3:6] == ["↵↵", "␣", "␣But"] and shown[-1] == "⇥"
    assert not any(c in "".join(shown) for c in "ĠĊ ")  # no raw byte-level letters, no invisible spaces


def test_display_chinese(gpt2, char, bpe):
    text = "人工智能科学家"
    assert char.tokens(char.encode(text)) == list(text)
    shown = gpt2.tokens(gpt2.encode(text))
    assert shown[0] == "人"  # a whole character in one GPT-2 token is shown as itself
    assert shown[1:3] == ["工(1/2)", "工(2/2)"]  # "工" = E5 B7 A5 spans two tokens: each piece says so
    assert gpt2.tokens(gpt2.encode(text)[2:3]) == ["<0xA5>"]  # a lone piece has nothing to complete it
    # reading the pieces back: whole tokens plus one copy of each split character spell the text
    spelled, i = "", 0
    while i < len(shown):
        s = shown[i]
        if s.endswith(")") and "(" in s:
            char, share = s[:-1].rsplit("(", 1)
            spelled += char
            i += int(share.split("/")[1])
        else:
            spelled += s
            i += 1
    assert spelled == text
    trained = BPETokenizer.train(text * 50 + " hello", vocab_size=300)
    assert "人工智能科学家" in "".join(trained.tokens(trained.encode(text)))


def test_char_tokenizer_vocab_and_unknown_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world")) and tok.vocab_size == 8 and tok.eos_id is None
    with pytest.raises(ValueError, match=r"2 character\(s\).*'é', '人'.*from_text"):
        tok.encode("héllo 人")
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer.from_text("")


# ---------------------------------------------------------------------------------------------------------
# Trained BPE


def test_bpe_train_is_deterministic_and_sized():
    a = BPETokenizer.train(CORPUS, vocab_size=350)
    b = BPETokenizer.train(CORPUS, vocab_size=350)
    assert a.to_dict() == b.to_dict()
    assert a.vocab_size == 350
    assert a.eos_id == 0 and a.tokens([a.eos_id]) == [ENDOFTEXT]
    assert a.encode(f"x{ENDOFTEXT}y")[1] == a.eos_id
    # trained merges make the training text shorter than raw bytes
    assert len(a.encode("Shakespeare wrote plays.")) < len("Shakespeare wrote plays.")


def test_bpe_rejects_tiny_vocab():
    with pytest.raises(ValueError, match="at least 257"):
        BPETokenizer.train(CORPUS, vocab_size=100)


# ---------------------------------------------------------------------------------------------------------
# Save / load / get_tokenizer


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe"])
def test_save_load_round_trip(kind, char, gpt2, bpe, tmp_path):
    tok = {"char": char, "gpt2": gpt2, "bpe": bpe}[kind]
    path = tok.save(tmp_path / "ckpt" / "tokenizer.json")
    assert json.loads(path.read_text(encoding="utf-8"))["kind"] == kind
    for loaded in (load_tokenizer(path), load_tokenizer(tmp_path / "ckpt"), tokenizer_from_dict(tok.to_dict())):
        assert type(loaded) is type(tok)
        assert (loaded.kind, loaded.vocab_size, loaded.eos_id) == (tok.kind, tok.vocab_size, tok.eos_id)
        text = "The quick brown fox\n"
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.tokens(tok.encode(text)) == tok.tokens(tok.encode(text))
    if kind == "gpt2":
        assert tok.to_dict() == {"kind": "gpt2"}


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No tokenizer file at .*Tokenizer.save"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "corrupt.json"
    bad.write_text('{"kind": "char", "chars": ["a"', encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid tokenizer JSON"):
        load_tokenizer(bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"kind": "wordpiece"}', encoding="utf-8")
    with pytest.raises(ValueError, match="Unknown tokenizer kind 'wordpiece'.*'char', 'gpt2', 'bpe'"):
        load_tokenizer(unknown)
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text('{"kind": "bpe"}', encoding="utf-8")
    with pytest.raises(ValueError, match="lacks the key 'tokenizer'"):
        load_tokenizer(incomplete)


def test_get_tokenizer():
    assert get_tokenizer("gpt2").vocab_size == 50257
    assert get_tokenizer("char", text="abca").vocab_size == 3
    assert get_tokenizer("bpe", text=CORPUS, vocab_size=300).kind == "bpe"
    with pytest.raises(ValueError, match="needs text="):
        get_tokenizer("char")
    with pytest.raises(ValueError, match="vocab_size="):
        get_tokenizer("bpe", text=CORPUS)
    with pytest.raises(ValueError, match="Unknown tokenizer 'sentencepiece'"):
        get_tokenizer("sentencepiece")


def test_invisible_spaces_are_named_in_tokens():
    """A no-break, ideographic or zero-width space would be a blank cell in a plot: tokens() names it."""
    from gptviz.tokenizers import visible

    assert visible("a\u00a0b\u3000c\u200bd e") == "a<U+00A0>b<U+3000>c<U+200B>d␣e"
    tok = get_tokenizer("gpt2")
    assert "<U+00A0>" in "".join(tok.tokens(tok.encode("x\u00a0y")))


# ---------------------------------------------------------------------------------------------------------
# Transformers' calling conventions (tok(...), encode/decode keywords, special-token attributes), checked
# against the real GPT2TokenizerFast built offline from the same files.

PROMPTS = ["Once upon a time", "The quick brown fox jumps over the"]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("gpt2-files")
    encoder_json, vocab_bpe = gpt2_bpe_files()
    shutil.copy(encoder_json, folder / "vocab.json")
    shutil.copy(vocab_bpe, folder / "merges.txt")
    tok = transformers.GPT2TokenizerFast.from_pretrained(folder, padding_side="left")
    tok.pad_token = tok.eos_token  # what transformers users write for GPT-2, which has no pad token
    return tok


def same(ours, theirs):
    """Our BatchEncoding equals transformers' (same keys, same values, same dtypes)."""
    assert set(ours) == set(theirs.keys())
    for key in ours:
        a, b = ours[key], theirs[key]
        if isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), key
        elif isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), key
        else:
            assert a == b, key


def test_padded_batch_equals_transformers(gpt2, hf):
    enc = gpt2(PROMPTS, return_tensors="pt", padding=True)
    same(enc, hf(PROMPTS, return_tensors="pt", padding=True))
    assert enc.input_ids.shape == (2, 7) and enc.input_ids.dtype == torch.long
    assert enc.input_ids[0, :3].tolist() == [GPT2_EOS_ID] * 3  # left padding with pad = eos
    assert enc["attention_mask"][0].tolist() == [0, 0, 0, 1, 1, 1, 1]
    for kw in ({"padding": "longest"}, {"padding": "max_length", "max_length": 10}, {"pad_to_multiple_of": 8}):
        kw = {"padding": True, **kw}
        same(gpt2(PROMPTS, return_tensors="pt", **kw), hf(PROMPTS, return_tensors="pt", **kw))
    same(gpt2(PROMPTS, return_tensors="np", padding=True), hf(PROMPTS, return_tensors="np", padding=True))


def test_right_padding_and_per_call_side(hf):
    tok = GPT2Tokenizer()
    assert tok.padding_side == "left"  # the default: generation continues after the last column
    tok.padding_side = "right"
    hf.padding_side = "right"
    try:
        same(tok(PROMPTS, return_tensors="pt", padding=True), hf(PROMPTS, return_tensors="pt", padding=True))
    finally:
        hf.padding_side = "left"
    left = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    same(left, hf(PROMPTS, return_tensors="pt", padding=True))
    with pytest.raises(ValueError, match="padding_side='lft'.*did you mean 'left'"):
        tok.padding_side = "lft"


def test_single_text_and_list_forms_equal_transformers(gpt2, hf):
    one = gpt2("Once upon a time")
    assert one == {"input_ids": [7454, 2402, 257, 640], "attention_mask": [1, 1, 1, 1]}
    same(one, hf("Once upon a time"))
    same(gpt2("Once upon a time", return_tensors="pt"), hf("Once upon a time", return_tensors="pt"))
    assert gpt2("Once upon a time", return_tensors="pt").input_ids.shape == (1, 4)
    same(gpt2(PROMPTS), hf(PROMPTS))  # lists of lists, not padded
    same(gpt2(PROMPTS, padding=True), hf(PROMPTS, padding=True))
    assert gpt2("", return_tensors="pt").input_ids.shape == (1, 0)
    assert set(gpt2(PROMPTS, return_attention_mask=False)) == {"input_ids"}


def test_truncation_equals_transformers(gpt2, hf):
    for kw in (
        {"truncation": True, "max_length": 3},
        {"max_length": 3},  # max_length alone truncates, as in transformers
        {"truncation": "longest_first", "max_length": 5, "padding": True},
        {"truncation": True, "max_length": 6, "padding": "max_length"},
        {"truncation": False, "max_length": 9, "padding": "max_length"},
    ):
        same(gpt2(PROMPTS, **kw), hf(PROMPTS, **kw))
        assert gpt2.encode(PROMPTS[1], **kw) == hf.encode(PROMPTS[1], **kw), kw
    assert gpt2(PROMPTS[1], truncation=True, max_length=3).input_ids == gpt2.encode(PROMPTS[1])[:3]  # the first 3
    long_text = "word " * 2000
    assert len(gpt2.encode(long_text, truncation=True)) == gpt2.model_max_length == 1024  # GPT-2's context


def test_encode_decode_keywords_equal_transformers(gpt2, hf):
    for text in ["The quick brown fox", "人工智能科学家", "What is the capital of France?"]:
        ids = gpt2.encode(text, return_tensors="pt")
        assert torch.equal(ids, hf.encode(text, return_tensors="pt")) and ids.shape == (1, len(gpt2.encode(text)))
        assert gpt2.encode(text, add_special_tokens=True) == hf.encode(text, add_special_tokens=True)
        assert gpt2.encode(text) == gpt2.encode(text, add_special_tokens=False)  # GPT-2 adds nothing
        assert gpt2.decode(ids[0], skip_special_tokens=True) == hf.decode(ids[0], skip_special_tokens=True) == text
    ids = [GPT2_EOS_ID, *gpt2.encode("Hello"), GPT2_EOS_ID]
    assert gpt2.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True) == "Hello"
    assert gpt2.decode(ids) == hf.decode(ids) == f"{ENDOFTEXT}Hello{ENDOFTEXT}"
    assert gpt2.decode(ids, True) == "Hello"  # positional, as transformers allows
    padded = gpt2(PROMPTS, return_tensors="pt", padding=True).input_ids
    assert gpt2.batch_decode(padded, skip_special_tokens=True) == hf.batch_decode(padded, skip_special_tokens=True)
    assert gpt2.batch_decode(padded, skip_special_tokens=True) == PROMPTS
    assert gpt2.batch_decode(padded.numpy()) == gpt2.batch_decode(padded.tolist()) == hf.batch_decode(padded)
    assert gpt2.decode(np.int64(7454)) == gpt2.decode(7454) == "Once"
    with pytest.warns(UserWarning, match="clean_up_tokenization_spaces=True is ignored"):
        assert gpt2.decode(gpt2.encode("Hi , you .")) == "Hi , you ."
        assert gpt2.decode(gpt2.encode("Hi , you ."), clean_up_tokenization_spaces=True) == "Hi , you ."


def test_special_token_attributes_equal_transformers(gpt2, hf):
    assert gpt2.eos_token_id == hf.eos_token_id == gpt2.eos_id == GPT2_EOS_ID
    assert gpt2.bos_token_id == hf.bos_token_id == GPT2_EOS_ID
    assert gpt2.eos_token == gpt2.bos_token == hf.eos_token == ENDOFTEXT
    assert gpt2.pad_token_id == hf.pad_token_id == GPT2_EOS_ID and gpt2.pad_token == hf.pad_token
    assert len(gpt2) == len(hf) == gpt2.vocab_size == 50257
    assert gpt2.all_special_ids == hf.all_special_ids == [GPT2_EOS_ID]
    ids = gpt2.encode("Once upon a time\n")
    assert gpt2.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids) == ["Once", "Ġupon", "Ġa", "Ġtime", "Ċ"]
    assert gpt2.convert_ids_to_tokens(ids[1]) == hf.convert_ids_to_tokens(ids[1]) == "Ġupon"
    assert gpt2.convert_tokens_to_ids(["Ġupon", ENDOFTEXT]) == hf.convert_tokens_to_ids(["Ġupon", ENDOFTEXT])
    assert gpt2.convert_tokens_to_ids("Once") == 7454
    with pytest.raises(ValueError, match="'not-a-token' is not a token"):
        gpt2.convert_tokens_to_ids("not-a-token")


def test_pad_token_rules():
    tok = GPT2Tokenizer()
    assert tok.pad_token_id == tok.eos_token_id  # no pad token: end-of-text
    tok.pad_token = tok.eos_token  # the transformers idiom works
    tok.pad_token_id = 0
    assert tok.pad_token == "!" and tok(PROMPTS, padding=True).input_ids[0][:3] == [0, 0, 0]
    assert 0 in tok.all_special_ids  # a pad token you set is special: skip_special_tokens drops it
    tok.pad_token = None  # back to the fallback
    assert tok.pad_token_id == GPT2_EOS_ID
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.pad_token_id = 50257
    char = CharTokenizer.from_text("abc ")
    assert (char.eos_token_id, char.bos_token_id, char.pad_token_id, char.all_special_ids) == (None, None, 0, [])


def test_batch_encoding_behaves_like_transformers(gpt2):
    enc = gpt2(PROMPTS, return_tensors="pt", padding=True)
    assert enc.input_ids is enc["input_ids"] and enc.attention_mask is enc["attention_mask"]
    assert isinstance(enc, dict) and list(enc) == ["input_ids", "attention_mask"]

    def model(input_ids, attention_mask):  # what **enc is for: generate(**tok(text, return_tensors="pt"))
        return input_ids.shape, int(attention_mask.sum())

    assert model(**enc) == ((2, 7), 11)
    assert enc.to("cpu") is enc and enc.to(torch.device("cpu")).input_ids.device.type == "cpu"
    with pytest.raises(AttributeError, match="no 'token_type_ids'.*'input_ids', 'attention_mask'"):
        _ = enc.token_type_ids
    with pytest.raises(ValueError, match="return_tensors='pt'"):
        gpt2("hi").to("cpu")
    import copy
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(enc)).input_ids, copy.deepcopy(enc).input_ids)


def test_uneven_batch_without_padding_says_pass_padding(gpt2):
    with pytest.raises(ValueError, match=r"different lengths \(4 to 7 tokens\).*pass padding=True"):
        gpt2(PROMPTS, return_tensors="pt")
    with pytest.raises(ValueError, match="pass padding=True"):
        gpt2(PROMPTS, return_tensors="pt", padding="max_length", max_length=5, truncation=False)


def test_char_and_bpe_call_forms(char, bpe):
    texts = ["To be", "or not to be"]
    enc = char(texts, return_tensors="pt", padding=True)
    assert enc.input_ids.shape == (2, 12) and char.pad_token_id == 0
    assert enc.input_ids[0].tolist() == [0] * 7 + char.encode("To be")
    assert enc.attention_mask[0].tolist() == [0] * 7 + [1] * 5
    assert char.encode("To be", return_tensors="pt").tolist() == [char.encode("To be")]
    assert char("To be", truncation=True, max_length=2).input_ids == char.encode("To")
    assert char.decode(enc.input_ids[1], skip_special_tokens=True) == "or not to be"  # the char tokenizer has none
    assert char.batch_decode(enc.input_ids[:, -5:]) == ["To be", "to be"]
    assert char.convert_ids_to_tokens(char.encode("ab")) == ["a", "b"] and char.convert_tokens_to_ids(
        "b"
    ) == char.chars.index("b")
    with pytest.warns(UserWarning, match="no model_max_length: nothing was cut"):
        assert char("To be", truncation=True).input_ids == char.encode("To be")

    enc = bpe(texts, return_tensors="pt", padding=True)
    assert bpe.pad_token_id == bpe.eos_token_id == bpe.bos_token_id == 0 and bpe.pad_token == ENDOFTEXT
    assert bpe.batch_decode(enc.input_ids, skip_special_tokens=True) == texts
    assert bpe.encode(texts[1], add_special_tokens=True) == bpe.encode(texts[1])  # a trained BPE adds nothing
    assert bpe.all_special_ids == [0] and len(bpe) == bpe.vocab_size


def test_bad_keywords_name_the_supported_spelling(gpt2, char):
    cases = [
        (lambda: gpt2.encode("hi", return_tensor="pt"), TypeError, r"'return_tensor'.*did you mean 'return_tensors'"),
        (lambda: gpt2("hi", paddding=True), TypeError, r"'paddding'.*did you mean 'padding'"),
        (lambda: gpt2("hi", max_len=8), TypeError, r"did you mean 'max_length'"),
        (lambda: char(["ab"], return_tensors="tf"), ValueError, r"return_tensors='tf'.*use 'pt'"),
        (lambda: gpt2("hi", return_tensors="torch"), ValueError, r"did you mean 'pt'"),
        (lambda: gpt2("hi", padding="longst"), ValueError, r"did you mean 'longest'"),
        (lambda: gpt2("hi", truncation="longest_frist"), ValueError, r"did you mean 'longest_first'"),
        (lambda: gpt2("hi", max_length=0), ValueError, r"max_length=0 must be a positive"),
        (lambda: gpt2("hi", text_pair="there"), ValueError, r"text_pair='there' is not supported.*pairs"),
        (lambda: gpt2("hi", padding="max_length"), None, None),  # GPT-2 has a model_max_length: pads to 1024
        (lambda: char("ab", padding="max_length"), ValueError, r"needs max_length="),
        (lambda: gpt2.decode([1, 2], skip_special_token=True), TypeError, r"did you mean 'skip_special_tokens'"),
        (lambda: gpt2.batch_decode([[1]], skip_specials=True), TypeError, r"did you mean 'skip_special_tokens'"),
        (lambda: gpt2.batch_decode([1, 2]), ValueError, r"for one sequence use tok.decode"),
        (lambda: gpt2.decode(torch.zeros(1, 3, dtype=torch.long)), ValueError, r"tok.decode\(ids\[0\]\).*batch_dec"),
        (lambda: gpt2.encode(PROMPTS), ValueError, r"for several texts call tok\(texts, padding=True"),
        (lambda: gpt2([]), ValueError, r"empty list"),
        (lambda: gpt2([1, 2, 3]), ValueError, r"look like token ids"),
        (lambda: gpt2([["Once", "upon"]]), ValueError, r"pre-split words"),
    ]
    for call, error, message in cases:
        if error is None:
            assert call().input_ids[0] == GPT2_EOS_ID
            continue
        with pytest.raises(error, match=message):
            call()
    # transformers keywords at their defaults are accepted (and mean nothing here)
    assert gpt2("hi", stride=0, verbose=False, return_token_type_ids=False, is_split_into_words=False).input_ids


def test_pretrained_tokenizer_post_processor_padding_and_truncation_equal_transformers():
    """A tokenizer.json whose post-processor adds a bos (as Llama's does): add_special_tokens=True adds it, as in
    transformers; truncation keeps room for it; the chunked encoding of a long text keeps it once."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    from gptviz.tokenizers import PretrainedTokenizer

    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[ENDOFTEXT, "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator([CORPUS], trainer=trainer)
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    ours = PretrainedTokenizer(HFTokenizer.from_str(tk.to_str()), "</s>", "<s>", None, "<pad>")
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=HFTokenizer.from_str(tk.to_str()),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
    )
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (hf.bos_token_id, hf.eos_token_id, 3)
    for kw in (
        {"padding": True},
        {"padding": True, "truncation": True, "max_length": 4},
        {"max_length": 3},
        {"padding": True, "add_special_tokens": False},
        {"padding": "max_length", "max_length": 30},
    ):
        same(ours(PROMPTS, return_tensors="pt", **kw), hf(PROMPTS, return_tensors="pt", **kw))
    assert ours.encode("Once") == hf.encode("Once") and ours.encode("Once")[0] == 1  # the bos, by default
    assert ours.encode("Once", add_special_tokens=False) == hf.encode("Once", add_special_tokens=False)
    ids = ours.encode("Once upon a time") + [2, 3]
    assert ours.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True) == "Once upon a time"
    long_text = "\n".join(TEXTS) * 50
    ours._CHUNK_CHARS = 500  # the chunked path, with a post-processor
    assert len(_split_at_safe_newlines(long_text, ours._CHUNK_CHARS)) > 3
    assert ours.encode(long_text) == hf.encode(long_text)
    assert ours.encode(long_text, max_length=7) == hf.encode(long_text, max_length=7, truncation=True)
    back = tokenizer_from_dict(ours.to_dict())
    assert (back.pad_token, back.bos_token, back.eos_token) == ("<pad>", "<s>", "</s>")


def test_a_few_thousand_texts_encode_quickly(gpt2, hf):
    import time

    texts = [f"{PROMPTS[i % 2]} number {i}, and then some more words" for i in range(3000)]
    start = time.perf_counter()
    enc = gpt2(texts, return_tensors="pt", padding=True)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = hf(texts, return_tensors="pt", padding=True)
    same(enc, theirs)
    assert ours < max(1.0, 3 * (time.perf_counter() - start)), ours
