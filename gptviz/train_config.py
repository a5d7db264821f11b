"""What a training run is told and what it reports: `TrainConfig` (checked when built), `StepStats` per optimizer
step, `Snapshot` of attention and head metrics during training.

Plain data: the loop that fills these is `gptviz.train`; plots and widgets read them (`Trainer.history`,
`Trainer.snapshots`), and checkpoints store `TrainConfig.to_dict()` (`gptviz.train_resume`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._config import DictConfig
from .errors import ConfigError
from .records import ForwardRecord

DTYPES = ("auto", "float32", "bfloat16", "float16")
TOKENIZERS = ("char", "gpt2", "bpe")


@dataclass
class TrainConfig(DictConfig):
    # data
    corpus: str = "shakespeare"  # "shakespeare" (38 plays, 4 held out), a UTF-8 text file, or a folder of .txt/.md
    tokenizer: str = "char"  # "char" | "gpt2" (GPT-2's BPE) | "bpe" (byte-level BPE trained on the train text)
    bpe_vocab_size: int = 2048  # ids of a trained "bpe" tokenizer
    # optimisation
    batch_size: int = 32  # sequences per micro-batch (per rank)
    block_size: int | None = None  # training context length; None = the model's block_size
    grad_accum_steps: int = 1  # micro-batches per optimizer step: tokens/step = batch * block * this * ranks
    max_steps: int = 2000  # optimizer steps; the cosine reaches min_lr here
    max_minutes: float | None = None  # wall-clock budget: stop there, cosine by elapsed time (not bit-reproducible)
    lr: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-4  # floor of the cosine decay (lr / 10, as nanoGPT)
    warmup_steps: int = 100  # linear warmup from ~0 to lr
    weight_decay: float = 0.1  # AdamW decay of 2-D weights; biases and LayerNorm are not decayed
    beta1: float = 0.9
    beta2: float = 0.99  # 0.99 for small models / few tokens per step; GPT-2 scale uses 0.95
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 = off
    # evaluation and telemetry
    eval_interval: int = 250  # steps between train/val loss estimates (and at the last step); 0 = never
    eval_batches: int = 20  # fixed batches per estimate
    snapshot_interval: int = 250  # steps between attention snapshots + head metrics (and step 0); 0 = off
    probe_text: str = "ROMEO:\nBut soft, what light through yonder window breaks?\n"  # the snapshots' prompt
    # system
    device: str = "auto"  # "auto" (cuda > mps > cpu) | "cpu" | "cuda" | "cuda:1" | "mps"
    dtype: str = "auto"  # autocast: "auto" (bf16 on GPUs that have it, else fp16 + GradScaler; fp32 on CPU)
    compile: bool = False  # torch.compile the model (a GPU speed-up; slow to start, little gain on CPU)
    num_threads: int = 0  # CPU threads for torch (the CLI sets them); 0 = torch's default
    seed: int = 1337  # model init, batches (seed + rank) and dropout; fixed eval batches use seed too
    # output
    out_dir: str | None = None  # checkpoint folder; None = keep nothing on disk
    checkpoint_interval: int = 500  # steps between checkpoints (plus one at max_steps); 0 = only at the end
    keep_optimizer_state: bool = True  # False: the final checkpoint holds weights only (a few MB, to commit)
    final_weights_dtype: str | None = None  # "float16" / "bfloat16": the final checkpoint's weights, half size
    log_interval: int = 50  # steps between the CLI's log lines

    def __post_init__(self) -> None:
        problems = self.check_field_types()  # numeric strings -> floats; ints, bools, strings strict (gptviz._config)
        if problems:
            raise ConfigError("invalid TrainConfig: " + "; ".join(problems))
        for name in ("batch_size", "grad_accum_steps", "max_steps", "eval_batches", "bpe_vocab_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in (
            "warmup_steps",
            "eval_interval",
            "snapshot_interval",
            "checkpoint_interval",
            "log_interval",
            "num_threads",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                problems.append(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.block_size is not None and (not isinstance(self.block_size, int) or self.block_size < 1):
            problems.append(f"block_size must be a positive integer or None, got {self.block_size!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            problems.append(f"max_minutes must be > 0 or None, got {self.max_minutes!r}")
        if not 0 <= self.min_lr <= self.lr:
            problems.append(f"need 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if self.tokenizer not in TOKENIZERS:
            problems.append(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.final_weights_dtype not in (None, "float32", "float16", "bfloat16"):
            problems.append(
                f"final_weights_dtype must be None, 'float32', 'float16' or 'bfloat16', "
                f"got {self.final_weights_dtype!r}"
            )
        if self.grad_clip < 0 or self.weight_decay < 0:
            problems.append(
                f"grad_clip and weight_decay must be >= 0, got grad_clip={self.grad_clip}, "
                f"weight_decay={self.weight_decay}"
            )
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)!r} (AdamW: 0.9 and 0.99)")
        if not self.device.strip():
            problems.append("device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got an empty string")
        if problems:
            raise ConfigError("invalid TrainConfig: " + "; ".join(problems))


@dataclass
class StepStats:
    step: int  # optimizer steps done, this one included
    loss: float  # mean training loss of this step's micro-batches (averaged over ranks)
    lr: float
    grad_norm: float  # global gradient norm before clipping
    tokens_per_s: float  # this step's tokens (all ranks) / its wall time
    elapsed: float  # seconds of training so far, resumed runs included
    train_eval_loss: float | None = None  # estimates on fixed batches, at eval steps only
    val_loss: float | None = None


@dataclass
class Snapshot:
    step: int
    record: ForwardRecord  # the probe text: attention (L, nh, T, T), top-k next tokens
    metrics: dict[str, torch.Tensor]  # (L, nh) each: previous_token, first_token, entropy on the probe text;
    # induction on a repeated random-token sequence (the standard induction-head probe)
