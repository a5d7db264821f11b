"""The Trainer's checks and telemetry: loss estimates on fixed batches, attention snapshots with head metrics,
and the weights-health checks whose TrainingDiverged errors say where to resume and what to try.

`TrainerChecks` is a part of `gptviz.train.Trainer` (its base class), kept apart so the loop reads on its own; it
uses the Trainer's attributes (`fast_model`, `raw_model`, `train_data`, `val_data`, `tokenizer`, `config`, `step`,
`history`, `evals`, `snapshots`, `last_checkpoint`, ...). It never steps the optimizer or writes files: the loop
and the optimizer are `gptviz.train`'s, checkpoints `gptviz.train_resume`'s; head metrics come from `gptviz.heads`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import TrainingDiverged
from .heads import head_metrics, repeated_random_tokens
from .hooks import capture
from .model import evaluating
from .records import record_forward
from .train_config import Snapshot, StepStats


class TrainerChecks:
    """Evaluation, snapshots and NaN/inf checks of a Trainer (mixed into `gptviz.train.Trainer`)."""

    # ---- divergence: NaN/inf weights and what to say about them ---------------------------------------------
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
