"""Training from scratch: a loop the caller drives in chunks, so a notebook cell (or a Stop button) can pause it.

    trainer = build_trainer(*load_preset("tiny"))   # gptviz.presets: corpus -> tokenizer -> GPT -> Trainer
    trainer.train_steps(100)                        # runs 100 optimizer steps and returns their StepStats
    trainer.train_steps(100)                        # ... continues exactly where it stopped
    trainer.snapshots[-1].metrics["induction"]      # (L, nh) head metrics recorded during training

One step: `grad_accum_steps` micro-batches (AMP autocast where it helps), the mean loss checked for NaN/inf
(before the update; the weights themselves are checked at the end of each `train_steps` chunk, at evaluations
and before every checkpoint, never per step, so a diverged model is reported and never saved), gradients clipped,
AdamW with weight decay on 2-D weights only (matrices *and* embeddings, as nanoGPT and GPT-2 do; biases and
LayerNorm gains are not decayed), LR from linear warmup + cosine decay to `min_lr`.
Every `eval_interval` steps the train/val loss is estimated on fixed batches (the same ones each time, so the
points of a curve compare); every `snapshot_interval` steps a ForwardRecord of a probe text and head metrics
are kept for the dashboard; every `checkpoint_interval` steps a checkpoint is written (rank 0 only).
Launched by torchrun, the same code runs DistributedDataParallel: each rank draws its own batches.
With `max_minutes` the run stops on a wall-clock budget and the cosine follows the clock, so a slow or busy
machine still finishes with a decayed LR (such runs are not bit-reproducible; step-only runs are, and resume
exactly: the batch, dropout and optimizer states are all in the checkpoint).

What this module leaves to others: assembling a Trainer from a preset or a checkpoint (`gptviz.presets`),
batches (`gptviz.data`), text (`gptviz.tokenizers`), files (`gptviz.checkpoint`), the `gptviz train` command
and its log lines (`gptviz.commands.train`); plots and widgets only read `Trainer.history` / `.snapshots` and
the callbacks.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint
from ._config import DictConfig
from .data.batches import TokenDataset
from .errors import CheckpointError, ConfigError, InputError, TrainingDiverged
from .heads import head_metrics, repeated_random_tokens
from .hooks import capture
from .model import GPT, default_device, evaluating
from .records import ForwardRecord, record_forward

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


def lr_at(step: int, config: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine from lr to min_lr.

    The cosine follows the steps, or the spent share of `max_minutes` (`time_fraction`) when that is further.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    progress = max(progress, time_fraction)
    if progress >= 1.0:
        return config.min_lr
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def configure_optimizer(model: GPT, config: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW with two groups: 2-D weights (decayed) and everything else (biases, LayerNorm; not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]  # the tied lm_head/wte appears once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device_type == "cuda" else {}  # one kernel for all params on GPU
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), **extra)


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we called init_process_group, so close() destroys it


def _init_distributed(device: str) -> _Dist:
    """Join the process group torchrun prepared (env RANK/WORLD_SIZE/LOCAL_RANK); one process: nothing to do."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return _Dist(rank, world, local, owns)


def _check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """CheckpointError unless `state` (an optimizer state_dict) has the same parameters, of the same shapes.

    torch's own load_state_dict checks only the number of parameters per group: a model of another width loads
    without complaint and fails at the next step with a size mismatch deep in AdamW.
    """
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        raise CheckpointError(
            f"the checkpoint's optimizer state has {len(groups) if isinstance(groups, list) else 'no'} parameter "
            f"groups, this model's optimizer {len(optimizer.param_groups)}; the checkpoint belongs to another model"
        )
    ours = [p for g in optimizer.param_groups for p in g["params"]]
    theirs = [i for g in groups for i in g.get("params", [])]
    if len(ours) != len(theirs):
        raise CheckpointError(
            f"the checkpoint's optimizer state covers {len(theirs)} parameters, this model has {len(ours)}; the "
            "checkpoint was trained with another model (resume it with the model it was saved with)"
        )
    per_param = state.get("state", {})
    for p, pid in zip(ours, theirs):
        for key, value in (per_param.get(pid) or {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                raise CheckpointError(
                    f"the checkpoint's optimizer state holds {key} of shape {tuple(value.shape)} for a parameter of "
                    f"shape {tuple(p.shape)} here; the checkpoint was trained with a model of another size "
                    "(resume it with the model it was saved with, or start a new run from its weights)"
                )


class Trainer:
    """Holds the model, optimizer, step counter and batch RNG, so `train_steps` chunks continue seamlessly.

    Callbacks, each called as fn(trainer, item) on rank 0: `on_step` (StepStats), `on_eval` (the StepStats
    that was evaluated), `on_snapshot` (Snapshot). `meta` is stored in checkpoints' state (command, corpus...).
    The Trainer seeds torch's global RNG (dropout) with `config.seed + rank`.
    """

    def __init__(
        self,
        model: GPT,
        tokenizer,
        train_data,
        val_data,
        config: TrainConfig | None = None,
        *,
        on_step: Callable | None = None,
        on_eval: Callable | None = None,
        on_snapshot: Callable | None = None,
        progress: bool = False,
        meta: dict | None = None,
    ) -> None:
        self.config = config = config or TrainConfig()
        self.tokenizer, self.train_data, self.val_data = tokenizer, train_data, val_data
        self.on_step, self.on_eval, self.on_snapshot = on_step, on_eval, on_snapshot
        self.progress, self.meta = progress, dict(meta or {})
        self.block_size = config.block_size or model.config.block_size
        if self.block_size > model.config.block_size:
            raise ConfigError(
                f"train block_size={self.block_size} is longer than the model's context "
                f"({model.config.block_size}); lower train.block_size or raise model.block_size"
            )
        # token windows only (a classifier's data set counts examples; RepeatedSequences is endless)
        splits = (("train", train_data), ("validation", val_data))
        lengths = {split: len(d) for split, d in splits if isinstance(d, TokenDataset)}
        short = {split: n for split, n in lengths.items() if n < self.block_size + 1}
        if short:
            fit = max(1, min(lengths.values()) - 1)
            raise InputError(
                "the " + " and ".join(f"{split} text is {n} tokens" for split, n in short.items()) + " long, but one "
                f"training window needs block_size + 1 = {self.block_size + 1}; use a longer corpus, or a smaller "
                f"block_size (at most {fit}: --train.block_size {fit})"
            )
        self.dist = _init_distributed(config.device)
        self.device = self._resolve_device()
        self.amp_dtype = self._resolve_amp_dtype()
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~free speed on Ampere and later
            torch.backends.cudnn.allow_tf32 = True
        self.raw_model = model.to(self.device).train()
        self.optimizer = configure_optimizer(self.raw_model, config, self.device.type)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.fast_model = torch.compile(self.raw_model) if config.compile else self.raw_model
        self.model = self.fast_model
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.fast_model, device_ids=ids)
        torch.manual_seed(config.seed + self.dist.rank)
        self.batch_generator = torch.Generator().manual_seed(config.seed + self.dist.rank)
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self.time_fraction = 0.0  # share of max_minutes spent (averaged over ranks, so all ranks agree)
        self.history: list[StepStats] = []
        self.evals: list[dict] = []  # {step, train_loss, val_loss}: small, saved in checkpoints
        self.snapshots: list[Snapshot] = []
        self.best_val_loss: float | None = None
        self.last_checkpoint: Path | None = None
        self.interrupted = False
        self._stop = False
        self._probe_ids = self._make_probe()

    # ---- setup helpers ------------------------------------------------------------------------------
    def _resolve_device(self) -> torch.device:
        wanted = self.config.device
        if self.dist.world_size > 1 and torch.cuda.is_available() and wanted in ("auto", "cuda"):
            return torch.device("cuda", self.dist.local_rank)
        try:
            device = torch.device(default_device() if wanted == "auto" else wanted)
        except RuntimeError as e:
            raise ConfigError(
                f"device={wanted!r} is not a device torch knows ({e}); use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'"
            ) from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={wanted!r} but torch sees no GPU here; use device='auto' or 'cpu'")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ConfigError(
                f"device={wanted!r} but torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}); pick one of those or device='auto'"
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"device={wanted!r} but this machine has no Apple GPU (MPS); use 'auto' or 'cpu'")
        if device.type not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"device={wanted!r}: gptviz trains on 'cpu', 'cuda' or 'mps' (or 'auto')")
        return device

    def _resolve_amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain float32."""
        want, cuda = self.config.dtype, self.device.type == "cuda"
        if want == "auto":
            return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        if want == "float16" and not cuda:
            raise ConfigError(
                "dtype='float16' needs a CUDA GPU (it trains with a GradScaler there); "
                "use 'bfloat16' or 'float32' on this device"
            )
        return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[want]

    def _make_probe(self) -> list[int]:
        try:
            ids = list(self.tokenizer.encode(self.config.probe_text))
        except ValueError:  # e.g. a char vocabulary without some probe character
            ids = []
        if not ids:
            ids = [int(t) for t in self.val_data.tokens[:64]]  # the start of the validation text instead
        return ids[: min(64, self.raw_model.config.block_size)]

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0

    @property
    def done(self) -> bool:
        """max_steps reached, or the max_minutes budget spent."""
        return self.step >= self.config.max_steps or self.time_fraction >= 1.0

    # ---- the loop -----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask a running `train_steps` to return after the current step (e.g. from a widget's Stop button)."""
        self._stop = True

    def run(self) -> list[StepStats]:
        """Train until `config.max_steps` or the `max_minutes` budget (a no-op when already there)."""
        return self.train_steps(0 if self.done else self.config.max_steps - self.step)

    def train_steps(self, n: int) -> list[StepStats]:
        """Run up to `n` optimizer steps and return their stats.

        Fewer when `request_stop` is called, on Ctrl-C (Kernel > Interrupt: stops cleanly between steps and
        sets `self.interrupted`), or when the max_minutes budget runs out. Steps past max_steps are allowed and
        run at min_lr. The next call continues where this one stopped.
        """
        self._stop, self.interrupted = False, False
        out: list[StepStats] = []
        bar = None
        if self.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="training", unit="step")
        try:
            if self.step == 0 and not self.snapshots and self.config.snapshot_interval and self.is_main:
                self._snapshot()  # attention before any training, for the "what did it learn" comparison
            for _ in range(n):
                if self._stop:
                    break
                t0, was_done = time.perf_counter(), self.done
                stats = self._one_step()
                c, s = self.config, self.step
                final = self.done and not was_done  # the step that reached max_steps or the time budget
                if c.eval_interval and (s % c.eval_interval == 0 or final) and self.is_main:
                    self._evaluate_into(stats)
                if c.snapshot_interval and (s % c.snapshot_interval == 0 or final) and self.is_main:
                    self._snapshot()
                if c.out_dir and (final or c.checkpoint_interval and s % c.checkpoint_interval == 0):
                    dtype = getattr(torch, c.final_weights_dtype) if final and c.final_weights_dtype else None
                    self.save_checkpoint(include_optimizer=c.keep_optimizer_state or not final, weights_dtype=dtype)
                self.elapsed += time.perf_counter() - t0  # the step, its eval, snapshot and checkpoint
                stats.elapsed = self.elapsed
                self.history.append(stats)
                out.append(stats)
                if self.is_main and self.on_step is not None:
                    self.on_step(self, stats)
                if self.is_main and self.on_eval is not None and stats.val_loss is not None:
                    self.on_eval(self, stats)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats.loss:.4f}", refresh=False)
                if final and c.max_minutes and self.time_fraction >= 1.0:
                    break
        except KeyboardInterrupt:
            self.interrupted = True
            self.optimizer.zero_grad(set_to_none=True)  # drop a half-accumulated step
            if self.is_main:
                print(
                    f"training interrupted after step {self.step}; call train_steps again to continue", file=sys.stderr
                )
        finally:
            if bar is not None:
                bar.close()
        if out:
            # One check per chunk, not per step (that would be a device sync in the hot loop): the loss check of
            # each step runs before its update, so the last update of a chunk is seen only here or at a save.
            self._check_weights_finite(f"after step {self.step}")
        return out

    def _one_step(self) -> StepStats:
        c, t0 = self.config, time.perf_counter()
        lr = lr_at(self.step, c, self.time_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(c.grad_accum_steps):
            x, y = self.train_data.get_batch(c.batch_size, self.block_size, self.batch_generator, self.device)
            # Under DDP, gradients are all-reduced during backward; only the last micro-batch needs that.
            last = micro == c.grad_accum_steps - 1
            sync = self.model.no_sync() if self.dist.world_size > 1 and not last else nullcontext()
            with sync:
                with self._autocast():
                    logits = self.model(x)  # (B, T, V)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1)) / c.grad_accum_steps
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += loss.detach()
        budget = 60.0 * c.max_minutes if c.max_minutes else math.inf
        shared = torch.stack([total.float(), torch.tensor(self.elapsed / budget, device=self.device)])
        if self.dist.world_size > 1:  # every rank sees the same loss and clock, so all stop together
            torch.distributed.all_reduce(shared)
            shared /= self.dist.world_size
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = self.raw_model.parameters()
        norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip if c.grad_clip > 0 else float("inf"))
        loss_value, time_fraction, norm_value = torch.cat([shared, norm.float()[None]]).tolist()  # one sync
        self.time_fraction = time_fraction
        if not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(norm_value)):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(self._diverged_message(loss_value, norm_value, lr))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
            self.scaler.update()
        else:
            try:
                self.optimizer.step()
            except RuntimeError as e:  # e.g. "value cannot be converted to type float without overflow" (huge lr)
                raise TrainingDiverged(
                    f"training diverged at step {self.step + 1}: the optimizer could not apply the update ({e}); "
                    f"the weights may be half-updated, so nothing was saved from them. {self._where_to_resume()} "
                    f"{self._what_to_try(lr)}"
                ) from e
        self.step += 1
        tokens = c.batch_size * self.block_size * c.grad_accum_steps * self.dist.world_size
        self.tokens_seen += tokens
        dt = time.perf_counter() - t0
        return StepStats(
            step=self.step,
            loss=loss_value,
            lr=lr,
            grad_norm=norm_value,
            tokens_per_s=tokens / max(dt, 1e-9),
            elapsed=self.elapsed + dt,
        )

    def _diverged_message(self, loss: float, norm: float, lr: float) -> str:
        last = next((s for s in reversed(self.history)), None)
        before = f" (it was {last.loss:.4f} at step {last.step})" if last else ""
        return (
            f"training diverged at step {self.step + 1}: the loss is {loss} and the gradient norm {norm}"
            f"{before}. {self._where_to_resume()} {self._what_to_try(lr)}"
        )

    def _where_to_resume(self) -> str:
        # Every checkpoint this Trainer wrote was checked finite before it was written (checkpoint.save refuses
        # NaN/inf weights), so the last one is a good one to resume from.
        if self.last_checkpoint:
            return (
                f"The last good checkpoint is {self.last_checkpoint} (its weights were checked finite when saved); "
                f"resume from it with `gptviz train --resume {self.last_checkpoint}` and a lower --lr."
            )
        return "No checkpoint was saved yet."

    def _what_to_try(self, lr: float) -> str:
        c = self.config
        return (
            f"What to try: a lower lr (now {lr:.2e} at this step, peak {c.lr:.2e}), grad_clip=1.0 (now "
            f"{c.grad_clip}), more warmup_steps (now {c.warmup_steps}), or dtype='float32'."
        )

    def _check_weights_finite(self, when: str) -> None:
        """TrainingDiverged when a parameter holds NaN or inf (one device sync for all parameters)."""
        params = [p for p in self.raw_model.parameters() if p.is_floating_point()]
        if not params:
            return
        finite = torch.stack([torch.isfinite(p).all() for p in params]).all()
        if bool(finite):
            return
        names = [n for n, p in self.raw_model.named_parameters() if p.is_floating_point() and not p.isfinite().all()]
        lr = self.history[-1].lr if self.history else self.config.lr
        raise TrainingDiverged(
            f"training diverged {when}: the weights hold NaN or inf ({', '.join(names[:4])}"
            f"{' ...' if len(names) > 4 else ''}) although the step's loss was finite: an update was too large. "
            f"Nothing was saved from them. {self._where_to_resume()} {self._what_to_try(lr)}"
        )

    # ---- evaluation and telemetry -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss on `eval_batches` fixed batches of the train and val data: {"train": ..., "val": ...}."""
        model = self.fast_model  # not the DDP wrapper: evaluation needs no gradient sync
        out = {}
        with evaluating(model):
            for i, (split, data) in enumerate((("train", self.train_data), ("val", self.val_data))):
                g = torch.Generator().manual_seed(self.config.seed + 7919 * (i + 1))  # same batches every time
                total = 0.0
                for _ in range(self.config.eval_batches):
                    x, y = data.get_batch(self.config.batch_size, self.block_size, g, self.device)
                    with self._autocast():
                        logits = model(x)  # (B, T, V)
                    total += F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1)).item()
                out[split] = total / self.config.eval_batches
        return out

    def _evaluate_into(self, stats: StepStats) -> None:
        losses = self.evaluate()
        if not all(math.isfinite(v) for v in losses.values()):
            raise TrainingDiverged(
                f"training diverged by step {self.step}: the evaluation loss is {losses['train']} (train) / "
                f"{losses['val']} (val). {self._where_to_resume()} {self._what_to_try(stats.lr)}"
            )
        stats.train_eval_loss, stats.val_loss = losses["train"], losses["val"]
        if self.best_val_loss is None or losses["val"] < self.best_val_loss:
            self.best_val_loss = losses["val"]
        self.evals.append({"step": self.step, "train_loss": losses["train"], "val_loss": losses["val"]})

    def _snapshot(self) -> Snapshot:
        """Attention on the probe text + head metrics, recorded in float32 with the plain model."""
        model = self.raw_model
        record = record_forward(model, self.tokenizer, self._probe_ids, k=5)
        record.text = self.tokenizer.decode(self._probe_ids)
        metrics = head_metrics(record.attention, record.ids)
        n = max(2, min(32, (model.config.block_size - 1) // 2))
        rr = repeated_random_tokens(model.config.vocab_size, n, seed=self.config.seed)  # (2n,)
        with evaluating(model), torch.no_grad(), capture(model, "blocks.*.attn.hook_pattern", to_cpu=True) as cap:
            model(rr[None].to(self.device))
        pattern = cap.stack("blocks.*.attn.hook_pattern")[:, 0]  # (L, nh, 2n, 2n)
        metrics["induction"] = head_metrics(pattern.float(), rr)["induction"]  # (L, nh)
        snap = Snapshot(step=self.step, record=record, metrics=metrics)
        self.snapshots.append(snap)
        if self.on_snapshot is not None:
            self.on_snapshot(self, snap)
        return snap

    # ---- checkpoints --------------------------------------------------------------------------------
    def training_state(self, include_optimizer: bool = True) -> checkpoint.TrainingState:
        """Everything `load_state` needs. Under DDP this is collective (RNG states are gathered from all ranks)."""
        rng = {"batch": self.batch_generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        gathered = {f"{k}.{r}": t for k, v in rng.items() for r, t in enumerate(self._gather(v))}
        last = self.evals[-1] if self.evals else {}
        state = {
            **self.meta,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "wall_time": round(self.elapsed, 2),
            "val_loss": last.get("val_loss"),
            "train_loss": last.get("train_loss"),
            "best_val_loss": self.best_val_loss,
            "seed": self.config.seed,
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "amp_dtype": str(self.amp_dtype or torch.float32).replace("torch.", ""),
            "torch_version": torch.__version__,
            "evals": self.evals,
        }
        return checkpoint.TrainingState(
            train_config=self.config.to_dict(),
            state=state,
            rng=gathered,
            optimizer=self.optimizer.state_dict() if include_optimizer else None,
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
        )

    def _gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.dist.world_size == 1:
            return [t]
        import torch.distributed as dist

        on = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        parts = [torch.empty_like(t, device=on) for _ in range(self.dist.world_size)]
        dist.all_gather(parts, t.to(on))
        return [p.cpu() for p in parts]

    def save_checkpoint(
        self,
        path: str | os.PathLike | None = None,
        include_optimizer: bool = True,
        weights_dtype: torch.dtype | None = None,
    ) -> Path:
        """Write a checkpoint (default: config.out_dir). Under DDP call it on every rank; rank 0 writes."""
        target = Path(path or self.config.out_dir or "")
        if not str(target) or str(target) == ".":
            raise ConfigError("no checkpoint folder: pass a path or set TrainConfig.out_dir")
        self._check_weights_finite(f"at step {self.step}, before saving {target}")  # checkpoint.save checks too
        training = self.training_state(include_optimizer)
        if self.is_main:
            checkpoint.save(
                target,
                self.raw_model,
                self.tokenizer,
                training,
                include_optimizer=include_optimizer,
                weights_dtype=weights_dtype,
            )
            self.last_checkpoint = target
        return target

    def load_state(self, training: checkpoint.TrainingState) -> None:
        """Continue from a checkpoint's TrainingState: optimizer, step, RNG states, eval history."""
        if training.optimizer is None:
            raise CheckpointError(
                "this checkpoint holds weights only (saved without optimizer state), so training "
                "cannot resume exactly; start a new run from its weights (fine-tuning) instead"
            )
        _check_optimizer_state(self.optimizer, training.optimizer)
        try:
            self.optimizer.load_state_dict(training.optimizer)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(
                f"the checkpoint's optimizer state does not fit this model ({e}); resume with the model the "
                "checkpoint was trained with (gptviz train --resume DIR builds it for you), or start a new run "
                "from its weights"
            ) from e
        if self.scaler is not None and training.scaler:
            self.scaler.load_state_dict(training.scaler)
        s = training.state
        self.step, self.tokens_seen = int(s.get("step", 0)), int(s.get("tokens_seen", 0))
        self.elapsed, self.best_val_loss = float(s.get("wall_time", 0.0)), s.get("best_val_loss")
        budget = 60.0 * self.config.max_minutes if self.config.max_minutes else math.inf
        self.time_fraction = self.elapsed / budget
        self.evals = list(s.get("evals", []))
        r = self.dist.rank
        if f"batch.{r}" in training.rng and s.get("world_size", 1) == self.dist.world_size:
            self.batch_generator.set_state(training.rng[f"batch.{r}"])
            torch.set_rng_state(training.rng[f"torch.{r}"])
            if self.device.type == "cuda" and f"cuda.{r}" in training.rng:
                torch.cuda.set_rng_state(training.rng[f"cuda.{r}"], self.device)
        else:
            warnings.warn(
                f"the checkpoint was saved with {s.get('world_size', 1)} processes, this run has "
                f"{self.dist.world_size}; batches are reseeded, so the run is not an exact continuation",
                stacklevel=2,
            )
            self.batch_generator.manual_seed(self.config.seed + 1_000_003 * self.step + r)

    def close(self) -> None:
        """Leave the process group if this Trainer joined it (torchrun runs)."""
        if self.dist.owns_group:
            torch.distributed.destroy_process_group()
            self.dist.owns_group = False
