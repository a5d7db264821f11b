"""gptviz.sampling: the pure next-token functions (against transformers' processors), the decoding loops
(KV cache == no cache == a naive sliding-window loop), step records, forks, errors and the CLI."""

import math

import pytest
import torch

from gptviz import GPT, GPTConfig
from gptviz.commands.sample import cli
from gptviz.hooks import capture, hook_points
from gptviz.sampling import (
    apply_no_repeat_ngram,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    generate,
    sample_next_token,
)
from gptviz.steps import StepRecord, generate_steps

tp = pytest.importorskip("transformers.generation.logits_process")

NEG_INF = float("-inf")
KNOBS = dict(do_sample=True, temperature=0.7, top_k=8, top_p=0.9, repetition_penalty=1.3, no_repeat_ngram_size=2)


def make_model(block_size=32, vocab_size=61, seed=0, **kw):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=4, n_embd=32, **kw)
    model = GPT(config).eval()
    with torch.no_grad():  # sharper than a fresh init, so greedy choices are far from ties
        model.wte.weight.mul_(8)
    return model


def prompt(T, vocab_size=61, B=1, seed=1):
    return torch.randint(0, vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def naive_greedy(model, idx, n):
    """nanoGPT's loop: re-read the last block_size tokens at every step, no cache."""
    with torch.no_grad():
        for _ in range(n):
            logits = model(idx[:, -model.config.block_size :])[:, -1]
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.fixture
def logits():
    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    x[1, :10] = NEG_INF  # a row that an earlier filter already cut
    return x


@pytest.fixture
def seqs():  # few distinct ids, so n-grams repeat
    return torch.randint(0, 6, (4, 30), generator=torch.Generator().manual_seed(2))


# ---- pure functions == transformers' LogitsProcessors ------------------------------------------------------------
def test_temperature_matches_transformers(logits, seqs):
    for t in (0.3, 1.0, 2.5):
        assert torch.equal(apply_temperature(logits, t), tp.TemperatureLogitsWarper(t)(seqs, logits.clone()))
    with pytest.raises(ValueError, match="greedy"):
        apply_temperature(logits, 0.0)


def test_top_k_matches_transformers(logits, seqs):
    for k in (1, 3, 17, 50, 80):
        ours = apply_top_k(logits, k)
        assert torch.equal(ours, tp.TopKLogitsWarper(k)(seqs, logits.clone())), k
    assert (torch.isfinite(apply_top_k(logits, 3)).sum(-1) == 3).all()
    with pytest.raises(ValueError, match="top_k"):
        apply_top_k(logits, 0)


def test_top_p_matches_transformers(logits, seqs):
    for p in (0.01, 0.3, 0.75, 0.9, 0.999, 1.0):
        for keep in (1, 3):
            ours = apply_top_p(logits, p, keep)
            assert torch.equal(ours, tp.TopPLogitsWarper(p, min_tokens_to_keep=keep)(seqs, logits.clone())), (p, keep)
    # by hand: probs 0.5, 0.3, 0.2 -> top_p 0.7 keeps two tokens, 0.85 all three, 0.1 still the best one
    x = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert torch.isfinite(apply_top_p(x, 0.7)).tolist() == [[True, True, False]]
    assert torch.isfinite(apply_top_p(x, 0.85)).all()
    assert torch.isfinite(apply_top_p(x, 0.1)).tolist() == [[True, False, False]]
    # exact ties with the threshold: four equal tokens, top_p 0.5 -> the smallest set with mass >= 0.5 is two
    flat = torch.zeros(1, 4)
    assert torch.isfinite(apply_top_p(flat, 0.5)).sum() == 2
    assert torch.equal(apply_top_p(flat, 0.5).isinf(), tp.TopPLogitsWarper(0.5)(seqs[:1], flat.clone()).isinf())
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p"):
            apply_top_p(logits, bad)


def test_repetition_penalty_matches_transformers(logits, seqs):
    for penalty in (0.7, 1.3, 2.0):
        ours = apply_repetition_penalty(logits, seqs, penalty)
        assert torch.equal(ours, tp.RepetitionPenaltyLogitsProcessor(penalty)(seqs, logits.clone())), penalty
    spread = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(3))  # most ids seen once
    assert torch.equal(
        apply_repetition_penalty(logits, spread, 1.5), tp.RepetitionPenaltyLogitsProcessor(1.5)(spread, logits.clone())
    )
    x = torch.tensor([[2.0, -2.0, 1.0, 3.0]])
    assert apply_repetition_penalty(x, torch.tensor([[0, 1, 0]]), 2.0).tolist() == [[1.0, -4.0, 1.0, 3.0]]
    assert apply_repetition_penalty(x, torch.tensor([[3, 2]]), 2.0).tolist() == [[2.0, -2.0, 0.5, 1.5]]


def test_no_repeat_ngram_matches_transformers(logits, seqs):
    for n in (1, 2, 3, 4):
        ours = apply_no_repeat_ngram(logits, seqs, n)
        assert torch.equal(ours, tp.NoRepeatNGramLogitsProcessor(n)(seqs, logits.clone())), n
    assert not torch.equal(apply_no_repeat_ngram(logits, seqs, 2), logits)  # something was banned
    banned = ~torch.isfinite(apply_no_repeat_ngram(torch.zeros(1, 5), torch.tensor([[1, 2, 3, 1, 2]]), 3))
    assert banned.nonzero()[:, 1].tolist() == [3]  # "1 2" was followed by 3 before
    assert torch.equal(apply_no_repeat_ngram(logits, seqs, 0), logits)


def test_sample_next_token():
    x = torch.tensor([[0.0, 1.0, 0.5], [NEG_INF, NEG_INF, 0.0]])
    assert sample_next_token(x, None, False).tolist() == [1, 2]
    draws = [sample_next_token(x, torch.Generator().manual_seed(s), True) for s in range(20)]
    assert all(d[1] == 2 for d in draws)  # a one-token distribution is always drawn
    assert len({d[0].item() for d in draws}) > 1  # the other row really samples
    a = sample_next_token(x.repeat(8, 1), torch.Generator().manual_seed(3), True)
    assert torch.equal(a, sample_next_token(x.repeat(8, 1), torch.Generator().manual_seed(3), True))


# ---- decoding loops -----------------------------------------------------------------------------------------------
def test_kv_cache_and_no_cache_agree_greedy_sampling_and_beams():
    model, x = make_model(), prompt(7, B=2)
    for kw in ({}, dict(KNOBS, seed=4), dict(num_beams=3, no_repeat_ngram_size=2, num_return_sequences=2)):
        a, b = generate(model, x, 20, **kw), generate(model, x, 20, use_cache=False, **kw)
        assert a.shape == (x.size(0) * kw.get("num_return_sequences", 1), 27)
        assert torch.equal(a, b), kw
    assert torch.equal(generate(model, x, 20), naive_greedy(model, x, 20))
    assert torch.equal(model.generate(x, max_new_tokens=5), generate(model, x, 5))


def test_seed_reproducible_and_global_rng_untouched():
    model, x = make_model(), prompt(5)
    state = torch.get_rng_state()
    a = generate(model, x, 30, do_sample=True, temperature=1.5, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, generate(model, x, 30, do_sample=True, temperature=1.5, seed=11))
    assert not torch.equal(a, generate(model, x, 30, do_sample=True, temperature=1.5, seed=12))
    rows = generate(model, x, 30, do_sample=True, temperature=1.5, seed=11, num_return_sequences=3)
    assert rows.shape == (3, 35) and len({tuple(r) for r in rows.tolist()}) == 3


def test_temperature_zero_is_greedy_and_greedy_warns_about_warpers():
    model, x = make_model(), prompt(5)
    assert torch.equal(generate(model, x, 10, do_sample=True, temperature=0.0, seed=1), generate(model, x, 10))
    with pytest.warns(UserWarning, match="only act when sampling"):
        generate(model, x, 3, temperature=0.5)


def test_training_mode_is_restored_and_dropout_off():
    model, x = make_model(dropout=0.3), prompt(5)
    expected = generate(model, x, 10)
    model.train()
    assert torch.equal(generate(model, x, 10), expected)
    assert model.training


def test_sliding_window_past_block_size():
    model = make_model(block_size=40)
    x = prompt(60)
    with pytest.warns(UserWarning, match=r"60 tokens .*\(block_size\) is 40: the first 20 tokens were left out"):
        out = generate(model, x, 5)
    assert out.shape == (1, 65) and torch.equal(out[:, :60], x)
    assert torch.equal(out, naive_greedy(model, x, 5))
    short = prompt(30)  # starts inside the window and slides out of it
    for kw in ({}, dict(KNOBS, seed=2), dict(num_beams=3)):
        a = generate(model, short, 25, **kw)
        assert a.shape == (1, 55) and torch.equal(a, generate(model, short, 25, use_cache=False, **kw)), kw
    assert torch.equal(generate(model, short, 25), naive_greedy(model, short, 25))


def test_char_model_with_block_64_writes_500_characters():
    from gptviz.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("ROMEO:\nBut soft, what light through yonder window breaks?\n")
    model = make_model(block_size=64, vocab_size=tok.vocab_size)
    ids = torch.tensor([tok.encode("ROMEO:")])
    out = generate(model, ids, 500, do_sample=True, seed=0)
    assert out.shape == (1, 506)
    assert len(tok.decode(out[0].tolist())) == 506
    assert torch.equal(out, generate(model, ids, 500, do_sample=True, seed=0, use_cache=False))


def test_eos_stops_and_pads_finished_rows():
    model, x = make_model(), prompt(6, B=2, seed=3)
    free = generate(model, x, 15)
    eos = int(free[0, 6 + 3])  # the token row 0 writes at its fourth step
    out = generate(model, x, 15, eos_token_id=eos)
    first = (out[0, 6:] == eos).nonzero()[0, 0].item()
    assert first <= 3 and (out[0, 6 + first :] == eos).all()  # finished, then padded with eos
    assert torch.equal(out[:, : 6 + first + 1], free[:, : 6 + first + 1])
    hits = (out[1, 6:] == eos).nonzero()
    assert out.shape[1] == 21 if len(hits) == 0 else 6 + hits[0, 0].item() + 1 <= out.shape[1]
    single = generate(model, x[:1], 15, eos_token_id=eos)
    assert single.shape == (1, 6 + first + 1)  # stops as soon as every row is done
    records = list(generate_steps(model, x[0], 15, eos_token_id=eos))
    assert len(records) == first + 1 and records[-1].token_id == eos


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: generate(m, torch.zeros(1, 0, dtype=torch.long)), "prompt is empty"),
        (lambda m: generate(m, [[]]), "prompt is empty"),
        (lambda m: generate(m, [[1, 2, 61]]), "61 is outside the vocabulary"),
        (lambda m: generate(m, [[1, -1]]), "outside the vocabulary"),
        (lambda m: generate(m, torch.ones(1, 3)), "integer dtype"),
        (lambda m: generate(m, [[1]], do_sample=True, temperature=-1.0), "temperature must be >= 0"),
        (lambda m: generate(m, [[1]], do_sample=True, top_p=0.0), "top_p must be in"),
        (lambda m: generate(m, [[1]], do_sample=True, top_p=1.5), "top_p must be in"),
        (lambda m: generate(m, [[1]], do_sample=True, top_k=-2), "top_k must be"),
        (lambda m: generate(m, [[1]], repetition_penalty=0.0), "repetition_penalty"),
        (lambda m: generate(m, [[1]], no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
        (lambda m: generate(m, [[1]], eos_token_id=99), "eos_token_id"),
        (lambda m: generate(m, [[1]], num_beams=2, num_return_sequences=3), "raise num_beams to at least 3"),
        (lambda m: generate(m, [[1]], num_return_sequences=2), "greedy decoding gives the same sequence"),
        (lambda m: generate(m, [[1]], num_beams=0), "num_beams must be"),
        (lambda m: generate(m, [[1]], max_new_tokens=-1), "max_new_tokens"),
        (lambda m: generate(m, [[1]], num_beams=2, early_stopping="sometimes"), "early_stopping"),
        (lambda m: generate(m, [[1]], do_sample=True, seed="x"), "seed must be an integer"),
        (lambda m: generate_steps(m, [[1, 2], [3, 4]]), "one sequence"),
        (lambda m: generate_steps(m, "ROMEO"), "no tokenizer"),
        (lambda m: generate_steps(m, [1], k=0), "k \\(candidates"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(make_model())


# ---- step records ----------------------------------------------------------------------------------------------------
def test_generate_steps_picks_the_tokens_generate_picks():
    model, x = make_model(), prompt(9)
    for kw in ({}, dict(KNOBS, seed=5), dict(do_sample=True, seed=6, temperature=1.3)):
        records = list(generate_steps(model, x, 12, **kw))
        assert [r.token_id for r in records] == generate(model, x, 12, **kw)[0, 9:].tolist(), kw
        assert [r.position for r in records] == list(range(9, 21)) and [r.step for r in records] == list(range(12))


def test_step_record_stages_and_probabilities():
    model, x = make_model(), prompt(9)
    records = list(generate_steps(model, x[0].tolist(), 6, k=10, **KNOBS, seed=1))
    seq = x[0].tolist() + [r.token_id for r in records]
    for r in records:
        assert isinstance(r, StepRecord)
        assert [s.name for s in r.stages] == [
            "raw",
            "repetition_penalty",
            "no_repeat_ngram",
            "temperature",
            "top_k",
            "top_p",
        ]
        assert all(torch.equal(s.ids, r.candidates) for s in r.stages) and r.candidates.shape == (10,)
        assert r.token_id in r.candidates.tolist()
        where = r.candidates.tolist().index(r.token_id)
        assert r.prob == pytest.approx(r.stages[-1].probs[where].item())
        assert r.raw_prob == pytest.approx(r.stages[0].probs[where].item())
        kept = {s.name: s.kept for s in r.stages}
        assert kept["raw"] == 61 and kept["top_k"] <= 8 and 1 <= kept["top_p"] <= kept["top_k"]
        for s in r.stages:
            assert s.probs.device.type == "cpu" and (s.probs >= 0).all() and s.probs.sum() <= 1 + 1e-5
        # raw probabilities are the model's own softmax at that position (independent full forward)
        with torch.no_grad():
            full = model(torch.tensor([seq[: r.position]]))[0, -1].softmax(-1)
        assert torch.allclose(r.stages[0].probs, full[r.candidates], atol=1e-6)


def test_step_record_final_distribution_and_entropy():
    model, x = make_model(), prompt(9)
    # without penalties the top-5 survivors are among the raw top-10 candidates: the final stage sums to 1
    for r in generate_steps(model, x, 5, do_sample=True, top_k=5, temperature=0.8, seed=2, k=10):
        final = r.stages[-1]
        assert final.name == "top_k" and final.kept == 5
        assert final.probs.sum().item() == pytest.approx(1.0, abs=1e-5)
        p = final.probs[final.probs > 0]
        assert r.entropy == pytest.approx(-(p * p.log()).sum().item(), abs=1e-5) == final.entropy
    for r in generate_steps(model, x, 3, do_sample=True, temperature=2.0, top_k=3, seed=2):
        raw, hot, cut = (r.stage(name) for name in ("raw", "temperature", "top_k"))
        assert hot.entropy > raw.entropy and cut.entropy < hot.entropy  # heat flattens, top-k narrows
        assert raw.entropy <= math.log(61) and cut.entropy <= math.log(3) + 1e-6
    # a hot sampler often picks a token outside the raw top-k: it still shows up, in the last slot
    hot = list(generate_steps(model, x, 20, do_sample=True, temperature=5.0, seed=3, k=2))
    assert all(r.token_id in r.candidates.tolist() for r in hot)
    assert any(r.candidates[-1] == r.token_id and r.raw_prob < r.stages[0].probs[0] / 2 for r in hot)
    greedy = list(generate_steps(model, x, 3))
    assert all([s.name for s in r.stages] == ["raw"] and r.candidates[0] == r.token_id for r in greedy)


def test_step_record_attention_rows():
    model, x = make_model(block_size=16), prompt(10)
    records = list(generate_steps(model, x, 12, record_attention=True))
    seq = x[0].tolist() + [r.token_id for r in records]
    for r in records:
        Tk = r.position - r.context_start
        assert r.attention.shape == (2, 4, Tk) and r.attention.device.type == "cpu"
        assert torch.allclose(r.attention.sum(-1), torch.ones(2, 4), atol=1e-5)
        window = torch.tensor([seq[r.context_start : r.position]])
        with torch.no_grad(), capture(model, "blocks.*.attn.hook_pattern") as cap:
            model(window)
        expected = torch.stack([cap[f"blocks.{i}.attn.hook_pattern"][0, :, -1] for i in range(2)])
        assert torch.allclose(r.attention, expected, atol=1e-5)
    assert records[0].context_start == 0 and records[-1].context_start == 21 - 16
    assert all(not p.fns for p in hook_points(model).values())
    steps = generate_steps(model, x, 5, record_attention=True)
    next(steps)  # abandoned mid-way: no hook may stay behind
    assert all(not p.fns for p in hook_points(model).values())
    assert next(generate_steps(model, x, 1)).attention is None


def test_fork_continues_like_generating_from_the_extended_prompt():
    from gptviz.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ,.\n")
    model = make_model(vocab_size=tok.vocab_size)
    ids = tok.encode("the cat")
    main = list(generate_steps(model, ids, 8, tokenizer=tok, k=5))
    assert main[0].token == tok.tokens([main[0].token_id])[0] and len(main[0].candidate_tokens) == 5
    t, alternative = 3, int(main[3].candidates[1])  # click the runner-up at step 3
    forked = ids + [r.token_id for r in main[:t]] + [alternative]
    branch = list(generate_steps(model, forked, 5, do_sample=True, seed=9))
    assert branch[0].position == len(ids) + t + 1
    assert [r.token_id for r in branch] == generate(model, [forked], 5, do_sample=True, seed=9)[0, -5:].tolist()
    text = list(generate_steps(model, "the cat", 8, tokenizer=tok, k=5))  # text in, same steps out
    assert [r.token_id for r in text] == [r.token_id for r in main]


# ---- command line --------------------------------------------------------------------------------------------------
def test_cli_prints_generated_text(tmp_path, capsys):
    checkpoint = pytest.importorskip("gptviz.checkpoint")
    from gptviz.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("ROMEO:\nJULIET: O Romeo, Romeo! wherefore art thou Romeo?\n")
    model = make_model(vocab_size=tok.vocab_size)
    checkpoint.save(tmp_path / "ckpt", model, tok)
    argv = [
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "30",
        "--temperature",
        "0.8",
        "--top-k",
        "5",
        "--seed",
        "1",
    ]
    assert cli(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first.rstrip("\n")) >= 30
    assert cli(argv) == 0 and capsys.readouterr().out == first  # --seed makes it repeatable
    expected = tok.decode(generate(model, [tok.encode("ROMEO:")], 30, num_beams=3)[0].tolist())
    assert cli(argv[:6] + ["--num-beams", "3"]) == 0 and capsys.readouterr().out == expected + "\n"
    assert cli(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err
