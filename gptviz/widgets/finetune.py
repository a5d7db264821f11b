"""FinetunePanel: fine-tune a GPT from a notebook (a classifier or more LM training) and see what it learned.

Choose the task (classify labelled texts, or continue next-token training on new text) and what trains
(head only, the top n layers, everything, or LoRA adapters); each choice starts over from a fresh copy of
the base model. Start trains in chunks on a background thread (Stop returns after the current step), as the
TrainingDashboard does; `run(steps)` trains synchronously for headless notebooks and tests. After each
chunk the "training" view shows the loss and, for a classifier, held-out accuracy next to the majority and
bag-of-words baselines and the confusion matrix; for the LM, which heads changed since the start. The
"your text" view shows what the model makes of the text box: class probabilities and the attention of the
pooled token, or (LM) the checkpoint diff of that text before and after.

The work belongs to `gptviz.finetune` (jobs, evaluation, explain, checkpoint_diff) and `gptviz.train` (the
loop), the figures to `gptviz.plots.finetune` (re-exported here, laid out for the panel's width); this panel
holds controls and one figure widget, and runs the chunks with `_base.ChunkedTraining`, as the
TrainingDashboard does. The dashboard itself is not reused: its Trainer and controls are fixed when it is
built, and here the Trainer is rebuilt per choice (the loop asks for the current job's trainer each run).
"""

from __future__ import annotations

import copy
import html
import threading
import warnings

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from .. import finetune as ft
from .. import plots
from ..plots.finetune import classifier_figure, lm_figure, prediction_figure  # the panel's figures (pure)
from ..train import TrainConfig, TrainingDiverged
from ._base import INPUT_ERRORS, Busy, ChunkedTraining, TrainingPanel, replace_figure, row, slider

MODES = {"head": "head only", "last_n": "top n layers", "full": "all weights", "lora": "LoRA adapters"}


class FinetunePanel(TrainingPanel):
    """Task and freezing choices, Start/Stop in chunks, live loss/accuracy/confusion, and a text to try."""

    title = "Fine-tuning"
    input_errors = INPUT_ERRORS + (TrainingDiverged,)

    def __init__(
        self,
        gpt,
        tokenizer,
        train=None,
        test=None,
        corpus=None,
        config: ft.FinetuneConfig | None = None,
        train_config: TrainConfig | None = None,
        text: str = "",
        chunk: int = 10,
        live_examples: int = 128,
    ):
        """`train`/`test`: labelled Examples for "classify"; `corpus`: a data.Corpus for "lm". What is not
        given comes from `config.data` when that task is chosen (Shakespeare genres / comedies by default)."""
        self.base, self.tokenizer = gpt, tokenizer  # never trained: each job starts from a copy
        self.config = config or ft.FinetuneConfig(max_per_play=100, max_windows=4)
        self.train_config = train_config or TrainConfig(
            batch_size=16,
            lr=5e-4,
            min_lr=5e-5,
            warmup_steps=10,
            weight_decay=0.01,
            eval_interval=20,
            eval_batches=2,
            snapshot_interval=0,
            max_steps=200,
        )
        self._data = {"classify": (train, test) if train is not None else None, "lm": corpus}
        self.live_examples, self.job = live_examples, None
        self._draw = threading.Lock()  # the training thread and a control's callback may redraw at once
        self.loop = ChunkedTraining(
            self,
            lambda: self.job.trainer,
            lambda: self.chunk.value,
            self._after_chunk,
            self._buttons,
            self._describe,
            name="gptviz-finetune",
        )
        self._in_cell = False  # `run` trains in the calling thread (see `run`)
        self.accuracy: list[tuple[int, float]] = []  # (step, accuracy on the live subset)
        self.full_accuracy: tuple[int, float] | None = None  # (step, accuracy on every test example)
        self.last_eval = None
        st, c = {"description_width": "initial"}, self.config
        self.task = W.ToggleButtons(
            options=[("classify", "classify"), ("language model", "lm")], value=c.task, style={"button_width": "auto"}
        )
        self.mode = W.Dropdown(
            options=[(v, k) for k, v in MODES.items()],
            value=c.mode,
            description="train",
            style=st,
            layout=W.Layout(width="200px"),
        )
        L = gpt.config.n_layer
        self.n_layers = slider("top n layers", min(c.n_layers, L), 1, L, width="220px")
        self.freeze_embeddings = W.Checkbox(
            value=c.freeze_embeddings, description="freeze embeddings", indent=False, layout=W.Layout(width="160px")
        )
        self.lora_rank = slider("LoRA rank", c.lora_rank, 1, 64, width="220px")
        self.pooling = W.Dropdown(
            options=["mean", "last"], value=c.pooling, description="pooling", style=st, layout=W.Layout(width="160px")
        )
        self.steps = W.BoundedIntText(
            value=self.train_config.max_steps,
            min=1,
            max=10**6,
            description="steps",
            style=st,
            layout=W.Layout(width="150px"),
        )
        self.chunk = W.BoundedIntText(
            value=chunk, min=1, max=10**5, description="chunk", style=st, layout=W.Layout(width="120px")
        )
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.eval_button = W.Button(description="Evaluate all", icon="check")
        self.view = W.ToggleButtons(
            options=[("training", "training"), ("your text", "text")], value="training", style={"button_width": "auto"}
        )
        self.text = W.Textarea(
            value=text,
            placeholder="type a text to classify (or to compare before/after)",
            continuous_update=False,
            rows=2,
            layout=W.Layout(width="95%"),
        )
        self.prediction = W.HTML()
        caption = (
            "Pick a task and what trains (each choice starts again from the base model), then Start. Type a "
            "text below to see what the fine-tuned model makes of it."
        )
        self._build_job()
        super().__init__(
            [
                row(self.task, self.mode, self.pooling),
                row(self.n_layers, self.freeze_embeddings, self.lora_rank),
                row(self.steps, self.chunk, self.start_button, self.stop_button, self.eval_button),
                self.text,
                self.prediction,
                self.view,
            ],
            self._figure(),
            caption,
        )
        for w in (self.task, self.mode, self.n_layers, self.freeze_embeddings, self.lora_rank, self.pooling):
            w.observe(self.guarded(self._on_choice), names="value")
        self.text.observe(self.guarded(self._on_text), names="value")
        self.view.observe(self.guarded(self._redraw), names="value")
        self.start_button.on_click(self.guarded(lambda _: self.start()))
        self.stop_button.on_click(self.guarded(lambda _: self.stop()))
        self.eval_button.on_click(self.guarded(lambda _: self.evaluate_all()))
        self._show_controls()
        self._describe("ready")

    # ---- jobs ----------------------------------------------------------------------------------------------
    def _choices(self) -> ft.FinetuneConfig:
        return ft.FinetuneConfig.from_dict(
            {
                **self.config.to_dict(),
                "task": self.task.value,
                "mode": self.mode.value,
                "n_layers": self.n_layers.value,
                "pooling": self.pooling.value,
                "freeze_embeddings": self.freeze_embeddings.value,
                "lora_rank": self.lora_rank.value,
            }
        )

    def _build_job(self) -> None:
        config = self._choices()
        gpt = copy.deepcopy(self.base)
        with warnings.catch_warnings(record=True) as caught:  # truncation etc.: shown in the status line
            warnings.simplefilter("always")
            if config.task == "classify":
                if self._data["classify"] is None:
                    self._data["classify"] = ft.labelled_split(config)
                train, test = self._data["classify"]
                self.job = ft.ClassifierJob(gpt, self.tokenizer, train, test, config, self.train_config)
                self.job.baselines()
            else:
                if self._data["lm"] is None:  # what config.data names (the comedies by default)
                    self._data["lm"] = ft.corpus_for(config)
                self.job = ft.LMJob(gpt, self.tokenizer, self._data["lm"], config, self.train_config)
        self._notes = [str(w.message) for w in caught]
        self.accuracy, self.last_eval, self.full_accuracy = [], None, None
        if isinstance(self.job, ft.ClassifierJob):
            self._live_eval()

    def _live_index(self) -> list[int]:
        n = len(self.job.test_set)
        return sorted(set(np.linspace(0, n - 1, min(n, self.live_examples)).round().astype(int).tolist()))

    def _live_eval(self) -> None:
        self.last_eval = self.job.evaluate(self._live_index())
        self.accuracy.append((self.job.step, self.last_eval.accuracy))

    # ---- public: training (running / start / stop / wait come from TrainingPanel) ---------------------------
    def run(self, steps: int) -> list:
        """Train `steps` steps in the calling thread (a notebook cell), updating the panel after each chunk.
        Stop is disabled meanwhile: the kernel cannot hear it until the cell ends (Kernel > Interrupt can)."""
        self._in_cell = True
        try:
            return super().run(steps)
        finally:
            self._in_cell = False

    def evaluate_all(self):
        """Accuracy and confusion matrix on every test example (a classifier), or the val loss (LM)."""
        if self.running:
            raise Busy("training is running; evaluate after Stop")
        if isinstance(self.job, ft.ClassifierJob):
            self.last_eval = self.job.evaluate()
            self.full_accuracy = (self.job.step, self.last_eval.accuracy)
            self._redraw()
            self._describe("evaluated")
            return self.last_eval
        loss = self.job.evaluate()
        self._describe(f"val loss {loss['val']:.4f} (before fine-tuning {self.job.loss_before['val']:.4f})")
        return loss

    def accuracy_text(self) -> str:
        """The latest held-out accuracy and what it counts, worded the same in the title and the status line:
        every test example once `evaluate_all` ran at this step, otherwise the live subset."""
        n = len(self.job.test_set)
        if self.full_accuracy is not None and self.full_accuracy[0] == self.job.step:
            return f"step {self.job.step}: accuracy {self.full_accuracy[1]:.3f} on all {n} test examples"
        if not self.accuracy:
            return "not evaluated yet"
        step, acc = self.accuracy[-1]
        live = len(self._live_index())
        if live == n:
            return f"step {step}: accuracy {acc:.3f} on all {n} test examples"
        return f"step {step}: accuracy {acc:.3f} on {live} of {n} test examples (Evaluate all: every one)"

    def _after_chunk(self) -> None:
        """Between chunks (the loop is `_base.ChunkedTraining`): a classifier's live accuracy, then the figure."""
        if isinstance(self.job, ft.ClassifierJob):
            self._live_eval()
        self._redraw()

    # ---- callbacks -------------------------------------------------------------------------------------------
    def _on_choice(self, change=None) -> None:
        if self.running:
            raise Busy("training is running; press Stop before changing what trains")
        if self.task.value == "lm" and self.mode.value == "head":
            self.mode.value = "last_n"  # a head-only LM would train nothing; this re-enters _on_choice
            return
        self._show_controls()
        self._build_job()
        self._redraw()
        self._describe("ready (a fresh copy of the base model)")

    def _on_text(self, change=None) -> None:
        if self.text.value.strip() and self.view.value != "text":
            self.view.value = "text"  # the view's observer redraws
        else:
            self._redraw()

    # ---- display ---------------------------------------------------------------------------------------------
    def _figure(self) -> go.Figure:
        job, text = self.job, self.text.value.strip()
        if self.view.value == "text" and text:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # cropping is part of what the figure shows
                if isinstance(job, ft.ClassifierJob):
                    explained = ft.explain(job.model, self.tokenizer, text)
                    self.prediction.value = " · ".join(
                        f"<b>{html.escape(l)}</b> {p:.3f}" for l, p in zip(explained["labels"], explained["probs"])
                    )
                    return prediction_figure(explained, width=self.width)
                diff = job.diff(text)
                self.prediction.value = "most changed heads (layer, head): " + ", ".join(
                    f"({l}, {h}) {c:.3f}" for l, h, c in diff.top_heads(3)
                )
                return plots.checkpoint_diff(diff.before, diff.after, width=self.width, change=diff.head_change)
        self.prediction.value = ""
        if isinstance(job, ft.ClassifierJob):
            return classifier_figure(
                job.trainer.history,
                self.accuracy,
                job.baselines(),
                self.last_eval,
                self.accuracy_text(),
                self.full_accuracy,
                width=self.width,
            )
        return lm_figure(job.trainer.history, job.loss_before["val"], job.diff().head_change, width=self.width)

    def relayout(self) -> None:
        """The browser measured the panel's width: lay the figure out for it (`_base.Panel.relayout`)."""
        self._redraw()

    def _redraw(self, change=None) -> None:
        if hasattr(self, "figure"):
            with self._draw:
                replace_figure(self.figure, self._figure())

    def _show_controls(self) -> None:
        mode, task = self.mode.value, self.task.value
        for w, on in (
            (self.n_layers, mode == "last_n"),
            (self.freeze_embeddings, mode == "full"),
            (self.lora_rank, mode == "lora"),
            (self.pooling, task == "classify"),
        ):
            w.layout.display = "" if on else "none"

    def _buttons(self, running: bool) -> None:
        # while a cell trains with `run`, the kernel hears no click until the cell ends: Stop would only pretend
        cell = running and self._in_cell
        self.start_button.disabled, self.stop_button.disabled = running, not running or cell
        self.stop_button.tooltip = "off while this cell trains (Kernel ▸ Interrupt stops it)" if cell else ""
        if running:
            self._describe("running")  # from the first step on, not "ready" until the first chunk ends
        for w in (self.task, self.mode, self.n_layers, self.freeze_embeddings, self.lora_rank, self.pooling):
            w.disabled = running

    def _describe(self, state: str) -> None:
        if state == "running" and self._in_cell:
            state = "training in this cell (Kernel ▸ Interrupt stops it)"
        job = self.job
        trainable, total = ft.count_parameters(job.model)
        parts = [state, f"step {job.step}", f"{trainable:,} of {total:,} parameters train"]
        if job.trainer.history:
            parts.append(f"loss {job.trainer.history[-1].loss:.3f}")
        if self.accuracy:
            parts.append(self.accuracy_text())
        self.set_status(" · ".join(parts + self._notes[:1]))
