"""Checkpoint glue of the Trainer: what a training checkpoint holds beyond the weights (optimizer, step, RNG
states, eval history), writing it, and restoring it so a resumed run continues exactly.

`TrainerCheckpoints` is a part of `gptviz.train.Trainer` (its base class); it uses the Trainer's attributes
(`optimizer`, `scaler`, `batch_generator`, `dist`, `device`, `config`, `step`, `evals`, ...). The folder format
and atomic writes are `gptviz.checkpoint`'s; building a Trainer from a checkpoint is `gptviz.presets`'; the loop
that calls `save_checkpoint` every `checkpoint_interval` steps is `gptviz.train`'s.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch

from . import checkpoint
from .errors import CheckpointError, ConfigError


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
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


class TrainerCheckpoints:
    """training_state / save_checkpoint / load_state of a Trainer (mixed into `gptviz.train.Trainer`)."""

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
        check_optimizer_state(self.optimizer, training.optimizer)
        match_state_layout(self.optimizer, training.optimizer)
        try:
            self.optimizer.load_state_dict(training.optimizer)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(
                f"the checkpoint's optimizer state does not fit this model ({e}); resume with the model the "
                "checkpoint was trained with (gptviz train --resume DIR builds it for you), or start a new run "
                "from its weights"
            ) from e
        match_state_layout(self.optimizer)  # nothing left to do, unless torch's load changed a layout
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


def match_state_layout(optimizer: torch.optim.Optimizer, state: dict | None = None) -> None:
    """Give each moment tensor its parameter's strides: in `state` (a state_dict about to be loaded, entry by entry,
    so each row-major copy is freed at once), or in the optimizer's own state when `state` is None.

    A checkpoint holds row-major tensors, while gptviz's linear weights store their transpose
    (model.store_weights_transposed). The fused AdamW kernels walk parameter, gradient and moments as flat memory,
    so mismatched strides would pair each weight with another weight's moments, silently (seen on torch 2.13).
    """
    if state is None:
        pairs = [(p, optimizer.state[p]) for p in optimizer.state]
    else:
        ours = [p for g in optimizer.param_groups for p in g["params"]]
        theirs = [i for g in state["param_groups"] for i in g["params"]]
        per_param = state.get("state", {})
        pairs = [(p, per_param[i]) for p, i in zip(ours, theirs) if isinstance(per_param.get(i), dict)]
    for param, entry in pairs:
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                entry[key] = torch.empty_like(param, dtype=value.dtype, device=value.device).copy_(value)
