"""The embedding map: PCA of the token and position tables, nearest neighbours, properties."""

import numpy as np
import pytest
import torch
from conftest import tiny_llama
from sklearn.decomposition import PCA

from gptviz import GPT, GPTConfig
from gptviz.embedding_map import embedding_map, neighbour_summary, token_class
from gptviz.tokenizers import get_tokenizer

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks? 42 times!\n"


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("char", text=TEXT)


def model(tok, pos="learned", block=64):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block, n_layer=1, n_head=2, n_embd=32, pos_encoding=pos))


def test_token_map_is_the_pca_of_wte(tok):
    m = model(tok)
    emap = embedding_map(m, tok, "tokens", text=TEXT)
    W = m.wte.weight.detach().numpy().astype(np.float64)
    pca = PCA(3).fit(W)
    for i in range(3):  # the same axes, up to a sign
        ours, ref = emap.points[:, i], pca.transform(W)[:, i]
        assert np.allclose(ours, ref, atol=1e-6) or np.allclose(ours, -ref, atol=1e-6)
    assert emap.explained == pytest.approx(pca.explained_variance_ratio_)
    assert emap.labels == tok.tokens(list(range(tok.vocab_size)))
    counts = np.bincount(tok.encode(TEXT), minlength=tok.vocab_size)
    assert emap.properties["log count"] == pytest.approx(np.log10(1 + counts))
    unit = W / np.linalg.norm(W, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -2)
    assert (emap.nearest == sim.argmax(1)).all()


def test_sinusoidal_positions_are_each_others_neighbours(tok):
    emap = embedding_map(model(tok, "sinusoidal"), tok, "positions")
    assert emap.labels[3] == "pos 3" and len(emap.ids) == 64
    s = neighbour_summary(emap)
    assert s["adjacent"] == 1.0 and s["median_offset"] == 1.0
    assert set(np.abs(emap.nearest_offset)) == {1}
    assert emap.properties["nearest offset"].tolist() == emap.nearest_offset.tolist()


def test_positions_of_a_rotary_model_are_refused(tok):
    with pytest.raises(ValueError, match="no position vectors"):
        embedding_map(tiny_llama(tok.vocab_size), tok, "positions")
    emap = embedding_map(tiny_llama(tok.vocab_size), tok, "tokens", ids=[1, 2, 3, 4, 5])
    assert emap.points.shape == (5, 3)


def test_ids_and_errors(tok):
    m = model(tok)
    emap = embedding_map(m, tok, "positions", ids=range(10, 30))
    assert emap.ids.tolist() == list(range(10, 30)) and emap.properties["position"][0] == 10
    with pytest.raises(ValueError, match="at least 4 indices"):
        embedding_map(m, tok, "positions", ids=[0, 1])
    with pytest.raises(ValueError, match="kind must be"):
        embedding_map(m, tok, "heads")


@pytest.mark.parametrize(
    "token, cls",
    [
        ("a", "lower-case"),
        ("␣the", "lower-case"),
        ("R", "upper-case start"),
        ("7", "digit"),
        ("?", "punctuation"),
        ("␣", "space / newline"),
        ("↵", "space / newline"),
        ("工(1/2)", "other (bytes, symbols)"),
        ("人", "other (bytes, symbols)"),
    ],
)
def test_token_classes(token, cls):
    assert token_class(token) == cls
