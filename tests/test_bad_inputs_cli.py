"""`gptviz train | sample | finetune | bench` on bad input: one line on stderr that names the problem and the
fix, exit status 2, no traceback (unless --debug), and nothing on disk lost. Run in-process through the same
`main(argv)` the installed script calls (a subprocess per case would cost seconds of imports each)."""

from __future__ import annotations

import json

import pytest
import torch

from gptviz import GPT, GPTConfig
from gptviz.checkpoint import save
from gptviz.commands import main
from gptviz.errors import ConfigError
from gptviz.tokenizers import CharTokenizer

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n" * 20


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    return save(tmp_path_factory.mktemp("models") / "tiny", model, tok)


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A folder with a corpus, a short corpus and presets, made the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "short.txt").write_text("to be or not\nto be\n", encoding="utf-8")
    model = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16}
    train = {"corpus": "corpus.txt", "max_steps": 1, "batch_size": 2, "eval_interval": 0, "snapshot_interval": 0}
    train.update(device="cpu", eval_batches=1, log_interval=0)
    presets = {
        "ok": {"model": model, "train": {**train, "lr": "3e-3", "min_lr": "1e-4"}},
        "short": {"model": {**model, "block_size": 32}, "train": {**train, "corpus": "short.txt"}},
        "int-string": {"model": {**model, "n_layer": "2"}, "train": train},
        "bad-float": {"model": model, "train": {**train, "lr": "three"}},
        "ft-int-string": {"finetune": {"n_layers": "2"}, "train": {}},
        "ft-bad-float": {"finetune": {"lora_alpha": "sixteen"}, "train": {}},
    }
    for name, preset in presets.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(preset), encoding="utf-8")
    (tmp_path / "broken.json").write_text('{"model": {', encoding="utf-8")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("precious", encoding="utf-8")
    return tmp_path


def one_line_error(capsys, argv: list[str], *words: str) -> str:
    """Run the command; assert exit status 2 and one line on stderr naming `words`; return that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}, stderr: {err}"
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert err.startswith(f"gptviz {argv[0]}: error: ") and "Traceback" not in err
    missing = [w for w in words if w.lower() not in err.lower()]
    assert not missing, f"stderr does not name {missing}: {err}"
    return err


TRAIN_CASES = [
    (["--config", "short.json"], "tokens long", "block_size"),
    (["--config", "int-string.json"], "n_layer", "whole number", "without quotes"),
    (["--config", "bad-float.json"], "lr", "number", "'three'"),
    (["--config", "broken.json"], "not valid json"),
    (["--config", "no-such-preset"], "no preset", "tiny"),
    (["--config", "notes"], "folder", "json file"),
    (["--config", "ok.json", "--lr", "inf"], "--lr", "finite"),
    (["--config", "ok.json", "--lr", "abc"], "--lr", "invalid float value"),
    (["--config", "ok.json", "--batch_size", "2.5"], "batch_size", "invalid int value"),
    (["--config", "ok.json", "--compile", "maybe"], "compile", "true or false"),
    (["--config", "ok.json", "--device", "gpu"], "device", "'gpu'"),
    (["--config", "ok.json", "--corpus", "missing.txt"], "no corpus", "missing.txt"),
    (["--config", "ok.json", "--lrr", "1"], "unrecognized arguments", "--lrr", "--help"),
    (["--resume", "nowhere"], "no checkpoint folder", "nowhere"),
    (["--resume", "notes"], "config.json"),
    ([], "--config"),
]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[" ".join(c[0]) or "no args" for c in TRAIN_CASES])
def test_train_bad_input(files, capsys, case):
    argv, *words = case
    one_line_error(capsys, ["train", *argv], *words)
    assert (files / "notes" / "mine.txt").read_text() == "precious"
    assert not (files / "runs").exists()  # nothing was trained, so nothing written


def test_train_refuses_to_replace_a_folder_of_other_files(files, capsys):
    one_line_error(capsys, ["train", "--config", "ok.json", "--out", "notes"], "not a gptviz checkpoint")
    assert sorted(p.name for p in (files / "notes").iterdir()) == ["mine.txt"]


def test_train_numeric_string_preset_trains(files, capsys):
    assert main(["train", "--config", "ok.json", "--out", "run"]) == 0  # "lr": "3e-3" is read as 0.003
    info = json.loads((files / "run" / "config.json").read_text())
    assert info["train"]["lr"] == 3e-3 and info["state"]["step"] == 1
    capsys.readouterr()
    one_line_error(capsys, ["train", "--resume", "run", "--model.n_layer", "3"], "cannot change when resuming")


SAMPLE_CASES = [
    (["--prompt", "ROMEO\udce9"], "not utf-8", "e9", "utf-8"),
    (["--prompt", "ROMEO", "--temperature", "nan"], "--temperature", "finite"),
    (["--prompt", "ROMEO", "--top-p", "2"], "top_p", "(0, 1]"),
    (["--prompt", "ROMEO", "--top-k", "-3"], "top_k"),
    (["--prompt", "ROMEO", "--max-new-tokens", "-1"], "--max-new-tokens"),
    (["--prompt", "ROMEO", "--num-beams", "0"], "--num-beams"),
    (["--prompt", "ROMEO", "--device", "gpu"], "device", "'gpu'"),
    (["--prompt", "ROMEO", "--max-new-tokens", "many"], "--max-new-tokens", "invalid int value"),
    (["--prompt", "QUEEN \u2603"], "cannot encode", "'\u2603'"),
    (["--prompt", ""], "no tokens"),
]


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=[repr(c[0][1:])[:40] for c in SAMPLE_CASES])
def test_sample_bad_input(ck, capsys, case):
    argv, *words = case
    one_line_error(capsys, ["sample", "--checkpoint", str(ck), *argv], *words)


def test_sample_bad_checkpoints(ck, files, capsys):
    one_line_error(capsys, ["sample", "--checkpoint", "nowhere"], "no model called")
    one_line_error(capsys, ["sample", "--checkpoint", str(ck / "model.safetensors")], "not a folder")
    one_line_error(capsys, ["sample", "--checkpoint", "notes"], "config.json")
    damaged = files / "damaged"
    damaged.mkdir()
    for f in ck.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    (damaged / "model.safetensors").write_bytes((ck / "model.safetensors").read_bytes()[:100])
    one_line_error(capsys, ["sample", "--checkpoint", "damaged"], "model.safetensors", "damaged")
    one_line_error(capsys, ["sample"], "--checkpoint", "required")


FINETUNE_CASES = [
    (["--config", "no-such-preset"], "no preset"),
    (["--config", "ft-int-string.json"], "n_layers", "whole number"),
    (["--config", "ft-bad-float.json"], "lora_alpha", "number"),
    (["--config", "finetune-genre", "--lora_alpha", "abc"], "--lora_alpha", "invalid float value"),
    (["--config", "finetune-genre", "--lr", "nan"], "--lr", "finite"),
    (["--config", "finetune-genre", "--init", "nowhere"], "nowhere"),
]


@pytest.mark.parametrize("case", FINETUNE_CASES, ids=[" ".join(c[0]) for c in FINETUNE_CASES])
def test_finetune_bad_input(files, capsys, case):
    argv, *words = case
    one_line_error(capsys, ["finetune", *argv], *words)


BENCH_CASES = [
    (["--threads", "0"], "--threads"),
    (["--device", "tpu"], "--device", "cpu"),
    (["--out", "notes"], "--out", "folder"),
    (["--quick", "--smoke"], "not allowed with"),
]


@pytest.mark.parametrize("case", BENCH_CASES, ids=[" ".join(c[0]) for c in BENCH_CASES])
def test_bench_bad_input(files, capsys, case):
    argv, *words = case
    one_line_error(capsys, ["bench", *argv], *words)


def test_debug_shows_the_traceback(files, capsys):
    with pytest.raises(ConfigError, match="n_layer"):
        main(["train", "--config", "int-string.json", "--debug"])


def test_help_still_exits_zero(capsys):
    assert main(["train", "--help"]) == 0
    assert "--debug" in capsys.readouterr().out
