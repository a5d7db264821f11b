"""Data: the cleaned Shakespeare corpus, splits by document, token batches, labelled sets and their errors."""

import collections
import re

import numpy as np
import pytest
import torch

from gptviz.data import (
    GENRES,
    SHAKESPEARE_VAL_PLAYS,
    Example,
    TokenDataset,
    clean_play_markdown,
    load_corpus,
    load_labelled_csv,
    shakespeare_genre_passages,
    shakespeare_plays,
    split_by_group,
)
from gptviz.tokenizers import CharTokenizer

# ---------------------------------------------------------------------------------------------------------
# Shakespeare


@pytest.fixture(scope="module")
def plays():
    return shakespeare_plays()


def test_38_plays_in_every_genre(plays):
    assert len(plays) == 38
    assert [p.name for p in plays] == sorted(p.name for p in plays)
    assert {p.genre for p in plays} == set(GENRES)
    assert {p.name for p in plays if p.genre == "tragedies"} >= {"hamlet", "macbeth", "king-lear"}
    assert {p.name: p.title for p in plays}["hamlet"] == "Hamlet"
    assert shakespeare_plays() == plays and shakespeare_plays() is not plays  # cached, but a fresh list


def test_cleaned_text_has_no_markdown(plays):
    for p in plays:
        assert "**" not in p.text and "#" not in p.text and "\\" not in p.text, p.name
        assert "\n\n\n" not in p.text, p.name  # speeches are separated by exactly one blank line
        for line in p.text.split("\n"):
            assert not line.startswith(("_", "*", "[")), (p.name, line)  # no stage directions left
            assert line == line.strip(), (p.name, line)  # no Markdown "two trailing spaces"
        speeches = p.text.strip().split("\n\n")
        named = sum(bool(re.match(r"^[^\n]+:\n\S", s)) for s in speeches)
        assert named >= 0.99 * len(speeches), p.name  # "NAME:" on its own line, then the speech
    hamlet = {p.name: p for p in plays}["hamlet"].text
    assert hamlet.startswith("BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n")
    assert "HAMLET:\nTo be, or not to be: that is the question:\n" in hamlet
    assert "Enter Ghost" not in hamlet and "ACT I" not in hamlet


def test_clean_play_markdown_rules():
    md = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A long heading that wraps onto\n\nthe next paragraph.\n\n"
        "_Enter ALICE and BOB,\nwith attendants_\n\n**ALICE**  \nHello there,  \nBob.\n\n"
        "**BOB**  \n_\\[Aside]_  \nGood \\--day, _\\[dear]_ Alice.\n\n_Exit ALICE_\n\n"
        "I stay here.\n\n*Sound a horn.*\n\n"
    )
    title, text = clean_play_markdown(md)
    assert title == "A Play"
    assert text == "ALICE:\nHello there,\nBob.\n\nBOB:\nGood --day, dear Alice.\nI stay here.\n"


# ---------------------------------------------------------------------------------------------------------
# Corpora


def test_shakespeare_corpus_split_by_play(plays):
    corpus = load_corpus("shakespeare")
    assert corpus.val_docs == sorted(SHAKESPEARE_VAL_PLAYS)
    assert set(corpus.train_docs).isdisjoint(corpus.val_docs)
    assert set(corpus.train_docs) | set(corpus.val_docs) == {p.name for p in plays}
    by_name = {p.name: p for p in plays}
    assert len({by_name[n].genre for n in corpus.val_docs}) >= 3
    share = len(corpus.val_text) / (len(corpus.val_text) + len(corpus.train_text))
    assert 0.08 < share < 0.12
    for name in corpus.val_docs:  # held-out plays are in the validation text only
        opening = by_name[name].text[:300]
        assert opening in corpus.val_text and opening not in corpus.train_text
    assert by_name["hamlet"].text[:300] in corpus.train_text
    assert "5,000" not in str(corpus) and len(repr(corpus)) < 2000  # the repr does not dump megabytes


def test_shakespeare_custom_val_plays_and_errors():
    corpus = load_corpus("shakespeare", val_docs=["hamlet", "macbeth"])
    assert corpus.val_docs == ["hamlet", "macbeth"] and "hamlet" not in corpus.train_docs
    other = load_corpus("shakespeare", val_fraction=0.2)
    assert 0.2 <= len(other.val_text) / (len(other.val_text) + len(other.train_text)) < 0.25
    with pytest.raises(ValueError, match=r"unknown play names \['hamlett'\].*Known plays"):
        load_corpus("shakespeare", val_docs=["hamlett"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        load_corpus("shakespeare", val_fraction=1.5)


def test_text_file_split_at_end_on_a_line_boundary(tmp_path):
    lines = [f"line {i:03d} of the story" for i in range(200)]
    path = tmp_path / "story.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = load_corpus(path, val_fraction=0.1)
    assert corpus.train_text + corpus.val_text == path.read_text(encoding="utf-8")
    assert corpus.val_text.startswith("line ") and corpus.train_text.endswith("\n")
    assert 0.08 < len(corpus.val_text) / len(path.read_text(encoding="utf-8")) < 0.12
    assert corpus.train_docs == corpus.val_docs == ["story.txt"]


def test_folder_split_by_file(tmp_path):
    for i in range(10):
        (tmp_path / f"chapter{i}.txt").write_text(f"Chapter {i}\n" + "words " * 100 + "\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# notes\nsome notes\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # ignored: not .txt/.md
    corpus = load_corpus(tmp_path, val_fraction=0.2)
    assert set(corpus.train_docs).isdisjoint(corpus.val_docs)
    assert len(corpus.train_docs) + len(corpus.val_docs) == 11
    for name in corpus.val_docs:
        first_line = (tmp_path / name).read_text(encoding="utf-8").split("\n")[0]
        assert first_line in corpus.val_text and first_line + "\n" not in corpus.train_text
    chosen = load_corpus(tmp_path, val_docs=["chapter3.txt"])
    assert chosen.val_docs == ["chapter3.txt"] and "Chapter 3\n" not in chosen.train_text
    with pytest.raises(ValueError, match=r"unknown file names \['chapter99.txt'\]"):
        load_corpus(tmp_path, val_docs=["chapter99.txt"])


def test_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No corpus at .*nowhere.*\"shakespeare\".*folder"):
        load_corpus(tmp_path / "nowhere.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        load_corpus(empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Café au lait\n".encode("latin-1") * 10)
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 0xE9.*Save the file as UTF-8"):
        load_corpus(latin1)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match="no non-empty .txt or .md files"):
        load_corpus(folder)
    one_line = tmp_path / "short.txt"
    one_line.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="too short to split"):
        load_corpus(one_line)


# ---------------------------------------------------------------------------------------------------------
# Token datasets and batches


def test_token_dataset_dtype():
    assert TokenDataset(np.arange(10), vocab_size=50257).tokens.dtype == np.uint16
    assert TokenDataset(np.arange(10), vocab_size=70000).tokens.dtype == np.uint32
    tok = CharTokenizer.from_text("abc\n")
    ds = TokenDataset.from_text("abcabc\n", tok)
    assert ds.tokens.tolist() == tok.encode("abcabc\n") and ds.vocab_size == 4 and len(ds) == 7
    with pytest.raises(ValueError, match="1-D"):
        TokenDataset(np.zeros((2, 3), dtype=np.int64))


def test_get_batch_shapes_and_shift():
    ds = TokenDataset(np.arange(1000) % 997, vocab_size=1000)
    x, y = ds.get_batch(8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    assert torch.equal(y, x + 1)  # windows are contiguous slices of the data (ids 0..996 only, no wrap here)
    assert x.min() >= 0 and y.max() < 997


def test_get_batch_is_reproducible_with_the_generator():
    ds = TokenDataset(np.random.default_rng(0).integers(0, 50, 5000), vocab_size=50)
    a = [ds.get_batch(4, 32, g) for g in [torch.Generator().manual_seed(123)] for _ in range(3)]
    b = [ds.get_batch(4, 32, g) for g in [torch.Generator().manual_seed(123)] for _ in range(3)]
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    other = ds.get_batch(4, 32, torch.Generator().manual_seed(124))[0]
    assert not torch.equal(a[0][0], other)
    # resuming: a restored generator state continues the same stream
    g = torch.Generator().manual_seed(7)
    ds.get_batch(4, 32, g)
    state = g.get_state()
    nxt = ds.get_batch(4, 32, g)[0]
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(ds.get_batch(4, 32, g2)[0], nxt)
    torch.manual_seed(0)  # the global RNG plays no part
    first = ds.get_batch(4, 32, torch.Generator().manual_seed(5))[0]
    torch.manual_seed(1)
    assert torch.equal(ds.get_batch(4, 32, torch.Generator().manual_seed(5))[0], first)


def test_get_batch_too_short():
    ds = TokenDataset(np.arange(5), vocab_size=10)
    with pytest.raises(ValueError, match=r"has 5 tokens.*block_size \+ 1 = 9.*smaller block_size \(at most 4\)"):
        ds.get_batch(2, 8, torch.Generator().manual_seed(0))
    x, y = ds.get_batch(2, 4, torch.Generator().manual_seed(0))  # exactly enough
    assert x.tolist() == [[0, 1, 2, 3]] * 2 and y.tolist() == [[1, 2, 3, 4]] * 2


def test_token_dataset_save_load(tmp_path):
    ds = TokenDataset(np.random.default_rng(1).integers(0, 70000, 3000), vocab_size=70000)
    path = ds.save(tmp_path / "train")
    assert path.name == "train.bin" and (tmp_path / "train.json").is_file()
    loaded = TokenDataset.load(tmp_path / "train.bin")
    assert isinstance(loaded.tokens, np.memmap) and loaded.tokens.dtype == np.uint32
    assert np.array_equal(loaded.tokens, ds.tokens) and loaded.vocab_size == 70000
    in_ram = TokenDataset.load(tmp_path / "train", mmap=False)
    assert not isinstance(in_ram.tokens, np.memmap)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(loaded.get_batch(2, 8, g1)[0], ds.get_batch(2, 8, g2)[0])
    with pytest.raises(FileNotFoundError, match="TokenDataset.save"):
        TokenDataset.load(tmp_path / "missing.bin")
    (tmp_path / "train.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="do not belong together"):
        TokenDataset.load(tmp_path / "train.bin")


# ---------------------------------------------------------------------------------------------------------
# Labelled sets


@pytest.fixture(scope="module")
def passages():
    return shakespeare_genre_passages(passage_chars=400)


def test_genre_passages(passages, plays):
    labels = collections.Counter(e.label for e in passages)
    assert set(labels) == {"comedies", "histories", "tragedies"} and min(labels.values()) > 500
    genre = {p.name: p.genre for p in plays}
    assert all(genre[e.group] == e.label for e in passages)
    assert all(100 <= len(e.text) <= 400 for e in passages)
    few = shakespeare_genre_passages(("roman", "romances"), passage_chars=300, max_per_play=5)
    expected = {p.name: 5 for p in plays if p.genre in ("roman", "romances")}
    assert collections.Counter(e.group for e in few) == expected
    with pytest.raises(ValueError, match=r"unknown: \['tragedy'\]"):
        shakespeare_genre_passages(("comedies", "tragedy"))


def test_split_by_group_has_no_leakage(passages):
    train, test = split_by_group(passages, test_fraction=0.25, seed=0)
    assert len(train) + len(test) == len(passages)
    assert {e.group for e in train}.isdisjoint(e.group for e in test)
    for label in ("comedies", "histories", "tragedies"):  # every label on both sides
        assert any(e.label == label for e in test) and any(e.label == label for e in train)
    again, _ = split_by_group(passages, seed=0)
    assert again == train
    other_groups = {e.group for e in split_by_group(passages, seed=1)[1]}
    assert other_groups != {e.group for e in test}  # the seed matters
    chosen_train, chosen_test = split_by_group(passages, test_groups=["hamlet", "henry-v"])
    assert {e.group for e in chosen_test} == {"hamlet", "henry-v"}
    with pytest.raises(ValueError, match=r"test_groups \['hamlett'\] do not occur"):
        split_by_group(passages, test_groups=["hamlett"])


def test_split_by_group_needs_two_groups_per_label():
    examples = [Example("a", "x", "g1"), Example("b", "x", "g2"), Example("c", "y", "g3")]
    with pytest.raises(ValueError, match=r"Labels \['y'\] occur in only one group"):
        split_by_group(examples)


def test_load_labelled_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('\ufefftext, label ,group\n"Great, really",pos,a\nBad,neg,a\nFine,pos,b\n', encoding="utf-8")
    examples = load_labelled_csv(path)
    assert examples == [Example("Great, really", "pos", "a"), Example("Bad", "neg", "a"), Example("Fine", "pos", "b")]
    no_group = tmp_path / "no_group.csv"
    no_group.write_text("text,label\nx,1\ny,2\nz,1\n", encoding="utf-8")
    assert len({e.group for e in load_labelled_csv(no_group)}) == 3  # each row its own group


def test_load_labelled_csv_errors(tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sentence,category\nhello,a\n", encoding="utf-8")
    expected = r"missing column\(s\) \['text', 'label'\]; found columns \['sentence', 'category'\]"
    with pytest.raises(ValueError, match=expected):
        load_labelled_csv(wrong)
    holes = tmp_path / "holes.csv"
    holes.write_text("text,label\nok,a\nno label,\n,b\nfine,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"2 row\(s\) have an empty text or label: rows 3, 4"):
        load_labelled_csv(holes)
    single = tmp_path / "single.csv"
    single.write_text("text,label\nx,a\ny,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="only the label 'a'.*at least two"):
        load_labelled_csv(single)
    with pytest.raises(FileNotFoundError, match="No CSV file at"):
        load_labelled_csv(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------------------------
# Package layout


def test_every_public_name_is_reexported_from_its_module():
    import importlib

    import gptviz.data as data

    homes = {
        "shakespeare": {"GENRES", "Play", "clean_play_markdown", "shakespeare_plays"},
        "corpus": {"SHAKESPEARE_VAL_PLAYS", "Corpus", "load_corpus"},
        "batches": {"TokenDataset", "RepeatedSequences"},
        "labelled": {"Example", "shakespeare_genre_passages", "load_labelled_csv", "split_by_group"},
    }
    assert sorted(data.__all__) == sorted(set().union(*homes.values()))
    for module, names in homes.items():
        sub = importlib.import_module(f"gptviz.data.{module}")
        assert sub.__doc__ and sub.__doc__.strip()
        for name in names:
            assert getattr(data, name) is getattr(sub, name), (module, name)
