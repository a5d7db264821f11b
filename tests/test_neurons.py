"""MLP neuron records: activations checked by hand (GELU and gated SwiGLU), top contexts, NMF factors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_llama

from gptviz import GPT, GPTConfig, capture
from gptviz.neurons import mlp_factors, neuron_record, top_activations
from gptviz.tokenizers import get_tokenizer

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("char", text=TEXT)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()


def mlp_input(model, ids, layer):
    """What block `layer`'s MLP reads: ln_2 of the residual stream after attention."""
    name = f"blocks.{layer}.hook_resid_mid"
    with torch.no_grad(), capture(model, [name]) as cap:
        model(ids[None])
    return model.blocks[layer].ln_2(cap[name])[0]  # (T, C)


def test_gelu_neurons_by_hand(model, tok):
    ids = torch.tensor(tok.encode(TEXT[:30]))
    rec = neuron_record(model, tok, ids, layer=1)
    with torch.no_grad():
        expected = F.gelu(model.blocks[1].mlp.c_fc(mlp_input(model, ids, 1)), approximate="tanh")  # (T, 4C)
    torch.testing.assert_close(rec.values, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rec.neuron(1, 7), expected[:, 7])
    n, v = rec.strongest(1, 1)[0]
    assert v == pytest.approx(float(expected.max())) and n == int(expected.max(0).values.argmax())
    pre = neuron_record(model, tok, ids, layer=[0, 1], hook="pre")
    assert pre.values.shape == (30, 2 * 64) and pre.layers == [0, 1]


def test_gated_neurons_by_hand(tok):
    """A gated MLP's neuron is silu(gate) * up, the value its down projection reads."""
    m = tiny_llama(tok.vocab_size)
    ids = torch.tensor(tok.encode(TEXT[:20]))
    rec = neuron_record(m, tok, ids, layer=0)
    with torch.no_grad():
        gate, up = m.blocks[0].mlp.c_fc(mlp_input(m, ids, 0)).chunk(2, dim=-1)
    torch.testing.assert_close(rec.values, F.silu(gate) * up, rtol=1e-5, atol=1e-6)


def test_top_activations_over_a_corpus(model, tok):
    corpus = TEXT * 3  # longer than the block size: read in windows of 32
    top = top_activations(model, tok, corpus, layer=0, neuron=5, k=6, context=4)
    ids = torch.tensor(tok.encode(corpus))
    stream = torch.cat(  # each window on its own, as the function reads it
        [neuron_record(model, tok, ids[i : i + 32], layer=0).neuron(0, 5) for i in range(0, len(ids), 32)]
    )
    assert top.n_tokens == len(ids) and top.max == pytest.approx(float(stream.max()), rel=1e-5)
    values = [e.value for e in top.examples]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(float(stream.max()), rel=1e-5)
    for e in top.examples:
        assert e.values[e.focus] == pytest.approx(e.value) and len(e.tokens) <= 9
        assert e.tokens[e.focus] == tok.tokens([int(ids[e.position])])[0]
    assert top.token_means[0][1] >= top.token_means[-1][1]


def test_nmf_factors(model, tok):
    rec = neuron_record(model, tok, TEXT[:32], layer=None)  # every layer, as ecco factors them
    fac = mlp_factors(model, tok, None, n_factors=4, record=rec)
    assert fac.weights.shape == (32, 4) and fac.components.shape == (4, 2 * 64)
    assert (fac.weights >= 0).all() and (fac.components >= 0).all()
    assert 0 < fac.explained <= 1 and 0 <= fac.clipped < 1
    sums = fac.weights.sum(0)
    assert (sums[:-1] >= sums[1:]).all()  # strongest factor first
    assert {layer for layer, _, _ in fac.top_neurons(0, 10)} <= {0, 1}
    full = mlp_factors(model, tok, TEXT[:32], layer=0, n_factors=20)
    assert full.explained > mlp_factors(model, tok, TEXT[:32], layer=0, n_factors=2).explained
    A = np.clip(neuron_record(model, tok, TEXT[:32], 0).values.numpy(), 0, None)
    recon = full.weights.numpy() @ full.components.numpy()
    assert 1 - ((A - recon) ** 2).sum() / (A**2).sum() == pytest.approx(full.explained, abs=1e-4)


def test_bad_requests(model, tok):
    with pytest.raises(IndexError, match="layers 0..1"):
        neuron_record(model, tok, "ROMEO", layer=2)
    with pytest.raises(ValueError, match="'post'"):
        neuron_record(model, tok, "ROMEO", layer=0, hook="mid")
    with pytest.raises(IndexError, match="neuron 64"):
        top_activations(model, tok, TEXT, 0, 64)
    with pytest.raises(ValueError, match="empty"):
        neuron_record(model, tok, "", layer=0)
    with pytest.raises(ValueError, match="n_factors"):
        mlp_factors(model, tok, "ROMEO", layer=0, n_factors=9)
    no_mlp = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8, mlp=False))
    with pytest.raises(ValueError, match="no MLP"):
        neuron_record(no_mlp, tok, "ROMEO", layer=0)


def test_selective_neurons_rank_by_agreement(model, tok):
    from gptviz.neurons import selective_neurons

    corpus = TEXT * 3
    found = selective_neurons(model, tok, corpus, layer=0, k=5)
    assert len(found) == 64 and [s.share for s in found] == sorted((s.share for s in found), reverse=True)
    best = found[0]
    ids = tok.encode(corpus)
    sample = ids[: len(ids) // 32 * 32]  # the whole windows selective_neurons reads
    top = top_activations(model, tok, sample, 0, best.neuron, k=5, context=1)
    pairs = [(e.tokens[e.focus - 1] if e.position % 32 else "") + e.tokens[e.focus] for e in top.examples]
    assert pairs.count(best.pattern) / 5 == pytest.approx(best.share)  # the same windows, the same top 5
    assert best.peak == pytest.approx(top.max, rel=1e-5)
    with pytest.raises(ValueError, match="at least one window"):
        selective_neurons(model, tok, "ROMEO", layer=0)
