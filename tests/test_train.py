"""The training loop: schedule, optimizer groups, chunks, exact resume, divergence, telemetry, CLI, presets."""

import json
import math
from pathlib import Path

import pytest
import torch

from gptviz import GPT, GPTConfig
from gptviz.checkpoint import export_for_lab, read_config
from gptviz.commands.train import cli
from gptviz.presets import build_trainer, load_preset, resume_trainer
from gptviz.train import TrainConfig, TrainingDiverged, configure_optimizer, lr_at

PRESETS = Path(__file__).resolve().parents[1] / "lab" / "configs"
TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n\n"
) * 30
MODEL = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}


def make_trainer(tmp_path, model=None, **train):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    fields = dict(
        corpus=str(corpus),
        batch_size=4,
        max_steps=20,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_interval=0,
        eval_batches=2,
        snapshot_interval=0,
        device="cpu",
        seed=3,
    )
    return build_trainer(dict(model or MODEL), TrainConfig(**{**fields, **train}))


def weights(trainer):
    return {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    c = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)
    lrs = [lr_at(s, c) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # rising
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))  # falling
    assert lrs[55] == pytest.approx(0.5 * (1e-3 + 1e-4))  # half-way down the cosine
    assert lrs[100] == lrs[119] == pytest.approx(1e-4)


def test_weight_decay_groups():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    opt = configure_optimizer(model, TrainConfig(weight_decay=0.1), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]}
    assert id(model.wte.weight) in ids and id(model.blocks[0].attn.c_attn.weight) in ids
    assert all(p.dim() == 1 for p in no_decay["params"])  # biases and LayerNorm gains
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_config_errors_are_specific():
    with pytest.raises(ValueError, match="min_lr <= lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError, match="unknown TrainConfig fields \\['learning_rate'\\]"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="dtype must be one of"):
        TrainConfig(dtype="fp8")


def test_loss_falls_and_chunks_continue(tmp_path):
    t = make_trainer(tmp_path, max_steps=40, lr=1e-2)
    first = t.train_steps(15)
    rest = t.train_steps(25)
    assert [s.step for s in first + rest] == list(range(1, 41)) and t.step == 40 and t.done
    assert len(t.history) == 40 and t.history[-1].elapsed >= t.history[0].elapsed > 0
    assert first[0].loss == pytest.approx(math.log(t.raw_model.config.vocab_size), abs=0.3)
    assert sum(s.loss for s in rest[-10:]) / 10 < first[0].loss - 0.5
    assert all(s.tokens_per_s > 0 and math.isfinite(s.grad_norm) for s in first)


def test_resume_is_bitwise_exact(tmp_path):
    # dropout and gradient accumulation on, so the RNG and accumulation paths are both covered
    model = {**MODEL, "dropout": 0.1}
    kw = dict(max_steps=10, grad_accum_steps=2, eval_interval=3, snapshot_interval=4)
    straight = make_trainer(tmp_path, model, **kw)
    straight.train_steps(10)
    first = make_trainer(tmp_path, model, out_dir=str(tmp_path / "ck"), **kw)
    first.train_steps(6)
    first.save_checkpoint()
    resumed = resume_trainer(tmp_path / "ck")
    assert resumed.step == 6
    resumed.train_steps(4)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [s.loss for s in straight.history[6:]] == [s.loss for s in resumed.history]
    assert resumed.evals == straight.evals
    assert not torch.equal(a["wte.weight"], weights(make_trainer(tmp_path, model, **kw))["wte.weight"])  # trained


def test_divergence_names_step_and_last_checkpoint(tmp_path):
    t = make_trainer(tmp_path, out_dir=str(tmp_path / "ck"), checkpoint_interval=2)
    t.train_steps(2)
    assert t.last_checkpoint == tmp_path / "ck"
    with torch.no_grad():
        t.raw_model.ln_f.weight.fill_(float("nan"))
    before = weights(t)
    with pytest.raises(TrainingDiverged, match=r"step 3: the loss is nan.*ck.*--resume.*lower lr"):
        t.train_steps(5)
    assert t.step == 2
    after = weights(t)
    assert torch.equal(after["wte.weight"], before["wte.weight"])  # the bad step was not applied


def test_eval_is_on_fixed_batches_and_at_intervals(tmp_path):
    t = make_trainer(tmp_path, max_steps=12, eval_interval=5)
    stats = t.train_steps(12)
    assert [s.step for s in stats if s.val_loss is not None] == [5, 10, 12]  # and at max_steps
    assert [e["step"] for e in t.evals] == [5, 10, 12]
    assert t.evaluate() == t.evaluate()  # same batches each time
    assert t.raw_model.training  # back in train mode
    assert t.best_val_loss == min(e["val_loss"] for e in t.evals)


def test_snapshots_record_attention_and_head_metrics(tmp_path):
    got = []
    t = make_trainer(tmp_path, max_steps=10, snapshot_interval=5)
    t.on_snapshot = lambda trainer, snap: got.append(snap.step)
    t.train_steps(10)
    assert [s.step for s in t.snapshots] == got == [0, 5, 10]
    snap = t.snapshots[-1]
    T = min(len(t.tokenizer.encode(t.config.probe_text)), MODEL["block_size"])  # the probe's start
    assert snap.record.attention.shape == (2, 2, T, T)
    assert set(snap.metrics) == {"previous_token", "first_token", "entropy", "induction"}
    assert all(v.shape == (2, 2) and torch.isfinite(v).all() for v in snap.metrics.values())
    assert not torch.equal(t.snapshots[0].record.attention, snap.record.attention)  # training changed them


def test_callbacks_stop_and_interrupt(tmp_path):
    t = make_trainer(tmp_path)
    seen = []

    def on_step(trainer, stats):
        seen.append(stats.step)
        if stats.step == 3:
            trainer.request_stop()
        if stats.step == 5:
            raise KeyboardInterrupt

    t.on_step = on_step
    assert len(t.train_steps(10)) == 3 and not t.interrupted
    out = t.train_steps(10)
    assert t.interrupted and [s.step for s in out] == [4, 5]
    t.on_step = None
    assert [s.step for s in t.train_steps(2)] == [6, 7]


def test_precision_choices_on_cpu(tmp_path):
    t = make_trainer(tmp_path, dtype="bfloat16")
    assert t.amp_dtype == torch.bfloat16
    assert all(math.isfinite(s.loss) for s in t.train_steps(2))
    with pytest.raises(ValueError, match="float16.*needs a CUDA GPU"):
        make_trainer(tmp_path, dtype="float16")
    with pytest.raises(ValueError, match="longer than the model's context"):
        make_trainer(tmp_path, block_size=64)


def test_cli_trains_resumes_and_records_the_command(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "run"
    argv = [
        "--config",
        "tiny",
        "--corpus",
        str(corpus),
        "--max_steps",
        "4",
        "--train.eval_interval",
        "2",
        "--model.n_embd",
        "16",
        "--out",
        str(out),
    ]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "val loss" in printed and str(out) in printed
    info = read_config(out)
    state = info["state"]
    assert state["step"] == 4 and state["command"] == "gptviz train " + " ".join(argv)
    assert state["seed"] == 1337 and state["wall_time"] > 0 and state["val_loss"] is not None
    assert info["model"]["n_embd"] == 16 and info["train"]["corpus"] == str(corpus)
    assert cli(["--resume", str(out), "--max_steps", "6"]) == 0
    state = read_config(out)["state"]
    assert state["step"] == 6 and len(state["commands"]) == 2
    export_for_lab(out)  # weights only: cannot resume exactly, and says so
    capsys.readouterr()
    assert cli(["--resume", str(out), "--max_steps", "8"]) == 2
    assert "weights only" in capsys.readouterr().err
    assert cli(["--resume", str(out), "--model.n_layer", "3"]) == 2


def test_cli_errors(tmp_path, capsys):
    assert cli(["--config", "no-such-preset"]) == 2
    assert "no preset 'no-such-preset'" in capsys.readouterr().err
    assert cli([]) == 2
    assert "--config" in capsys.readouterr().err
    for bad in (["--config", "tiny", "--n_layer", "two"], ["--config", "tiny", "--block_size", "8"]):
        assert cli(bad) == 2  # argparse: wrong type; ambiguous name (model or train?), as one line on stderr
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("gptviz train: error: ") and "--help" in err


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.json")))
def test_presets_are_valid(preset):
    raw = json.loads((PRESETS / preset).read_text())
    assert raw["description"]
    if "finetune" in raw:  # fine-tuning presets have their own loader and no model section
        from gptviz.finetune import load_finetune_preset

        _, train = load_finetune_preset(PRESETS / preset)
    else:
        model, train = load_preset(PRESETS / preset)
        GPTConfig.from_dict({"vocab_size": 100, **model})
    assert train.max_steps > 0


def test_time_budget_stops_and_anneals_by_the_clock(tmp_path):
    t = make_trainer(
        tmp_path,
        max_steps=100_000,
        max_minutes=0.03,
        eval_interval=1000,
        warmup_steps=1,
        out_dir=str(tmp_path / "ck"),
        keep_optimizer_state=False,
        final_weights_dtype="float16",
    )
    stats = t.run()
    assert t.done and 1 < len(stats) < 100_000 and t.time_fraction >= 1.0
    info = read_config(tmp_path / "ck")  # the final checkpoint: weights only, stored as float16
    assert stats[-1].val_loss is not None and info["state"]["step"] == t.step and info["weights_dtype"] == "float16"
    assert not (tmp_path / "ck" / "optimizer.safetensors").exists()
    lrs = [s.lr for s in stats[1:]]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.3 * t.config.lr  # decayed by time
    assert t.run() == []  # budget spent: nothing more to do
