"""Lesson 06's promise, checked: with the notebook's own settings an induction head forms on the CPU.

The settings are read from the notebook's parameters cell, so changing them there is tested here. Training
runs through the same Trainer and RepeatedSequences the notebook uses (about a minute on 2 cores).
"""

from pathlib import Path

import nbformat
import pytest
import torch

from gptviz import GPT, GPTConfig
from gptviz.data import RepeatedSequences
from gptviz.heads import induction_score, previous_token_score, repeated_random_tokens
from gptviz.hooks import capture
from gptviz.tokenizers import get_tokenizer
from gptviz.train import TrainConfig, Trainer

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_induction_heads.ipynb"


def lesson_parameters() -> dict:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(cell.source, ns)
    return ns


def test_repeated_sequences_rows_repeat_with_their_own_period():
    data = RepeatedSequences(10, 3, 5)
    x, y = data.get_batch(64, 20, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (64, 20) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    periods = set()
    for row in torch.cat([x, y[:, -1:]], 1):
        period = next(p for p in range(3, 6) if torch.equal(row[p:], row[:-p]))
        periods.add(period)
    assert periods == {3, 4, 5}
    again, _ = data.get_batch(64, 20, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        RepeatedSequences(10, 5, 3)


@pytest.mark.slow
def test_the_lessons_settings_grow_an_induction_head():
    p = lesson_parameters()
    V, T = p["VOCAB"], p["BLOCK_SIZE"]
    data = RepeatedSequences(V, p["MIN_LEN"], p["MAX_LEN"])
    names = get_tokenizer("char", text="".join(chr(0x4E00 + 7 * i) for i in range(V)))
    torch.manual_seed(p["SEED"])
    model = GPT(
        GPTConfig(
            vocab_size=V,
            block_size=T,
            n_layer=2,
            n_head=p["N_HEAD"],
            n_embd=p["N_EMBD"],
            mlp=False,
            layer_norm=False,
            tie_embeddings=False,
            init_std=0.07,
        )
    )
    config = TrainConfig(
        batch_size=32,
        max_steps=p["STEPS"],
        lr=p["LR"],
        min_lr=p["LR"] / 10,
        warmup_steps=50,
        weight_decay=0.0,
        eval_interval=10**6,
        eval_batches=1,
        snapshot_interval=10**6,
        device="cpu",
        seed=p["SEED"],
    )
    trainer = Trainer(model, names, data, data, config)
    trainer.train_steps(p["STEPS"])

    probe = repeated_random_tokens(V, T // 2, seed=12345)  # length 16: longer than any training sequence
    model.eval()
    with torch.no_grad(), capture(model, "blocks.*.attn.hook_pattern") as cap:
        logits = model(probe[None])[0, :-1]
    pattern = cap.stack("blocks.*.attn.hook_pattern")[:, 0]  # (L, nh, T, T)
    induction, previous = induction_score(pattern, probe), previous_token_score(pattern)
    loss = torch.nn.functional.cross_entropy(logits, probe[1:], reduction="none")
    first, second = loss[: T // 2 - 1].mean().item(), loss[T // 2 :].mean().item()
    assert induction[1].max() > 0.5, induction
    assert induction[1].max() > 2 * induction[0].max(), induction  # it lives in the second layer
    assert previous[0].max() > 0.3, previous  # with a partner below
    assert second < first - 1.0, (first, second)  # and it predicts the second copy
