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

This module is the loop: the Trainer's setup (device, AMP, DDP), the optimizer (`configure_optimizer`, `lr_at`)
and the step (`Trainer._one_step`). What it leaves to others: the config and the records it fills
(`gptviz.train_config`: TrainConfig, StepStats, Snapshot, all importable from here too), evaluation, snapshots and
the NaN/inf checks (`gptviz.train_checks`), what a checkpoint holds and how a run resumes from it
(`gptviz.train_resume`), assembling a Trainer from a preset or a checkpoint (`gptviz.presets`), batches
(`gptviz.data`), text (`gptviz.tokenizers`), files (`gptviz.checkpoint`), the `gptviz train` command and its log
lines (`gptviz.commands.train`); plots and widgets only read `Trainer.history` / `.snapshots` and the callbacks.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data.batches import TokenDataset
from .errors import CheckpointError as CheckpointError  # re-exported: `from gptviz.train import ...` keeps working
from .errors import ConfigError, InputError, TrainingDiverged
from .model import GPT, default_device
from .train_checks import TrainerChecks
from .train_config import DTYPES as DTYPES
from .train_config import TOKENIZERS as TOKENIZERS
from .train_config import Snapshot, StepStats, TrainConfig
from .train_resume import TrainerCheckpoints
from .train_resume import check_optimizer_state as check_optimizer_state

FLOAT32_MAX = torch.finfo(torch.float32).max  # optimizers apply lr in float32: a larger one is inf there


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
    # One fused kernel per parameter instead of ~10 tensor ops each (on the project's 2-core CPU: 0.9 ms against 2.9 ms
    # per step at 4L/4H/128, ~3% of a training step); transformers' Trainer uses it by default since torch 2.8.
    extra = {"fused": True} if device_type in ("cpu", "cuda") else {}
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


class Trainer(TrainerChecks, TrainerCheckpoints):
    """Holds the model, optimizer, step counter and batch RNG, so `train_steps` chunks continue seamlessly.

    Callbacks, each called as fn(trainer, item) on rank 0: `on_step` (StepStats), `on_eval` (the StepStats
    that was evaluated), `on_snapshot` (Snapshot). `meta` is stored in checkpoints' state (command, corpus...).
    The Trainer seeds torch's global RNG (dropout) with `config.seed + rank`.

    Defined here: setup, the loop and the step. Inherited: `evaluate`, snapshots and the NaN/inf checks
    (`TrainerChecks`, gptviz.train_checks); `training_state`, `save_checkpoint`, `load_state` (`TrainerCheckpoints`,
    gptviz.train_resume).
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
        # what Ctrl-C / Kernel > Interrupt tells the user to do next (a dashboard says "press Resume")
        self.interrupt_hint = "call train_steps again to continue"
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
                print(f"training interrupted after step {self.step}; {self.interrupt_hint}", file=sys.stderr)
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
        if any(not abs(g["lr"]) <= FLOAT32_MAX for g in self.optimizer.param_groups):
            # the fused optimizer casts lr to float32 without a word: every weight would become inf or nan
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1}: the learning rate {lr:.3g} is beyond float32's range, "
                "so the update would turn every weight into inf or nan; it was not applied and nothing was saved. "
                f"{self._where_to_resume()} {self._what_to_try(lr)}"
            )
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

    def close(self) -> None:
        """Leave the process group if this Trainer joined it (torchrun runs)."""
        if self.dist.owns_group:
            torch.distributed.destroy_process_group()
            self.dist.owns_group = False
