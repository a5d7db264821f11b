"""A checkpoint save killed with SIGKILL at every stage (mid-file, between files, between the renames) leaves
a checkpoint that loads, holding either the previous weights or the new ones, whole; a run resumed from what
survives reproduces the uninterrupted run's weights exactly.

Each kill is a forked child of this process (torch is already imported, so a stage costs milliseconds, not a
fresh interpreter): the child wraps every file-system step of `gptviz.checkpoint.save` with a tripwire and
SIGKILLs itself at the k-th one, after writing half of the file when that step writes one. POSIX only.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

import pytest
import torch

import gptviz.checkpoint as ckpt
import gptviz.files as files
from gptviz import GPT, GPTConfig
from gptviz.checkpoint import TrainingState, load, load_training_state, save
from gptviz.errors import MissingFileError
from gptviz.presets import build_trainer, resume_trainer
from gptviz.tokenizers import CharTokenizer
from gptviz.train import TrainConfig

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 12
WRITERS = ("save_file", "_write_json", "tokenizer.save")  # stages that write a file: killed half-way through it
SWAP = ("exchange", "rename")  # the stages that put the new folder in place


def _tripwires(kill_at: int, report_fd: int, tok_class: type) -> None:
    """In the child: count file-system steps; at step `kill_at` write its name to `report_fd` and SIGKILL."""
    count = [0]

    def wire(name, fn, write_half=None):
        def wrapped(*args, **kwargs):
            if count[0] == kill_at:
                os.write(report_fd, name.encode())
                if write_half is not None:
                    write_half(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
            count[0] += 1
            return fn(*args, **kwargs)

        return wrapped

    def half_safetensors(tensors, filename, metadata=None):
        scratch = tempfile.mktemp(suffix=".safetensors")
        real_save_file(tensors, scratch, metadata=metadata)
        data = open(scratch, "rb").read()
        open(filename, "wb").write(data[: len(data) // 2])

    def half_json(path, obj):
        real_write_json(path, obj)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    real_save_file, real_write_json = ckpt.save_file, ckpt._write_json
    ckpt.save_file = wire("save_file", real_save_file, half_safetensors)
    ckpt._write_json = wire("_write_json", real_write_json, half_json)
    tok_class.save = wire("tokenizer.save", tok_class.save)
    files.fsync_path = wire("fsync", files.fsync_path)
    files.exchange = wire("exchange", files.exchange)
    files.tempfile.mkdtemp = wire("mkdtemp", tempfile.mkdtemp)
    os.rename = wire("rename", os.rename)
    shutil.rmtree = wire("rmtree", shutil.rmtree)


def save_killed_at(kill_at: int, *save_args, exchange: bool = True, **save_kwargs) -> str | None:
    """Run `save(*save_args)` in a forked child killed at file-system step `kill_at`: the step's name, or None
    when the save finished before reaching it."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_fd)
            _tripwires(kill_at, write_fd, type(save_args[2]))
            if not exchange:  # a filesystem without RENAME_EXCHANGE: two renames
                files.exchange = lambda a, b: False
            save(*save_args, **save_kwargs)
        except BaseException:
            code = 3
        os._exit(code)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    stage = os.read(read_fd, 100).decode()
    os.close(read_fd)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL and stage
        return stage
    assert os.WEXITSTATUS(status) == 0, "the save failed in the child without being killed"
    return None


@pytest.fixture
def setup(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, tok.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    model.loss(x, x).backward()
    opt.step()
    path = tmp_path / "ck"
    training = TrainingState(state={"step": 1}, optimizer=opt.state_dict(), rng={"torch": torch.get_rng_state()})
    save(path, model, tok, training)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    training.state = {"step": 2}
    return path, model, tok, training, old


def weights(path):
    model, _ = load(path)
    return model.state_dict()


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_at_every_stage_leaves_a_whole_checkpoint(setup):
    path, model, tok, training, old = setup
    new = {k: v.clone() for k, v in model.state_dict().items()}
    stages = []
    for k in range(60):
        stage = save_killed_at(k, path, model, tok, training)
        if stage is None:
            break
        stages.append(stage)
        found = weights(path)  # loads after every kill: config, tokenizer and weights all whole
        swapped = "exchange" in stages[:-1]  # an earlier kill came at the swap, so this one came after it
        assert same(found, new if swapped else old), f"killed at step {k} ({stage}): {'new' if swapped else 'old'}?"
        assert load_training_state(path).state["step"] == (2 if swapped else 1)
    assert stage is None, "the save never finished"
    assert {"save_file", "_write_json", "tokenizer.save", "fsync", "exchange", "rmtree"} <= set(stages), stages
    assert same(weights(path), new)
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "ck"]
    assert all(n.startswith(".ck.tmp-") for n in leftovers)  # only temporaries beside it, never a damaged "ck"


def test_sigkill_between_the_two_renames_keeps_the_old_folder_beside_it(setup):
    """Where the filesystem cannot swap folders in one step, a kill between the renames leaves the previous
    checkpoint whole as .ck.old-*; loading says so, and renaming it back restores it exactly."""
    path, model, tok, training, old = setup
    renames = 0
    for k in range(60):
        stage = save_killed_at(k, path, model, tok, training, exchange=False)
        assert stage is not None, "never reached the second rename"
        if stage == "rename":
            renames += 1
            if renames == 2:  # the first rename moved the old folder aside; killed before the second
                break
        assert same(weights(path), old)
    assert not path.exists()
    with pytest.raises(MissingFileError, match=r"\.ck\.old-") as info:
        load(path)
    leftover = next(path.parent.glob(".ck.old-*"))
    assert leftover.name in str(info.value) and "rename" in str(info.value)
    leftover.rename(path)
    assert same(weights(path), old)


def test_resume_after_a_killed_save_reproduces_the_uninterrupted_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    model = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.1}
    fields = dict(corpus=str(corpus), batch_size=3, max_steps=6, lr=3e-3, min_lr=3e-4, warmup_steps=2)
    fields.update(eval_interval=0, snapshot_interval=0, device="cpu", seed=5, grad_accum_steps=2)
    straight = build_trainer(model, TrainConfig(**fields))
    straight.train_steps(6)

    out = tmp_path / "ck"
    run = build_trainer(model, TrainConfig(**fields, out_dir=str(out)))
    run.train_steps(3)
    run.save_checkpoint()  # the last good checkpoint: step 3
    run.train_steps(1)
    training = run.training_state()
    killed = save_killed_at(3, out, run.raw_model, run.tokenizer, training)  # mid-write of the step-4 save
    assert killed in WRITERS
    resumed = resume_trainer(out)
    assert resumed.step == 3
    resumed.train_steps(3)
    a, b = straight.raw_model.state_dict(), resumed.raw_model.state_dict()
    assert same(a, b)  # bit for bit
    assert [s.loss for s in straight.history[3:]] == [s.loss for s in resumed.history]


def test_a_killed_write_atomic_leaves_the_old_file_and_the_next_write_removes_its_temporary(tmp_path):
    target = tmp_path / "results.json"
    files.write_atomic(target, '{"old": true}')
    pid = os.fork()
    if pid == 0:  # the child dies between writing its temporary file and the rename
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        try:
            files.write_atomic(target, '{"new": true}')
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".results.json.tmp-")]
    assert len(left) == 1 and left[0].read_text() == '{"new": true}' and str(pid) in left[0].name
    assert target.read_text() == '{"old": true}'  # the target is the old file, whole
    # a live writer's temporary (this process's pid) is never touched; the dead child's is
    live = tmp_path / f".results.json.tmp-{files._host_tag()}-{os.getpid()}-abcd1234"
    live.write_text("being written")
    files.write_atomic(target, '{"newer": true}')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "results.json"])
    assert target.read_text() == '{"newer": true}'
