"""Input attribution against references: autograd by hand, integrated gradients' completeness, occlusion by
hand, and captum when it is installed (an optional extra)."""

import importlib.util

import pytest
import torch
from conftest import tiny_llama

from gptviz import GPT, GPTConfig
from gptviz.attribution import attribute, attribution_record, continuation
from gptviz.sampling import generate
from gptviz.tokenizers import get_tokenizer

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("char", text=TEXT)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=16)).eval()
    with torch.no_grad():  # LayerNorms and biases off their init, so nothing is trivially symmetric
        for name, p in m.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def llama(tok):
    return tiny_llama(tok.vocab_size)


def by_hand(model, ids, zero: int | None = None):
    """The model's forward written out with the token embeddings as a leaf: (embeddings (T, C), hidden (T, C))."""
    emb = model.wte(ids).detach().clone().requires_grad_(True)  # (T, C)
    x = emb.clone()
    if zero is not None:
        x = x.index_fill(0, torch.tensor([zero]), 0.0)
    if model.config.pos_encoding == "learned":
        x = x + model.wpe(torch.arange(len(ids)))
    x = x[None]  # (1, T, C)
    for block in model.blocks:
        x = block_forward(model, block, x)
    return emb, model.ln_f(x)[0]


def block_forward(model, block, x):
    T = x.shape[1]
    rope = (model.rope_cos[:T], model.rope_sin[:T]) if model.config.pos_encoding == "rotary" else None
    return block(x, None, rope, None)


def hand_logit(model, h, ids, p):
    return model.lm_head(h[p - 1])[ids[p]]


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_grad_x_input_equals_autograd_by_hand(which, model, llama, tok):
    m = model if which == "gpt2" else llama
    ids = torch.tensor(tok.encode(TEXT[:30]))
    positions = [5, 17, 29]
    rec = attribution_record(m, tok, ids, positions=positions, method="grad_x_input")
    for row, p in enumerate(positions):
        emb, h = by_hand(m, ids)
        score = hand_logit(m, h, ids, p)
        (grad,) = torch.autograd.grad(score, emb)
        expected = (grad * emb).sum(-1)[:p]
        torch.testing.assert_close(rec.row(row), expected.detach(), rtol=1e-4, atol=1e-5)
        assert torch.isnan(rec.values[row, p:]).all()  # tokens the step had not seen
        assert rec.scores[row].item() == pytest.approx(score.item(), rel=1e-5)
    assert all(not point.fns for point in m.hook_dict.values())  # no hook survives


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_integrated_gradients_are_complete(which, model, llama, tok):
    """Rows sum to logit(input) - logit(all token embeddings 0) within 1%, also when chunked."""
    m = model if which == "gpt2" else llama
    ids = torch.tensor(tok.encode(TEXT[:32]))  # the tiny Llama's block size
    rec = attribution_record(m, tok, ids, prompt_len=24, method="integrated_gradients", steps=32, batch_tokens=200)
    assert rec.positions == list(range(24, 32)) and rec.values.shape == (8, 32)
    assert float(rec.completeness().max()) < 0.01
    emb, h = by_hand(m, ids)
    with torch.no_grad():
        base = torch.zeros_like(emb)
        for p, b in zip(rec.positions, rec.baseline_scores):  # the baseline score, by hand: every token zeroed
            x = base + (m.wpe(torch.arange(len(ids))) if m.config.pos_encoding == "learned" else 0)
            x = x[None]
            for block in m.blocks:
                x = block_forward(m, block, x)
            assert b.item() == pytest.approx(hand_logit(m, m.ln_f(x)[0], ids, p).item(), abs=1e-4)


def test_occlusion_equals_zeroing_one_token_by_hand(model, tok):
    ids = torch.tensor(tok.encode(TEXT[:24]))
    rec = attribution_record(model, tok, ids, positions=[10, 23], method="occlusion", batch_tokens=100)
    with torch.no_grad():
        _, h = by_hand(model, ids)
        for row, p in enumerate(rec.positions):
            full = hand_logit(model, h, ids, p)
            for j in (0, 3, p - 1):
                _, hz = by_hand(model, ids, zero=j)
                assert rec.values[row, j].item() == pytest.approx(
                    (full - hand_logit(model, hz, ids, p)).item(), abs=1e-4
                )
            # a token after the explained one changes nothing (causal): NaN, as never seen
            assert torch.isnan(rec.values[row, p:]).all()


def test_attribute_explains_every_generated_token(model, tok):
    prompt = "ROMEO:\nBut"
    rec = attribute(model, tok, prompt, max_new_tokens=6, method="grad_x_input")
    greedy = generate(model, torch.tensor([tok.encode(prompt)]), max_new_tokens=6)[0]
    assert torch.equal(rec.ids, greedy) and rec.prompt_len == len(prompt)
    assert rec.positions == list(range(len(prompt), len(prompt) + 6)) and rec.values.shape == (6, len(greedy))
    ids, n = continuation(model, tok, prompt, 6)
    assert torch.equal(ids, greedy) and n == len(prompt)


def test_bad_requests_say_what_to_do(model, tok):
    with pytest.raises(ValueError, match="method must be one of"):
        attribution_record(model, tok, "ROMEO", method="saliency")
    with pytest.raises(ValueError, match="at least 2 tokens"):
        attribution_record(model, tok, "R")
    with pytest.raises(ValueError, match="positions to explain"):
        attribution_record(model, tok, "ROMEO", positions=[0])
    with pytest.raises(ValueError, match="prompt is empty"):
        attribute(model, tok, "", max_new_tokens=2)
    rec = attribution_record(model, tok, "ROMEO", method="grad_x_input")
    with pytest.raises(IndexError, match="outside the 1 explained"):
        rec.row(3)


@pytest.mark.skipif(
    importlib.util.find_spec("captum") is None, reason="captum is optional (pip install gptviz[captum])"
)
def test_matches_captum(model, tok):
    """captum's IntegratedGradients (Gauss-Legendre, 50 points) and InputXGradient on the same score."""
    from captum.attr import InputXGradient, IntegratedGradients

    ids = torch.tensor(tok.encode(TEXT[:26]))
    p = 25

    def score(emb):  # (B, T, C) token embeddings -> (B,) the logit of ids[p] at p - 1
        out = []
        for e in emb:
            x = e + model.wpe(torch.arange(len(ids)))
            x = x[None]
            for block in model.blocks:
                x = block_forward(model, block, x)
            out.append(hand_logit(model, model.ln_f(x)[0], ids, p))
        return torch.stack(out)

    emb = model.wte(ids)[None].detach()
    ig = IntegratedGradients(score).attribute(emb, baselines=torch.zeros_like(emb), n_steps=50)
    ours = attribution_record(model, tok, ids, positions=[p], method="integrated_gradients", steps=50)
    torch.testing.assert_close(ours.row(0), ig[0].sum(-1)[:p].detach(), rtol=1e-3, atol=1e-4)
    ixg = InputXGradient(score).attribute(emb.clone().requires_grad_(True))
    gxi = attribution_record(model, tok, ids, positions=[p], method="grad_x_input")
    torch.testing.assert_close(gxi.row(0), ixg[0].sum(-1)[:p].detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "parts",
    [dict(pos_encoding="sinusoidal"), dict(pos_encoding="rotary", parallel_residual=True, activation="gelu_exact")],
    ids=["sinusoidal", "neox"],
)
def test_other_families_are_complete_too(parts, tok):
    """Sinusoidal positions, and GPT-NeoX's parallel residual with rotary positions: the same hook, the same check."""
    torch.manual_seed(1)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16, **parts)).eval()
    rec = attribute(m, tok, "ROMEO:\nBut", max_new_tokens=3, steps=32)
    assert rec.values.shape == (3, 13) and float(rec.completeness().max()) < 0.01
