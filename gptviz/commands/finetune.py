"""`gptviz finetune`: fine-tune a checkpoint from a preset, print progress, save, and end with one JSON line.

    gptviz finetune --config finetune-genre [--mode lora --max_steps 300] [--out DIR]
    gptviz finetune --config finetune-lm-comedies --init lab/models/shakespeare-char

Every field can be changed with --FIELD (or --finetune.FIELD / --train.FIELD). The last line printed is
one JSON object with the results (accuracy and baselines, or the loss before and after), for scripts.
Exit status: 0 done, 1 the loss diverged, 2 bad input (one line on stderr; --debug shows the traceback), 130
stopped by Ctrl-C (the folder is still saved).
The run is `gptviz.finetune`'s job; this module only turns flags into configs and progress into lines.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from ..finetune import ClassifierJob, FinetuneConfig, build_job, count_parameters, load_finetune_preset
from ..train import TrainConfig, TrainingDiverged
from ._args import Parser, add_config_fields, given, run_command


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="gptviz finetune",
        allow_abbrev=False,
        description="Fine-tune a checkpoint from a preset (a "
        "classifier, or more language-model training on new text). Every field can be "
        "changed with --FIELD (or --finetune.FIELD / --train.FIELD). The last line printed "
        "is one JSON object with the results.",
    )
    p.add_argument("--config", required=True, help="preset name or path, e.g. lab/configs/finetune-genre.json")
    p.add_argument("--out", metavar="DIR", help="output folder (default: train.out_dir, else runs/<preset>)")
    for section, cls in (("finetune", FinetuneConfig), ("train", TrainConfig)):
        # the two configs share no field name (argparse would refuse a clash), so every field has a short --FIELD
        add_config_fields(p, section, cls, short={f.name for f in fields(cls)})
    return p


def cli(argv: list[str]) -> int:
    """`gptviz finetune --config PRESET [--FIELD VALUE ...]`: train, evaluate, save; the last line is JSON."""
    return run_command("gptviz finetune", argv, _finetune)


def _finetune(argv: list[str]) -> int:
    args = vars(build_parser().parse_args(argv))
    over = {section: given(args, section) for section in ("finetune", "train")}
    command = "gptviz finetune " + shlex.join(argv)
    # a bad preset, flag value, checkpoint or data set raises here: run_command prints one line, exit status 2
    config, train_config = load_finetune_preset(args["config"])
    config = FinetuneConfig.from_dict({**config.to_dict(), **over["finetune"]})
    train_fields = {**train_config.to_dict(), **over["train"]}
    train_fields["out_dir"] = args.get("out") or train_fields["out_dir"] or f"runs/{Path(args['config']).stem}"
    train_config = TrainConfig.from_dict(train_fields)
    if train_config.num_threads:
        torch.set_num_threads(train_config.num_threads)
    job = build_job(config, train_config, meta={"command": command})
    trainable, total = count_parameters(job.model)
    if isinstance(job, ClassifierJob):
        print(
            f"classify {config.data}: {len(job.train_set)} train / {len(job.test_set)} test examples, labels "
            f"{job.labels}, held-out groups: {', '.join(sorted({e.group for e in job.test_examples}))}",
            flush=True,
        )
        base = job.baselines()
        print(
            f"baselines on the same split: majority ({base['majority_label']}) {base['majority_baseline']:.3f}, "
            f"bag-of-words {base['bow_baseline']:.3f}",
            flush=True,
        )
    else:
        print(
            f"lm {job.corpus.name}: {len(job.trainer.train_data):,} train / {len(job.trainer.val_data):,} val "
            f"tokens (held out: {', '.join(job.corpus.val_docs)}); val loss before {job.loss_before['val']:.4f}",
            flush=True,
        )
    print(
        f"model {config.init}: mode {config.mode}, {trainable:,} of {total:,} parameters train; "
        f"{train_config.max_steps} steps of {train_config.batch_size}",
        flush=True,
    )

    def log(trainer, s) -> None:
        every = train_config.log_interval
        if s.val_loss is not None or s.step == 1 or (every and s.step % every == 0):
            val = f" val {s.val_loss:.4f}" if s.val_loss is not None else ""
            print(
                f"step {s.step:>5}/{train_config.max_steps}: loss {s.loss:.4f}{val} lr {s.lr:.2e} {s.elapsed:.0f} s",
                flush=True,
            )

    job.trainer.on_step = log
    t0 = time.perf_counter()
    try:
        job.trainer.run()
    except TrainingDiverged as e:
        print(f"gptviz finetune: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    summary = job.summary()
    path = job.save(train_config.out_dir)
    summary.update(
        checkpoint=str(path), train_seconds=round(seconds, 1), command=command, interrupted=job.trainer.interrupted
    )
    print(json.dumps(summary))
    return 130 if job.trainer.interrupted else 0
