"""Fine-tuning: LM on new text, classifier modes (head / last_n / full / LoRA), save/load, baselines, CLI, errors."""

import csv
import json
import random
import warnings

import pytest
import torch

from gptviz import GPT, GPTConfig, checkpoint, lora, plots
from gptviz import finetune as ft
from gptviz.commands.finetune import cli as finetune_cli
from gptviz.data import Corpus, Example
from gptviz.finetune.classifier import _pad
from gptviz.tokenizers import get_tokenizer
from gptviz.train import TrainConfig

ALPHABET = "abcdefgh xy\n"
LM_TEXT = "the cat sat on the mat. " * 40 + "a dog ran in the fog. " * 40


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("char", text=ALPHABET + LM_TEXT)


def tiny_gpt(tok, seed=0, block_size=16, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32, **kw))


def toy_examples(n, prefix, seed):
    """Label = the first character (x or y); the rest is random letters: trivially separable, but only by
    looking at one position, so pooling and training must work."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        first = rng.choice("xy")
        body = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(4, 14)))
        out.append(Example(first + body, "X" if first == "x" else "Y", f"{prefix}{i}"))
    return out


TRAIN, TEST = toy_examples(160, "tr", 1), toy_examples(40, "te", 2)


def train_config(**kw):
    fields = dict(
        batch_size=16,
        max_steps=40,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=4,
        eval_interval=0,
        eval_batches=2,
        snapshot_interval=0,
        device="cpu",
        seed=0,
    )
    return TrainConfig(**{**fields, **kw})


def classifier_job(tok, steps=0, **config):
    job = ft.ClassifierJob(tiny_gpt(tok), tok, TRAIN, TEST, ft.FinetuneConfig(**config), train_config())
    if steps:
        job.train_steps(steps)
    return job


def gpt_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---- classifier ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_learns_a_separable_toy_task(tok, pooling):
    job = classifier_job(tok, steps=40, mode="full", pooling=pooling)
    assert job.trainer.history[-1].loss < 0.3 < job.trainer.history[0].loss
    ev = job.evaluate()
    assert ev.accuracy >= 0.9 and ev.confusion.sum() == len(TEST) and ev.confusion.trace() / len(TEST) == ev.accuracy
    assert job.model.predict(tok, ["xabc", "yabc"]) == ["X", "Y"]


def test_evaluation_loss_is_the_cross_entropy_of_the_true_labels(tok):
    job = classifier_job(tok, steps=5, mode="last_n", n_layers=1)
    ev = job.evaluate()
    with torch.no_grad():
        logits = torch.cat([job.model(job.test_set.collate([i])[0]) for i in range(len(TEST))])  # one text at a time
    expected = torch.nn.functional.cross_entropy(logits, job.test_set.y).item()
    assert ev.loss == pytest.approx(expected, rel=1e-5) and 0 < ev.loss < 5
    assert job.evaluate(index=[0, 1]).loss == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:2], job.test_set.y[:2]).item(), rel=1e-5
    )
    assert ev.to_dict()["loss"] == ev.loss


def test_padding_and_windows_do_not_change_a_text(tok):
    torch.manual_seed(0)
    for pooling in ("last", "mean"):
        clf = ft.GPTClassifier(tiny_gpt(tok, block_size=8), pooling=pooling, labels=["a", "b"], max_windows=3).eval()
        short, long = tok.encode("xabc"), tok.encode("yabcdefgh abcdef")  # 4 and 16 tokens (2 windows)
        x = _pad([short, long])  # (2, 16), row 0 right-padded with -1
        with torch.no_grad():
            both = clf(x)
            alone = torch.cat([clf(torch.tensor([short])), clf(torch.tensor([long]))])
            h = clf.gpt.trunk(torch.tensor([long[:8], long[8:]]))  # the two windows, each on its own
        torch.testing.assert_close(both, alone, rtol=1e-5, atol=1e-6)
        pooled = h[1, -1] if pooling == "last" else h.reshape(16, -1).mean(0)
        torch.testing.assert_close(clf.features(torch.tensor([long]))[0], pooled, rtol=1e-5, atol=1e-6)


def test_frozen_parameters_stay_bitwise_unchanged(tok):
    job = classifier_job(tok, mode="last_n", n_layers=1)
    before = gpt_state(job.model.gpt)
    job.train_steps(5)
    after = job.model.gpt.state_dict()
    frozen = [k for k in before if not k.startswith(("blocks.1.", "ln_f."))]
    assert "wte.weight" in frozen and "blocks.0.attn.c_attn.weight" in frozen
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["blocks.1.mlp.c_fc.weight"], after["blocks.1.mlp.c_fc.weight"])
    head = classifier_job(tok, mode="head")
    before = gpt_state(head.model.gpt)
    w = head.model.head.weight.clone()
    head.train_steps(5)
    assert all(torch.equal(v, head.model.gpt.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(w, head.model.head.weight)
    assert ft.count_parameters(head.model)[0] == 32 * 2 + 2  # the head only


def test_lora_trains_only_adapters_and_merging_is_exact(tok):
    job = classifier_job(tok, mode="lora", lora_rank=4, lora_mlp=True)
    layers = lora.lora_layers(job.model)
    assert len(layers) == 6 and all(
        isinstance(m, lora.LoRALinear) for m in layers.values()
    )  # 2 x (c_attn, c_fc, c_proj)
    before = gpt_state(job.model)
    job.train_steps(10)
    after = job.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k or k.startswith("head.") for k in changed)
    assert any(k.endswith("lora_B") for k in changed) and "head.weight" in changed
    x = _pad([tok.encode("xabcdefg"), tok.encode("yab")])
    job.model.eval()
    with torch.no_grad():
        unmerged = job.model(x)
        w = job.model.gpt.blocks[0].attn.c_attn.weight.clone()
        lora.merge_lora(job.model)
        merged = job.model(x)
        lora.unmerge_lora(job.model)
        torch.testing.assert_close(job.model.gpt.blocks[0].attn.c_attn.weight, w, rtol=0, atol=1e-6)
        plain = lora.remove_lora(job.model.gpt)  # merges, then plain nn.Linear layers again
        assert not lora.lora_layers(plain) and type(plain.blocks[0].attn.c_attn) is torch.nn.Linear
        removed = job.model(x)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(removed, unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.equal(unmerged[0], unmerged[1])


@pytest.mark.parametrize("merge", [False, True])
def test_save_and_load_classifier_round_trip(tok, tmp_path, merge):
    job = classifier_job(tok, steps=5, mode="lora", lora_rank=2, pooling="mean", max_windows=2)
    if merge:
        lora.merge_lora(job.model)
    path = job.save(tmp_path / "clf")
    job.save(tmp_path / "clf")  # replacing an earlier save is fine
    model, tok2 = ft.load_classifier(path)
    texts = ["xabc", "yhgfedcba", "x" + "abcdefgh" * 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the last text is longer than 2 windows
        assert torch.equal(model.predict_proba(tok2, texts), job.model.predict_proba(tok, texts))
    assert model.labels == ["X", "Y"] and model.pooling == "mean" and model.max_windows == 2
    assert all(m.merged == merge for m in lora.lora_layers(model).values())
    gpt, _ = checkpoint.load(path)  # the folder is also a plain GPT checkpoint
    assert isinstance(gpt, GPT)
    lm = tmp_path / "lm"
    checkpoint.save(lm, tiny_gpt(tok), tok)
    with pytest.raises(checkpoint.CheckpointError, match="without a classifier head"):
        ft.load_classifier(lm)


def test_baselines_use_the_same_split(tok):
    train = [Example(f"{w} {w} note", w, f"g{i}") for i, w in enumerate(["sun", "rain"] * 10)]
    test = [Example(f"note {w}", w, f"t{i}") for i, w in enumerate(["sun", "rain", "rain"])]
    b = ft.baselines(train, test)
    assert b["majority_label"] == "rain" and b["majority_baseline"] == pytest.approx(2 / 3)
    assert b["bow_baseline"] == 1.0  # the words give the label away
    job = classifier_job(tok, mode="head")
    s = job.summary()
    assert (s["n_train"], s["n_test"]) == (len(TRAIN), len(TEST))
    assert s["bow_baseline"] == ft.baselines(TRAIN, TEST)["bow_baseline"] and s["labels"] == ["X", "Y"]
    counts = sum(e.label == s["majority_label"] for e in TEST)
    assert s["majority_baseline"] == pytest.approx(counts / len(TEST))


# ---- language-model fine-tuning ----------------------------------------------------------------------------
def test_lm_finetune_lowers_loss_on_new_text_and_diffs(tok, tmp_path):
    gpt = tiny_gpt(tok)
    corpus = Corpus("toy", LM_TEXT, "the cat sat on the mat. a dog ran in the fog. " * 6, ["toy"], ["toy"])
    config = ft.FinetuneConfig(task="lm", mode="full", freeze_embeddings=True)
    job = ft.LMJob(gpt, tok, corpus, config, train_config(lr=1e-2, eval_interval=30, probe_text="the cat sat"))
    wte = gpt.wte.weight.clone()
    job.train_steps(30)
    after = job.evaluate()
    assert after["val"] < job.loss_before["val"] - 0.5
    assert torch.equal(gpt.wte.weight, wte)  # frozen embeddings (and the tied LM head)
    diff = job.diff("the cat sat")
    assert diff.head_change.shape == (2, 2) and diff.next_token_shift.shape == (11,)
    assert float(diff.head_change.max()) > 0 and 0 <= float(diff.next_token_shift.min()) <= 1
    assert diff.top_heads(1)[0][2] == pytest.approx(float(diff.head_change.max()))
    assert len(plots.checkpoint_diff(diff.before, diff.after).data) >= 3  # heads heatmap + before/after bars
    same = ft.checkpoint_diff(gpt, gpt, tok, "the cat")
    assert float(same.head_change.abs().max()) == 0 and float(same.next_token_shift.max()) == 0


def test_lm_lora_is_merged_into_a_plain_checkpoint(tok, tmp_path):
    gpt = tiny_gpt(tok)
    corpus = Corpus("toy", LM_TEXT, LM_TEXT[:400], ["toy"], ["toy"])
    job = ft.LMJob(gpt, tok, corpus, ft.FinetuneConfig(task="lm", mode="lora", lora_rank=2), train_config(lr=1e-2))
    job.train_steps(5)
    path = job.save(tmp_path / "lm")
    loaded, _ = checkpoint.load(path)
    x = torch.tensor([tok.encode("the cat sat")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), gpt.eval()(x), rtol=1e-5, atol=1e-5)
    assert lora.lora_layers(gpt)  # the live model keeps its adapters


# ---- command line --------------------------------------------------------------------------------------------
@pytest.fixture
def cli_inputs(tok, tmp_path):
    base = tmp_path / "base"
    checkpoint.save(base, tiny_gpt(tok, block_size=32), tok)
    table = tmp_path / "toy.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for e in TRAIN[:60]:
            w.writerow([e.text, e.label])
    text = tmp_path / "new.txt"
    text.write_text(LM_TEXT, encoding="utf-8")
    return base, table, text


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_classifier_prints_json_last(cli_inputs, tmp_path, capsys):
    base, table, _ = cli_inputs
    out = tmp_path / "out"
    rc = finetune_cli(
        [
            "--config",
            "finetune-genre",
            "--init",
            str(base),
            "--data",
            str(table),
            "--max_steps",
            "6",
            "--eval_interval",
            "3",
            "--device",
            "cpu",
            "--max_windows",
            "1",
            "--out",
            str(out),
        ]
    )
    result = last_json(capsys)
    assert rc == 0
    for key in ("accuracy", "majority_baseline", "bow_baseline", "n_train", "n_test", "checkpoint", "confusion"):
        assert key in result
    assert result["n_train"] + result["n_test"] == 60 and result["checkpoint"] == str(out)
    model, _ = ft.load_classifier(out)
    assert model.labels == ["X", "Y"]


def test_cli_lm_prints_json_last(cli_inputs, tmp_path, capsys):
    base, _, text = cli_inputs
    rc = finetune_cli(
        [
            "--config",
            "finetune-lm-comedies",
            "--init",
            str(base),
            "--data",
            str(text),
            "--max_steps",
            "4",
            "--eval_batches",
            "2",
            "--batch_size",
            "4",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "lm"),
        ]
    )
    result = last_json(capsys)
    assert rc == 0 and {"val_loss_before", "val_loss_after", "checkpoint", "most_changed_heads"} <= set(result)
    checkpoint.load(result["checkpoint"])


def test_cli_reports_bad_input(cli_inputs, capsys):
    base, _, _ = cli_inputs
    assert finetune_cli(["--config", "finetune-genre", "--init", str(base), "--data", "nowhere.csv"]) == 2
    assert "No CSV file at nowhere.csv" in capsys.readouterr().err
    assert finetune_cli(["--config", "finetune-genre", "--init", str(base), "--mode", "adapter"]) == 2
    assert "mode must be one of" in capsys.readouterr().err


# ---- bad input -------------------------------------------------------------------------------------------------
def test_bad_inputs_give_clear_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="at least two different classes"):
        ft.GPTClassifier(tiny_gpt(tok), labels=["only"])
    one_label = [Example("xab", "X", "g1"), Example("xcd", "X", "g2")]
    with pytest.raises(ValueError, match="at least two different classes"):
        ft.ClassifierJob(tiny_gpt(tok), tok, one_label, one_label, ft.FinetuneConfig(), train_config())
    with pytest.raises(ValueError, match=r"labels \['Z'\] are not among"):
        ft.ClassifierJob(tiny_gpt(tok), tok, TRAIN, [Example("xab", "Z", "g")], ft.FinetuneConfig(), train_config())
    with pytest.raises(ValueError, match="mode 'head' trains a classifier head"):
        ft.FinetuneConfig(task="lm", mode="head")
    with pytest.raises(ValueError, match="n_layers=3"):
        classifier_job(tok, mode="last_n", n_layers=3)
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,category\nhello,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text', 'label'\]"):
        ft.labelled_split(ft.FinetuneConfig(data=str(bad)))
    with pytest.raises(FileNotFoundError, match="nothing to fine-tune"):
        ft.load_base(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown genres \\['sonnets'\\]"):
        ft.labelled_split(ft.FinetuneConfig(data="shakespeare:sonnets"))
    # too long: the first block_size tokens are kept, with a warning; unknown characters are dropped
    long = [Example("x" + "ab" * 20, "X", "g1"), Example("y€ab", "Y", "g2")]
    with pytest.warns(UserWarning) as caught:
        ds = ft.LabelledDataset(long, tok, ["X", "Y"], max_tokens=16)
    messages = " ".join(str(w.message) for w in caught)
    assert "kept the first 16 tokens" in messages and "'€'" in messages
    assert ds.ids[0] == tok.encode(("x" + "ab" * 20)[:16]) and ds.ids[1] == tok.encode("yab")
    with pytest.raises(ValueError, match="has no tokens"):
        ft.LabelledDataset([Example("€", "X", "g")], tok, ["X", "Y"], 16)


# ---- the lab panel ---------------------------------------------------------------------------------------------
def test_finetune_panel_runs_chunks_and_classifies_typed_text(tok):
    from gptviz.widgets._base import unpack
    from gptviz.widgets.finetune import FinetunePanel

    base = tiny_gpt(tok)
    pristine = gpt_state(base)
    corpus = Corpus("toy", LM_TEXT, LM_TEXT[:300], ["toy"], ["toy"])
    p = FinetunePanel(
        base,
        tok,
        TRAIN,
        TEST,
        corpus,
        ft.FinetuneConfig(mode="full"),
        train_config(eval_interval=4),
        chunk=4,
        live_examples=20,
    )
    stats = p.run(8)
    assert len(stats) == 8 and p.job.step == 8 and [s for s, _ in p.accuracy] == [0, 4, 8]
    loss, acc, confusion = p.figure.data[0], p.figure.data[2], p.figure.data[3]
    assert list(loss.y) == [s.loss for s in p.job.trainer.history] and list(acc.y) == [a for _, a in p.accuracy]
    assert unpack(confusion.z).sum() == 20 and "accuracy" in p.status.value
    assert {a.text.split()[0] for a in p.figure.layout.annotations} >= {"majority", "bag"}  # baseline lines
    p.text.value = "xabcdef"  # typing switches to "your text": probabilities + pooled-token attention
    assert p.view.value == "text" and "<b>X</b>" in p.prediction.value
    bars, att = p.figure.data[0], p.figure.data[1]
    assert sum(bars.y) == pytest.approx(1.0, abs=1e-5) and unpack(att.z).shape == (2 * 2, 7)
    assert p.evaluate_all().confusion.sum() == len(TEST)
    p.mode.value = "lora"  # a new job from a fresh copy of the base model
    assert p.job.step == 0 and lora.lora_layers(p.job.model)
    assert ft.count_parameters(p.job.model)[0] == 2 * (8 * 32 + 96 * 8) + 66  # A (r, C) + B (3C, r) per layer + head
    p.start(400)  # background run, stopped from "the kernel"
    p.stop()
    p.wait(60)
    assert not p.running and p.job.step < 400 and p.last_error is None
    p.view.value, p.task.value = "training", "lm"
    p.run(4)
    assert p.job.step == 4 and isinstance(p.job, ft.LMJob) and p.figure.data[-1].type == "heatmap"
    p.mode.value = "head"  # not an LM choice: switched to the top layers instead
    assert p.mode.value == "last_n" and p.last_error is None
    p.text.value = "the cat sat"
    assert p.view.value == "text" and "most changed heads" in p.prediction.value
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in pristine.items())  # the base never trains


# ---- lesson 05's pieces: one play split in two, per-token losses, one accuracy truth ---------------------------
def test_play_corpus_holds_out_the_end_of_one_play_between_speeches():
    corpus = ft.play_corpus("much-ado-about-nothing", 0.2)
    whole = len(corpus.train_text) + len(corpus.val_text)
    assert 0.18 < len(corpus.val_text) / whole < 0.22
    assert corpus.train_text.endswith("\n\n") and not corpus.val_text.startswith("\n")  # cut after a speech
    assert corpus.train_docs == corpus.val_docs == ["much-ado-about-nothing"]
    config = ft.FinetuneConfig(task="lm", mode="last_n", data="shakespeare-play:much-ado-about-nothing")
    assert ft.corpus_for(config).val_text == corpus.val_text
    with pytest.raises(ValueError, match="did you mean much-ado-about-nothing"):
        ft.play_corpus("much-ado")
    with pytest.raises(ValueError, match="val_fraction"):
        ft.FinetuneConfig(task="lm", mode="full", val_fraction=1.5)
    preset, _ = ft.load_finetune_preset("finetune-lm-new-play")
    assert preset.data == "shakespeare-play:much-ado-about-nothing"


def test_token_losses_match_the_model_loss_and_cover_every_target(tok):
    gpt = tiny_gpt(tok, block_size=16).eval()
    text = LM_TEXT[:50]
    losses = ft.token_losses(gpt, tok, text)
    assert losses.shape == (49,)  # one loss per character after the first, across four windows of 16
    ids = torch.tensor([tok.encode(text[:16])])
    with torch.no_grad():
        logits = gpt(ids)[0]
    expected = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="none")
    torch.testing.assert_close(losses[:15], expected)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        ft.token_losses(gpt, tok, "a")


def test_finetune_panel_title_and_status_give_the_same_accuracy(tok):
    from gptviz.widgets.finetune import FinetunePanel

    p = FinetunePanel(
        tiny_gpt(tok),
        tok,
        TRAIN,
        TEST,
        config=ft.FinetuneConfig(mode="full"),
        train_config=train_config(),
        chunk=4,
        live_examples=10,
    )
    seen = []
    p.job.trainer.on_step = lambda t, s: seen.append((p.stop_button.disabled, p.status.value))
    p.run(4)
    assert all(off for off, _ in seen), "Stop cannot reach a kernel busy with this cell: it must be off"
    assert "training in this cell" in seen[0][1] and "ready" not in seen[0][1]
    assert not p.start_button.disabled and p.stop_button.disabled  # idle again
    live = p.accuracy_text()
    assert "on 10 of 40 test examples" in live and live in p.figure.layout.title.text and live in p.status.value
    ev = p.evaluate_all()
    every = p.accuracy_text()
    assert every == f"step 4: accuracy {ev.accuracy:.3f} on all 40 test examples"
    assert every in p.figure.layout.title.text and every in p.status.value
    assert p.figure.data[3].name == "all test examples" and list(p.figure.data[3].y) == [ev.accuracy]
