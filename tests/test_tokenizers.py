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
    import tiktoken.load

    # tiktoken caches each downloaded file under sha1(url) in TIKTOKEN_CACHE_DIR; its gpt2 encoding reads
    # these two URLs (tiktoken_ext/openai_public.py) and checks their sha256, so pre-filling works offline.
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    encoder_json, vocab_bpe = gpt2_bpe_files()
    for url, src in ((base + "encoder.json", encoder_json), (base + "vocab.bpe", vocab_bpe)):
        shutil.copy(src, tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def no_network(url):
        raise AssertionError(f"tiktoken tried to download {url}; the cache file names are wrong")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
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
