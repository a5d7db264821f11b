"""Checkpoints: exact round trips, atomic replacement, and errors a student can act on."""

import json
import os
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

import gptviz
from gptviz import GPT, GPTConfig, files
from gptviz.checkpoint import (
    CheckpointError,
    TrainingState,
    export_for_lab,
    load,
    load_training_state,
    read_config,
    save,
)
from gptviz.tokenizers import CharTokenizer

TEXT = "To be, or not to be, that is the question.\nWhether 'tis nobler in the mind to suffer\n"


@pytest.fixture
def tok():
    return CharTokenizer.from_text(TEXT)


@pytest.fixture
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()


def _trained_optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    model.loss(x, x).backward()
    opt.step()
    return opt


def test_round_trip_is_exact_and_keeps_the_tie(tmp_path, model, tok):
    path = save(tmp_path / "ckpt", model, tok)
    loaded, tok2 = load(path)
    assert not loaded.training
    x = torch.tensor([tok.encode("To be, or not")])
    assert torch.equal(model(x), loaded(x))
    assert loaded.lm_head.weight.data_ptr() == loaded.wte.weight.data_ptr()
    assert tok2.to_dict() == tok.to_dict()
    stored = load_file(str(path / "model.safetensors"))
    assert "lm_head.weight" not in stored and "wte.weight" in stored  # tied weight stored once
    info = read_config(path)
    assert info["format_version"] == 1 and info["model"] == model.config.to_dict()
    assert info["tokenizer"]["kind"] == "char" and info["train"] is None
    assert not (path / "optimizer.safetensors").exists()


def test_gptviz_load_maps_here_and_never_unpickles(tmp_path, model, tok, monkeypatch):
    save(tmp_path / "ckpt", model, tok)

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading must not call torch.load")

    monkeypatch.setattr(torch, "load", refuse)
    loaded, _ = gptviz.load(tmp_path / "ckpt")
    assert torch.equal(loaded.wte.weight, model.wte.weight)


def test_optimizer_and_rng_state_round_trip(tmp_path, model, tok):
    opt = _trained_optimizer(model)
    g = torch.Generator().manual_seed(5)
    training = TrainingState(
        train_config={"lr": 1e-2},
        state={"step": 7, "command": "gptviz train x"},
        optimizer=opt.state_dict(),
        rng={"batch.0": g.get_state()},
    )
    path = save(tmp_path / "ckpt", model, tok, training)
    back = load_training_state(path)
    assert back.state["step"] == 7 and back.train_config == {"lr": 1e-2}
    assert torch.equal(back.rng["batch.0"], g.get_state())
    sd = opt.state_dict()
    assert back.optimizer["param_groups"][0]["lr"] == sd["param_groups"][0]["lr"]
    assert set(back.optimizer["state"]) == set(sd["state"])
    for pid, per in sd["state"].items():
        for key, value in per.items():
            assert torch.equal(back.optimizer["state"][pid][key], value), (pid, key)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt2.load_state_dict(back.optimizer)  # torch accepts what we rebuilt


def test_weights_only_save_and_export_for_lab(tmp_path, model, tok):
    opt = _trained_optimizer(model)
    training = TrainingState(train_config={}, state={"step": 1}, optimizer=opt.state_dict())
    full = save(tmp_path / "full", model, tok, training)
    assert (full / "optimizer.safetensors").is_file() and (full / "optimizer.json").is_file()
    lean = save(tmp_path / "lean", model, tok, training, include_optimizer=False)
    assert not (lean / "optimizer.safetensors").exists()
    assert load_training_state(lean).optimizer is None
    export_for_lab(full)  # in place
    assert not (full / "optimizer.safetensors").exists() and not (full / "optimizer.json").exists()
    assert read_config(full)["state"]["step"] == 1
    assert torch.equal(load(full)[0].wte.weight, model.wte.weight)
    half = export_for_lab(full, tmp_path / "half", weights_dtype=torch.float16)
    assert read_config(half)["weights_dtype"] == "float16"
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    small, _ = load(half)
    assert small.wte.weight.dtype == torch.float32
    assert torch.allclose(small.wte.weight, model.wte.weight, atol=1e-3, rtol=1e-3)


def test_save_replaces_atomically_and_a_failed_save_keeps_the_old_one(tmp_path, model, tok, monkeypatch):
    path = save(tmp_path / "ckpt", model, tok)
    with torch.no_grad():
        model.wte.weight.add_(1.0)
    save(path, model, tok)  # replaces
    assert torch.equal(load(path)[0].wte.weight, model.wte.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or old folders left

    def crash(self, where):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(CharTokenizer, "save", crash)
    saved = model.wte.weight.detach().clone()
    with torch.no_grad():
        model.wte.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save(path, model, tok)
    monkeypatch.undo()
    old, _ = load(path)  # still the previous, complete checkpoint
    assert torch.equal(old.wte.weight, saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_refuses_to_replace_a_folder_that_is_not_a_checkpoint(tmp_path, model, tok):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "homework.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a gptviz checkpoint"):
        save(tmp_path / "notes", model, tok)
    assert (tmp_path / "notes" / "homework.txt").read_text() == "precious"


def test_missing_folder_and_files(tmp_path, model, tok):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        load(tmp_path / "nope")
    path = save(tmp_path / "ckpt", model, tok)
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        load(path)


def test_interrupted_swap_says_where_the_old_checkpoint_is(tmp_path, model, tok):
    path = save(tmp_path / "ckpt", model, tok)
    path.rename(tmp_path / ".ckpt.old-1234abcd")  # what a crash between the two renames leaves
    with pytest.raises(FileNotFoundError, match=r"\.ckpt\.old-1234abcd"):
        load(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_weights_name_the_file(tmp_path, model, tok, damage):
    path = save(tmp_path / "ckpt", model, tok)
    f = path / "model.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    else:
        f.write_bytes(b"\x00" * 8 + b"not json at all" + data[23:])  # same size, broken header
    with pytest.raises(CheckpointError, match="model.safetensors is damaged.*earlier checkpoint"):
        load(path)


def test_truncated_file_without_size_record_is_still_reported(tmp_path, model, tok):
    path = save(tmp_path / "ckpt", model, tok)
    info = json.loads((path / "config.json").read_text())
    del info["files"]
    (path / "config.json").write_text(json.dumps(info))
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="damaged"):
        load(path)


def test_shape_mismatch_with_config(tmp_path, model, tok):
    path = save(tmp_path / "ckpt", model, tok)
    info = json.loads((path / "config.json").read_text())
    info["model"]["n_embd"] = 32
    (path / "config.json").write_text(json.dumps(info))
    expected = r"shapes differ: blocks.0.attn.c_attn.bias: file \(48,\) vs config \(96,\).*different models"
    with pytest.raises(CheckpointError, match=expected):
        load(path)


def test_unknown_format_version_and_hf_folder(tmp_path, model, tok):
    path = save(tmp_path / "ckpt", model, tok)
    info = json.loads((path / "config.json").read_text())
    info["format_version"] = 99
    (path / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load(path)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 16}))
    with pytest.raises(CheckpointError, match="from_pretrained"):
        load(hf)


def test_damaged_config_json(tmp_path, model, tok):
    path = save(tmp_path / "ckpt", model, tok)
    (path / "config.json").write_text('{"format_version": 1, "model": {')
    with pytest.raises(CheckpointError, match="config.json is damaged"):
        load(path)


def test_save_unwraps_compiled_or_ddp_like_wrappers(tmp_path, model, tok):
    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    path = save(tmp_path / "ckpt", Wrapper(model), tok)
    assert torch.equal(load(path)[0].wte.weight, model.wte.weight)


def test_loading_skips_the_random_init_but_keeps_ties_and_tables(tmp_path):
    """GPT.empty (used by load) must give the very model that was saved: tied head, RoPE tables, every weight."""
    from gptviz import GPT, GPTConfig, checkpoint
    from gptviz.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("abcdefgh")
    for extra in (
        {},
        {"pos_encoding": "rotary", "norm": "rmsnorm", "mlp_gated": True, "activation": "silu", "n_kv_head": 1},
        {"pos_encoding": "sinusoidal", "tie_embeddings": False},
    ):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16, **extra)).eval()
        loaded, _ = checkpoint.load(checkpoint.save(tmp_path / "m", model, tok))
        assert (loaded.lm_head.weight is loaded.wte.weight) == model.config.tie_embeddings
        x = torch.tensor([[1, 2, 3, 4, 5]])
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x)), extra


def test_gptviz_load_points_at_an_interrupted_save_too(tmp_path, monkeypatch):
    """gptviz.load (not only checkpoint.load) says how to restore a checkpoint a crash left as .<name>.old-*."""
    import shutil

    from gptviz.paths import model_path

    shutil.copytree(model_path(), tmp_path / ".ckpt.old-1234abcd")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="rename that folder to ckpt"):
        gptviz.load("ckpt")
    with pytest.raises(FileNotFoundError, match="Did you mean 'smollm2-135m'"):
        gptviz.load("smollm2-135")


def _save_killed_midway(path, model, tok) -> None:
    """Run save(path) in a forked child that SIGKILLs itself while the temporary folder is half-written."""

    def die(folder):
        (folder / "partial.bin").write_bytes(b"\0" * 64)
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no finally, no cleanup runs

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            save(path, model, tok, extra_files=die)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
def test_a_killed_saves_temporary_folder_is_removed_by_the_next_save_or_load(tmp_path, model, tok):
    path = save(tmp_path / "ckpt", model, tok)
    _save_killed_midway(path, model, tok)
    left = sorted(tmp_path.glob(".ckpt.tmp-*"))
    assert len(left) == 1 and (left[0] / "partial.bin").is_file()  # what a kill -9 leaves behind
    assert load(path)[0].config == model.config  # the old checkpoint is whole ...
    assert not list(tmp_path.glob(".ckpt.tmp-*"))  # ... and loading it removed the dead writer's folder

    _save_killed_midway(path, model, tok)
    old = time.time() - files.STALE_AFTER_S - 60
    live = tmp_path / f".ckpt.tmp-{files._host_tag()}-{os.getpid()}-abcd1234"  # this process, still writing
    elsewhere = tmp_path / ".ckpt.tmp-0123abcd-1-abcd1234"  # pid 1 of another machine sharing the folder: fresh
    abandoned = tmp_path / ".ckpt.tmp-0123abcd-2-abcd1234"  # ... and one nobody touched for a day
    legacy = tmp_path / ".ckpt.tmp-k3j_9x2q"  # an older gptviz's name, no pid in it: a day old
    not_ours = [tmp_path / ".ckpt.tmp-notes", tmp_path / ".ckpt.old-1234abcd", tmp_path / ".other.tmp-k3j_9x2q"]
    for folder in (live, elsewhere, abandoned, legacy, *not_ours):
        folder.mkdir()
        (folder / "f").write_text("x")
    for folder in (abandoned, legacy, not_ours[-1]):
        os.utime(folder / "f", (old, old))
        os.utime(folder, (old, old))
    save(path, model, tok)
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name != "ckpt")
    assert kept == sorted(p.name for p in (live, elsewhere, *not_ours)), kept
    assert load(path)[0].config == model.config
