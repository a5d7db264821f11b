"""The frozen-prefix cache of a classifier: the same numbers as the whole model, and out of the way when it must be."""

import copy
import random

import pytest
import torch

from gptviz import GPT, GPTConfig
from gptviz import finetune as ft
from gptviz.data import Example
from gptviz.finetune.classifier import _pad
from gptviz.hooks import capture
from gptviz.tokenizers import get_tokenizer
from gptviz.train import TrainConfig

ALPHABET = "abcdefgh xy\n"


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("char", text=ALPHABET)


def tiny_gpt(tok, seed=0, **kw):
    torch.manual_seed(seed)
    fields = dict(vocab_size=tok.vocab_size, block_size=16, n_layer=3, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**fields, **kw}))


def windows(seed=0, n=9, T=16, vocab=12):
    """Right-padded (-1) windows of 1..T tokens, one of them full."""
    g = torch.Generator().manual_seed(seed)
    lengths = [T, 1] + torch.randint(1, T + 1, (n - 2,), generator=g).tolist()
    return _pad([torch.randint(0, vocab, (m,), generator=g).tolist() for m in lengths]), lengths


def examples(n, prefix, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        first = rng.choice("xy")
        body = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(4, 40)))
        out.append(Example(first + body, first.upper(), f"{prefix}{i}"))
    return out


TRAIN, TEST = examples(120, "tr", 1), examples(30, "te", 2)


def job(tok, feature_cache_mb=512.0, **config):
    tc = TrainConfig(
        batch_size=8, max_steps=12, lr=3e-3, warmup_steps=2, eval_interval=6, eval_batches=2, snapshot_interval=0,
        device="cpu", seed=0,
    )  # fmt: skip
    fields = dict(mode="last_n", n_layers=1, pooling="mean", max_windows=3, feature_cache_mb=feature_cache_mb)
    return ft.ClassifierJob(tiny_gpt(tok), tok, TRAIN, TEST, ft.FinetuneConfig(**{**fields, **config}), tc)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"pos_encoding": "sinusoidal"},
        {"pos_encoding": "rotary", "norm": "rmsnorm", "n_kv_head": 1, "mlp_gated": True, "activation": "silu"},
        {"pos_encoding": "none", "parallel_residual": True},
        {"layer_norm": False, "mlp": False},
    ],
)
def test_frozen_prefix_matches_the_whole_model(tok, kw):
    gpt = tiny_gpt(tok, **kw).eval()
    ft.prepare_gpt(gpt, "last_n", n_layers=1)
    frozen = ft.FrozenPrefix(gpt)
    assert frozen.depth(training=False) == 2
    ids, lengths = windows()
    with torch.no_grad():
        whole = gpt.trunk(ids.clamp(min=0))  # (N, T, C)
        first, again = frozen.trunk(ids, 2), frozen.trunk(ids, 2)
    assert (frozen.misses, frozen.hits) == (len(lengths), len(lengths))
    for i, n in enumerate(lengths):  # real positions only: padding is never read by pooling
        torch.testing.assert_close(first[i, :n], whole[i, :n], rtol=1e-5, atol=1e-5)
        assert torch.equal(again[i, :n], first[i, :n])
    assert first.shape == whole.shape


def test_a_cached_classifier_trains_and_evaluates_like_the_whole_model(tok):
    cached, plain = job(tok), job(tok, feature_cache_mb=0)
    for j in (cached, plain):
        j.train_steps(12)
    assert cached.model.frozen.hits > 0 and cached.model.frozen.misses > 0 and cached.model.frozen.nbytes > 0
    assert plain.model.frozen.hits == plain.model.frozen.misses == 0
    torch.testing.assert_close(
        [s.loss for s in cached.trainer.history], [s.loss for s in plain.trainer.history], rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        [e["val_loss"] for e in cached.trainer.evals], [e["val_loss"] for e in plain.trainer.evals]
    )
    a, b = cached.evaluate(), plain.evaluate()
    torch.testing.assert_close(a.probs, b.probs, rtol=1e-4, atol=1e-5)
    assert a.accuracy == b.accuracy
    for name, p in cached.model.gpt.named_parameters():  # the cache never moved what it says is frozen
        if not p.requires_grad:
            assert torch.equal(p, dict(plain.model.gpt.named_parameters())[name])


def test_head_mode_caches_every_block(tok):
    j, plain = job(tok, mode="head"), job(tok, mode="head", feature_cache_mb=0)
    assert j.model.frozen.depth(training=True) == 3
    for each in (j, plain):
        each.train_steps(4)
    torch.testing.assert_close(j.evaluate().probs, plain.evaluate().probs, rtol=1e-4, atol=1e-5)
    assert j.model.frozen.hits > 0


def test_it_stands_aside_when_it_must(tok):
    j = job(tok)
    assert j.model.frozen.depth(training=True) == 2
    for mode in ("full", "lora"):
        assert job(tok, mode=mode).model.frozen.depth(training=False) == 0
    assert job(tok, feature_cache_mb=0).model.frozen.depth(training=False) == 0
    with capture(j.model.gpt, "blocks.0.attn.hook_pattern") as cap:  # a listener must see layer 0 run
        assert j.model.frozen.depth(training=False) == 0
        j.model.predict_proba(tok, ["xabc", "yabcdefgh"])
    assert cap.stack("blocks.0.attn.hook_pattern").shape[0] == 1  # recorded: the whole model ran
    explained = ft.explain(j.model, tok, "xabcabc")
    assert explained["attention"].shape[0] == 3
    dropout = ft.FrozenPrefix(tiny_gpt(tok, dropout=0.1))
    dropout.gpt.requires_grad_(False)
    assert dropout.depth(training=True) == 0 and dropout.depth(training=False) == 3


def test_it_forgets_when_a_frozen_weight_changes(tok):
    gpt = tiny_gpt(tok).eval()
    ft.prepare_gpt(gpt, "last_n", n_layers=1)
    frozen = ft.FrozenPrefix(gpt)
    ids, lengths = windows()
    with torch.no_grad():
        frozen.trunk(ids, 2)
        gpt.blocks[0].mlp.c_fc.weight.mul_(1.5)  # an edit in place
        edited = frozen.trunk(ids, 2)
        assert frozen.misses == len(lengths) and frozen.hits == 0  # started afresh
        whole = gpt.trunk(ids.clamp(min=0))
        for i, n in enumerate(lengths):
            torch.testing.assert_close(edited[i, :n], whole[i, :n], rtol=1e-5, atol=1e-5)
        gpt.load_state_dict(copy.deepcopy(tiny_gpt(tok, seed=1).state_dict()))  # a new set of weights
        frozen.trunk(ids, 2)
        assert frozen.hits == 0
        frozen.trunk(ids, 1)  # another depth: other states
        assert frozen.hits == 0


def test_a_copied_classifier_starts_with_an_empty_cache(tok):
    j = job(tok)
    j.evaluate()
    assert j.model.frozen.nbytes > 0
    twin = copy.deepcopy(j.model)
    assert twin.frozen.nbytes == 0 and twin.frozen._store == {} and twin.frozen.gpt is twin.gpt
    torch.testing.assert_close(twin(j.test_set.collate([0, 1])[0]), j.model(j.test_set.collate([0, 1])[0]))


def test_it_keeps_to_its_memory_budget(tok):
    gpt = tiny_gpt(tok).eval()
    gpt.requires_grad_(False)
    ids, lengths = windows()
    one_window = 16 * 32 * 4 / 2**20  # a full window of 16 positions x 32 floats
    frozen = ft.FrozenPrefix(gpt, max_mb=one_window)
    with torch.no_grad():
        first = frozen.trunk(ids, 3)
        again = frozen.trunk(ids, 3)
    assert frozen.nbytes <= one_window * 2**20 and frozen.hits < len(lengths)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(again[i, :n], first[i, :n])
    with pytest.raises(ValueError, match="feature_cache_mb"):
        ft.FinetuneConfig(feature_cache_mb=-1)
    with pytest.raises(ValueError, match="max_mb"):
        ft.FrozenPrefix(gpt, max_mb=float("nan"))
