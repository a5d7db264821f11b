"""Padded batches give every row exactly what it gives alone: forward, recorded attention, greedy, beams, step
records — for learned, sinusoidal and rotary positions (and grouped-query attention).

Rows are left-padded, as generation needs; the mask is transformers' (B, T) of 1 for real tokens, 0 for padding.
"""

import pytest
import torch
from conftest import LLAMA_PARTS

import gptviz
from gptviz import GPT, GPTConfig, capture

V = 61
LENGTHS = (1, 7, 30)
CONFIGS = {
    "learned": dict(),
    "sinusoidal": dict(pos_encoding="sinusoidal"),
    "rotary-gqa": dict(**LLAMA_PARTS, n_kv_head=2),
    "neox": dict(pos_encoding="rotary", rotary_dim=4, parallel_residual=True, activation="gelu_exact"),
}


@pytest.fixture(params=sorted(CONFIGS))
def model(request):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=64, n_layer=2, n_head=4, n_embd=32, **CONFIGS[request.param])).eval()


def prompts():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(1, V, (n,), generator=g).tolist() for n in LENGTHS]


def left_padded(rows, pad=0):
    T = max(map(len, rows))
    ids = torch.tensor([[pad] * (T - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def test_forward_and_patterns_of_real_tokens_equal_each_row_alone(model):
    rows = prompts()
    ids, mask = left_padded(rows)
    T = ids.shape[1]
    with torch.no_grad(), capture(model, "blocks.*.attn.hook_pattern") as cap:
        batch = model(ids, attention_mask=mask)
    together = cap.stack("blocks.*.attn.hook_pattern")  # (L, B, nh, T, T)
    assert torch.isfinite(batch).all()
    for b, row in enumerate(rows):
        n = len(row)
        with torch.no_grad(), capture(model, "blocks.*.attn.hook_pattern") as cap:
            alone = model(torch.tensor([row]))
        assert (batch[b, T - n :] - alone[0]).abs().max() <= 1e-5
        att = cap.stack("blocks.*.attn.hook_pattern")[:, 0]  # (L, nh, n, n)
        assert (together[:, b, :, T - n :, T - n :] - att).abs().max() <= 1e-6
        assert together[:, b, :, T - n :, : T - n].abs().sum() == 0  # real queries never look at padding


def test_fast_and_explicit_paths_agree_on_a_padded_batch(model):
    ids, mask = left_padded(prompts())
    with torch.no_grad():
        fast = model(ids, attention_mask=mask)
        with capture(model, "blocks.0.attn.hook_pattern"):
            explicit = model(ids, attention_mask=mask)
    real = mask.bool()
    assert (fast[real] - explicit[real]).abs().max() <= 1e-5


def test_transformers_call_forms_and_a_bad_mask():
    model = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=8)).eval()
    ids, mask = left_padded([[1, 2, 3], [4, 5]])
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask)
        b = model(**{"input_ids": ids, "attention_mask": mask})
        assert torch.equal(a, b)
        assert torch.equal(model(ids, attention_mask=torch.ones_like(ids)), model(ids))  # all ones: no change
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, past \+ T\)"):
        model(ids, attention_mask=mask[:, 1:])


def test_greedy_and_beams_equal_each_row_alone(model):
    rows = prompts()
    ids, mask = left_padded(rows)
    T = ids.shape[1]
    for kw in ({}, {"num_beams": 3}):
        out = gptviz.generate(model, ids, 8, attention_mask=mask, **kw)
        for b, row in enumerate(rows):
            alone = gptviz.generate(model, torch.tensor([row]), 8, **kw)
            assert out[b, T:].tolist() == alone[0, len(row) :].tolist(), (kw, b)


def test_step_records_of_a_padded_prompt_equal_the_prompt_alone(model):
    row = prompts()[1]
    ids, mask = left_padded([row, prompts()[2]])
    padded = list(gptviz.generate_steps(model, ids[:1], 5, attention_mask=mask[:1], record_attention=True))
    alone = list(gptviz.generate_steps(model, row, 5, record_attention=True))
    pad = ids.shape[1] - len(row)
    for p, a in zip(padded, alone):
        assert p.token_id == a.token_id and abs(p.prob - a.prob) < 1e-6
        assert (p.attention[..., pad:] - a.attention).abs().max() <= 1e-6
        assert p.attention[..., :pad].abs().sum() == 0
