"""DistributedDataParallel on CPU: torchrun starts 2 processes (gloo); both must end with identical weights."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch.distributed
from safetensors import safe_open

from gptviz.checkpoint import read_config

TEXT = "FIRST CITIZEN:\nBefore we proceed any further, hear me speak.\n\nALL:\nSpeak, speak.\n\n" * 40

WORKER = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch
    torch.set_num_threads(1)
    from gptviz.presets import build_trainer
    from gptviz.train import TrainConfig

    out, corpus = sys.argv[1], sys.argv[2]
    config = TrainConfig(corpus=corpus, batch_size=4, max_steps=4, grad_accum_steps=2, warmup_steps=1,
                         eval_interval=2, eval_batches=1, snapshot_interval=2, device="cpu", seed=3,
                         out_dir=os.path.join(out, "ck"), checkpoint_interval=2)
    trainer = build_trainer({"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16, "dropout": 0.1}, config)
    peek = torch.Generator()
    peek.set_state(trainer.batch_generator.get_state())
    first_x, _ = trainer.train_data.get_batch(4, 16, peek, "cpu")  # the batch this rank will draw first
    trainer.train_steps(4)
    blob = b"".join(v.numpy().tobytes() for v in trainer.raw_model.state_dict().values())
    with open(os.path.join(out, f"rank{trainer.dist.rank}.json"), "w") as f:
        json.dump({"weights": hashlib.sha256(blob).hexdigest(), "world": trainer.dist.world_size,
                   "first_batch": first_x.tolist(), "losses": [s.loss for s in trainer.history],
                   "snapshots": len(trainer.snapshots)}, f)
    trainer.close()
""")


@pytest.mark.timeout(180)
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_cpu_ranks_end_with_identical_weights(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
        str(corpus),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["first_batch"] != r1["first_batch"]  # each rank draws its own data (seed + rank)
    assert r0["weights"] == r1["weights"]  # gradients were averaged: the replicas never drift
    assert r0["losses"] == r1["losses"]  # the logged loss is the mean over ranks
    assert r0["snapshots"] == 3 and r1["snapshots"] == 0  # telemetry on rank 0 only

    ck = tmp_path / "ck"  # written by rank 0 alone, with every rank's RNG state for an exact resume
    state = read_config(ck)["state"]
    assert state["step"] == 4 and state["world_size"] == 2
    with safe_open(str(ck / "optimizer.safetensors"), "pt") as f:
        assert {"rng.batch.0", "rng.batch.1", "rng.torch.0", "rng.torch.1"} <= set(f.keys())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folders left
