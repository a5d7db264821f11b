"""gptviz.generate against the real `transformers.GPT2LMHeadModel.generate` on the same random weights.

The weights go through a folder (transformers' save_pretrained -> GPT.from_pretrained), no network. Every
comparison stays inside n_positions: transformers raises IndexError past it, where gptviz slides instead.
"""

import pytest
import torch
from conftest import save_random_hf_gpt2

from gptviz import GPT
from gptviz.sampling import generate

transformers = pytest.importorskip("transformers")

V, N_POSITIONS = 101, 48


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = save_random_hf_gpt2(
        tmp_path_factory.mktemp("hf-gpt2"), vocab_size=V, n_positions=N_POSITIONS, n_embd=32, n_layer=2, n_head=4
    )
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    return hf, GPT.from_pretrained(folder)


def prompts(B=3, T=8):
    return torch.randint(1, V, (B, T), generator=torch.Generator().manual_seed(1))


def hf_generate(hf, x, n, eos=None, **kw):
    """transformers' generate with every default that would differ from gptviz's spelled out."""
    eos = 0 if eos is None else eos  # the config's eos; gptviz is told the same below
    with torch.no_grad():
        return hf.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            eos_token_id=eos,
            pad_token_id=eos,
            **{"do_sample": False, "top_k": None, **kw},
        )


def test_greedy_ids_identical(models):
    hf, ours = models
    x = prompts()
    expected = hf_generate(hf, x, N_POSITIONS - 8)  # right up to the end of the window
    got = generate(ours, x, N_POSITIONS - 8, eos_token_id=0)
    assert got.shape == expected.shape and torch.equal(got, expected)
    assert torch.equal(generate(ours, x, N_POSITIONS - 8, eos_token_id=0, use_cache=False), expected)


def test_greedy_with_penalties_and_eos_identical(models):
    hf, ours = models
    x = prompts()
    free = generate(ours, x, 20, eos_token_id=0)
    eos = int(free[0, 8 + 5])  # a token row 0 writes: it finishes early, the others maybe not
    kw = dict(repetition_penalty=1.4, no_repeat_ngram_size=3)
    expected = hf_generate(hf, x, 20, eos=eos, **kw)
    got = generate(ours, x, 20, eos_token_id=eos, **kw)
    assert got.shape == expected.shape and torch.equal(got, expected)
    assert (got[0, 8:] == eos).any()


@pytest.mark.parametrize("num_return_sequences", [1, 4])
def test_beam_search_identical(models, num_return_sequences):
    hf, ours = models
    x = prompts()
    kw = dict(num_beams=4, no_repeat_ngram_size=2, num_return_sequences=num_return_sequences)
    expected = hf_generate(hf, x, 24, **kw)
    got = generate(ours, x, 24, eos_token_id=0, **kw)
    assert got.shape == (3 * num_return_sequences, 32) == expected.shape
    assert torch.equal(got, expected)
    if num_return_sequences > 1:  # the rows of one prompt are different beams, best first
        assert len({tuple(r) for r in got[:4].tolist()}) == 4


@pytest.fixture(scope="module")
def frequent_tokens(models):
    """The tokens the free beams write most often, most frequent first (ties by id): as eos they end beams
    early and at different steps, which exercises the finished set, its scores, and eos padding."""
    beams = generate(models[1], prompts(), 20, num_beams=4, num_return_sequences=4, no_repeat_ngram_size=2)
    ids, counts = beams[:, 8:].flatten().unique(return_counts=True)
    return [i for _, i in sorted(zip((-counts).tolist(), ids.tolist()))]


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "settings",
    [
        dict(num_beams=4, no_repeat_ngram_size=2, num_return_sequences=3),
        dict(num_beams=3, num_return_sequences=2, repetition_penalty=1.3, length_penalty=2.0, early_stopping=True),
    ],
)
def test_beam_search_with_early_eos_identical(models, frequent_tokens, rank, settings):
    hf, ours = models
    x, eos = prompts(), frequent_tokens[rank]
    expected = hf_generate(hf, x, 20, eos=eos, **settings)
    got = generate(ours, x, 20, eos_token_id=eos, **settings)
    assert got.shape == expected.shape and torch.equal(got, expected)


@pytest.mark.parametrize("length_penalty, early_stopping", [(0.5, False), (2.0, True), (1.0, "never"), (-1.0, False)])
def test_beam_search_length_penalty_and_early_stopping_identical(models, length_penalty, early_stopping):
    hf, ours = models
    x = prompts(B=2)
    eos = int(generate(ours, x, 10, num_beams=3, eos_token_id=0)[0, 8 + 2])
    kw = dict(
        num_beams=3,
        num_return_sequences=2,
        repetition_penalty=1.3,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
    )
    expected = hf_generate(hf, x, 15, eos=eos, **kw)
    got = generate(ours, x, 15, eos_token_id=eos, **kw)
    assert got.shape == expected.shape and torch.equal(got, expected)


def test_seeded_sampling_draws_what_transformers_draws(models):
    # Both draw with torch.multinomial on the CPU; gptviz from its own generator, transformers from the
    # global one. Same seed, same weights, same filters -> the same tokens.
    hf, ours = models
    x = prompts(B=2)
    kw = dict(do_sample=True, temperature=0.7, top_k=12, top_p=0.9, repetition_penalty=1.2, num_return_sequences=2)
    torch.manual_seed(5)
    expected = hf_generate(hf, x, 20, **kw)
    got = generate(ours, x, 20, eos_token_id=0, seed=5, **kw)
    assert torch.equal(got, expected)
