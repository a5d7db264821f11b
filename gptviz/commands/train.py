"""`gptviz train`: train a GPT from a preset, or resume a run, printing a header and log lines to the terminal.

    gptviz train --config shakespeare-char [--model.n_layer 4] [--train.max_steps 500] [--out DIR]
    gptviz train --resume runs/shakespeare-char [--max_steps 8000]

Every field of the preset can be changed with --model.FIELD / --train.FIELD, or --FIELD when the name is in
one section only. Exit status: 0 done, 1 the loss diverged, 2 bad input (one line on stderr; --debug shows the
traceback), 130 stopped by Ctrl-C (after saving a checkpoint to resume from). The run itself is
`gptviz.presets` + `gptviz.train.Trainer`; this module only turns flags into configs and progress into lines.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path

import torch

from ..config import GPTConfig
from ..errors import ConfigError
from ..presets import build_trainer, load_preset, resume_trainer
from ..train import StepStats, TrainConfig, Trainer, TrainingDiverged
from ._args import Parser, add_config_fields, given, run_command


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="gptviz train",
        description="Train a GPT from a preset. Every field of "
        "the preset can be changed with --model.FIELD / --train.FIELD (or --FIELD when "
        "the name is unambiguous).",
    )
    p.add_argument("--config", help="preset name or path, e.g. lab/configs/shakespeare-char.json")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in checkpoint folder DIR")
    p.add_argument("--out", metavar="DIR", help="checkpoint folder (default: runs/<preset>, or DIR of --resume)")
    model_names, train_names = {f.name for f in fields(GPTConfig)}, {f.name for f in fields(TrainConfig)}
    # --FIELD alone only where it cannot mean both sections (block_size, dropout...), and never --out (above)
    add_config_fields(p, "model", GPTConfig, short=model_names - train_names - {"out"})
    add_config_fields(p, "train", TrainConfig, short=train_names - model_names - {"out"})
    return p


def cli(argv: list[str]) -> int:
    """`gptviz train --config PRESET [--model.FIELD X] [--train.FIELD X] [--resume DIR] [--out DIR]`."""
    return run_command("gptviz train", argv, _train)


def _train(argv: list[str]) -> int:
    args = vars(build_parser().parse_args(argv))
    command = "gptviz train " + shlex.join(argv)
    trainer = _make_trainer(args, command)  # a bad preset, flag value or corpus raises: run_command says it, exit 2
    trainer.meta["command"] = command
    if trainer.config.num_threads:
        torch.set_num_threads(trainer.config.num_threads)
    if trainer.is_main:
        print_header(trainer)
        if not trainer.progress:
            trainer.on_step = log_line
    try:
        trainer.run()
        if trainer.interrupted:
            path = trainer.save_checkpoint()
            if trainer.is_main:
                print(f"stopped at step {trainer.step}; saved {path}. Continue with: gptviz train --resume {path}")
            return 130
    except TrainingDiverged as e:
        print(f"gptviz train: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    if trainer.is_main:
        val = trainer.evals[-1]["val_loss"] if trainer.evals else float("nan")
        print(
            f"done: step {trainer.step}, val loss {val:.4f}, {trainer.elapsed / 60:.1f} min; "
            f"checkpoint: {trainer.last_checkpoint}"
        )
    return 0


def _make_trainer(args: dict, command: str) -> Trainer:
    """A fresh Trainer from --config and the flags, or the run saved at --resume continued."""
    model_over, train_over = given(args, "model"), given(args, "train")
    if args.get("resume"):
        if model_over:
            raise ConfigError(
                f"the model cannot change when resuming (got {sorted(model_over)}); "
                "start a new run with --config instead"
            )
        train_over["out_dir"] = args.get("out") or train_over.get("out_dir") or args["resume"]
        trainer = resume_trainer(args["resume"], train_over, progress=sys.stdout.isatty())
        trainer.meta["commands"] = [*trainer.meta.get("commands", []), command]
        return trainer
    if not args.get("config"):
        raise ConfigError("give a preset with --config (e.g. --config shakespeare-char) or --resume DIR")
    model_fields, config = load_preset(args["config"])
    train_fields = {**config.to_dict(), **train_over}
    if args.get("out"):
        train_fields["out_dir"] = args["out"]
    train_fields["out_dir"] = train_fields["out_dir"] or f"runs/{Path(args['config']).stem}"
    return build_trainer(
        {**model_fields, **model_over},
        TrainConfig.from_dict(train_fields),
        progress=sys.stdout.isatty(),
        meta={"commands": [command]},
    )


def print_header(trainer: Trainer) -> None:
    """What is about to run: the model's size, the data, the step budget and the machine."""
    c, m, held = trainer.config, trainer.raw_model, trainer.meta.get("held_out")
    budget = f" or {c.max_minutes:g} min" if c.max_minutes else ""
    print(
        f"model: {m.num_parameters() / 1e6:.2f}M parameters, {m.config.n_layer} layers, {m.config.n_head} heads, "
        f"n_embd {m.config.n_embd}, block {m.config.block_size}, vocab {m.config.vocab_size}\n"
        f"data: {c.corpus} ({c.tokenizer}), {len(trainer.train_data):,} train tokens, "
        f"{len(trainer.val_data):,} val tokens"
        + (f", held out: {', '.join(held)}" if held else "")
        + f"\nrun: step {trainer.step} to {c.max_steps}{budget}, {c.batch_size}x{trainer.block_size} tokens x "
        f"{c.grad_accum_steps} accum x {trainer.dist.world_size} ranks, device {trainer.device}, "
        f"torch threads {torch.get_num_threads()}, out {c.out_dir}",
        flush=True,
    )


def log_line(trainer: Trainer, s: StepStats) -> None:
    """The Trainer's on_step callback when stdout is not a terminal (no progress bar): evals, every log_interval."""
    c = trainer.config
    if s.val_loss is not None:
        print(
            f"step {s.step:>6}/{c.max_steps}: eval train {s.train_eval_loss:.4f} val {s.val_loss:.4f} "
            f"(best {trainer.best_val_loss:.4f})",
            flush=True,
        )
    if c.log_interval and (s.step % c.log_interval == 0 or s.step == 1):
        print(
            f"step {s.step:>6}/{c.max_steps}: loss {s.loss:.4f} lr {s.lr:.2e} |g| {s.grad_norm:.2f} "
            f"{s.tokens_per_s:,.0f} tok/s {s.elapsed / 60:.1f} min",
            flush=True,
        )
