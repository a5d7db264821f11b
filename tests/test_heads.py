"""Head-analysis helpers (gptviz.heads): ranking heads by a score, and grouped-query attention's head groups."""

import pytest
import torch

from gptviz import GPT, GPTConfig, capture
from gptviz.heads import kv_groups, previous_token_score, top_heads


def test_top_heads_ranks_layer_and_head_best_first_and_skips_nan():
    scores = torch.tensor([[0.1, 0.9, float("nan")], [0.5, 0.2, 0.7]])  # (L=2, nh=3)
    assert top_heads(scores, 3) == [(0, 1, pytest.approx(0.9)), (1, 2, pytest.approx(0.7)), (1, 0, pytest.approx(0.5))]
    assert len(top_heads(scores, 100)) == 5  # every head but the nan one
    assert top_heads(torch.full((2, 2), float("nan"))) == []


def test_top_heads_reads_a_real_score_map():
    # a pattern where only layer 1, head 2 looks at the previous token
    T, L, nh = 6, 2, 3
    pattern = torch.zeros(L, nh, T, T)
    pattern[..., 0] = 1.0  # everyone looks at the first token...
    pattern[1, 2] = torch.diag(torch.ones(T - 1), -1)  # ...except one previous-token head
    pattern[1, 2, 0, 0] = 1.0
    assert top_heads(previous_token_score(pattern), 1) == [(1, 2, 1.0)]


def test_top_heads_refuses_what_is_not_one_score_per_head():
    with pytest.raises(ValueError, match=r"\(L, nh\)"):
        top_heads(torch.zeros(2, 3, 4))


def test_kv_groups():
    assert kv_groups(9, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # SmolLM2-135M
    assert kv_groups(4) == [[0], [1], [2], [3]]  # multi-head attention: every head alone
    assert kv_groups(8, 1) == [list(range(8))]  # multi-query attention
    with pytest.raises(ValueError, match="multiple"):
        kv_groups(9, 2)


def test_kv_groups_are_the_heads_the_model_gives_the_same_keys():
    """Give every query head the same query weights: then two heads attend alike exactly when they read the same
    key/value head, so the groups read off the model's patterns must be kv_groups'."""
    cfg = GPTConfig(
        vocab_size=50,
        block_size=16,
        n_layer=1,
        n_head=6,
        n_kv_head=2,
        n_embd=24,
        bias=False,
        pos_encoding="rotary",
        norm="rmsnorm",
        mlp_gated=True,
        activation="silu",
    )
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    attn = model.blocks[0].attn
    hs = cfg.head_size
    with torch.no_grad():
        q = attn.c_attn.weight[: cfg.n_head * hs]  # (nh * hs, C): the query rows, head by head
        q.copy_(q[:hs].repeat(cfg.n_head, 1))
    with torch.no_grad(), capture(model, "blocks.0.attn.hook_pattern") as cap:
        model(torch.randint(0, 50, (1, 12)))
    pattern = cap["blocks.0.attn.hook_pattern"][0]  # (nh, T, T)
    groups = kv_groups(cfg.n_head, cfg.n_kv_head)
    group_of = {h: g for g, heads in enumerate(groups) for h in heads}
    for a in range(cfg.n_head):
        for b in range(cfg.n_head):
            same = torch.allclose(pattern[a], pattern[b], atol=1e-6)
            assert same == (group_of[a] == group_of[b]), (a, b)
