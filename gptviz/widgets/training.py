"""TrainingDashboard: Start / Stop / Resume a `train.Trainer` from a notebook and watch it learn.

Training runs in chunks (`trainer.train_steps(chunk)`) on a background thread, so the kernel stays free for
the buttons: Stop asks the trainer to return after its current step (`trainer.request_stop`) and the loop
not to start another chunk; one run at a time (the loop is `_base.ChunkedTraining`, as in FinetunePanel).
After every chunk the figure shows the train/val loss and learning rate so far (left) and the probe prompt's
attention at the snapshot picked on the slider (right: scrub it to watch heads form over training); every few
chunks a sampled text refreshes. Save writes a checkpoint between chunks, never mid-step.

Three ways to train, and what the buttons can do in each (the status line always says which applies):
* the buttons (`start`): a background thread; Stop, Resume, Save and the sliders work at once;
* `await dashboard.train(steps)` in a cell: the same background thread, and the cell waits for it without
  holding the kernel (ipykernel >= 7 hands widget messages to the kernel while a cell awaits), so Stop works
  during Run All too; Kernel > Interrupt stops the run and Resume finishes it;
* `run(steps)`: trains in the calling thread (headless notebooks, scripts, tests). While a *cell* runs it the
  kernel cannot hear clicks (they wait until the cell ends), so the buttons are disabled and say why.
Tokens/s in the status line is measured over wall time: tokens trained in this run / seconds since it began
(evaluations, snapshots and redraws included), not the speed of the last step.

The loop, evaluation and snapshots belong to `gptviz.train`; this panel only drives and shows them.
"""

from __future__ import annotations

import asyncio
import html
import threading
import time

import ipywidgets as W
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import plots
from ..export import RawHTML
from ..sampling import generate
from ..train import TrainingDiverged
from ._base import (
    CSS_STATUS,
    FIGURE_WIDTH,
    INPUT_ERRORS,
    ChunkedTraining,
    TrainingPanel,
    replace_figure,
    row,
    slider,
)

# The figure in pixels (the widget cannot measure its container, see `_base.FIGURE_WIDTH`): the loss curves take
# what the snapshot's square heatmap and its colour bar leave, with room between them for the learning-rate
# labels and the heatmap's query labels; the legend sits under the loss curves' axis title.
MARGIN = dict(l=70, r=16, b=112)
ATTENTION_PX = 300  # the snapshot heatmap's side: the probe (at most 64 tokens) keeps readable labels
GAP_PX = 150  # between the loss curves and the heatmap
CAPTION_PX = 44  # above the heatmap: its two-line caption
CSS_NOTE = CSS_STATUS + ";background:#fff7e0;border-left:3px solid #e0a800;padding:2px 8px"
MIN_LOSS_PX = 150  # the loss curves' narrowest plot area
# the narrowest figure with the heatmap beside the loss curves (`dashboard_figure`); narrower, it goes under them
MIN_WIDTH = MARGIN["l"] + MARGIN["r"] + ATTENTION_PX + plots.COLOURBAR_PX + GAP_PX + MIN_LOSS_PX
# stacked (narrow): the loss curves' height; under them their axis title, the legend and the heatmap's caption;
# room left of the heatmap for its query labels and right of the curves for the learning-rate labels
STACKED_LOSS_PX, STACKED_GAP_PX, STACKED_INDENT_PX, LR_LABELS_PX = 240, 150, 56, 56
# Why the buttons are off while a cell trains with `run(steps)`: the kernel hears clicks only when the cell ends.
CELL_NOTE = (
    "This cell is training, so the kernel cannot hear the buttons until it ends (clicks would wait, then act "
    "too late). To stop now: Kernel ▸ Interrupt, then Resume finishes the run. "
    "<code>await dashboard.train(steps)</code> trains with the buttons live."
)


def dashboard_figure(
    stats, snapshot, layer: int, head: int, vocab_size: int | None = None, width: int = FIGURE_WIDTH
) -> go.Figure:
    """Loss curves (left) and one snapshot's attention on the probe prompt (right), `width` px wide; narrower
    than MIN_WIDTH, the heatmap goes under the curves (smaller, if the width asks for it)."""
    stats = list(stats)
    pw = width - MARGIN["l"] - MARGIN["r"]
    stacked = width < MIN_WIDTH
    if stacked:  # in px from the plot area's top: the curves, their axis title and legend, the heatmap
        hm = min(ATTENTION_PX, pw - STACKED_INDENT_PX - plots.COLOURBAR_PX)
        if hm < 100:
            raise ValueError(f"the dashboard's figure needs a width of at least {width - hm + 100} px, got {width}")
        ph = STACKED_LOSS_PX + STACKED_GAP_PX + hm
        loss_x, loss_y = (0, (pw - LR_LABELS_PX) / pw), (1 - STACKED_LOSS_PX / ph, 1)
        hm_x, hm_y = STACKED_INDENT_PX / pw, (0, hm / ph)
        hm_right = (STACKED_INDENT_PX + hm) / pw
        legend_y = 1 - (STACKED_LOSS_PX + 50) / ph
    else:
        hm = ph = ATTENTION_PX
        loss_w = pw - hm - plots.COLOURBAR_PX - GAP_PX
        loss_x, loss_y = (0, loss_w / pw), (0, 1)
        hm_x, hm_y = (loss_w + GAP_PX) / pw, (0, 1)  # the heatmap's left edge, as a fraction of the plot area
        hm_right = (pw - plots.COLOURBAR_PX) / pw
        legend_y = -70 / hm
    fig = make_subplots(1, 2, specs=[[{"secondary_y": True}, {}]])
    plots.add_loss_curves(fig, stats, vocab_size, 1, 1)
    fig.update_xaxes(domain=list(loss_x), row=1, col=1)
    fig.update_yaxes(domain=list(loss_y), row=1, col=1)
    fig.update_xaxes(domain=[hm_x, hm_right], row=1, col=2)
    fig.update_yaxes(domain=list(hm_y), row=1, col=2)
    if snapshot is not None:
        r = snapshot.record
        start = plots.window_start(r.T, 64)  # thumbnails of the probe stay readable beside the curves
        plots.add_attention(fig, r, layer, head, start=start, row=1, col=2, max_ticks=24)
        plots.colourbar_beside(fig, hm_right + 10 / pw, hm_y)
        caption = (
            f"attention at step {snapshot.step}: layer {layer}, head {head}<br><sup>"
            f"{plots.metric_text(snapshot.metrics, layer, head, ' · ')}</sup>"
        )
        # right-aligned over the heatmap and its colour bar: the scores line is wider than the heatmap
        fig.add_annotation(
            text=caption,
            xref="paper",
            yref="paper",
            x=1,
            xanchor="right",
            y=hm_y[1],
            yanchor="bottom",
            yshift=6,
            showarrow=False,
            font_size=13,
            align="right",
        )
    else:
        fig.update_xaxes(visible=False, row=1, col=2)
        fig.update_yaxes(visible=False, row=1, col=2)
        fig.add_annotation(
            text="attention snapshots appear here<br>(TrainConfig.snapshot_interval)",
            xref="paper",
            yref="paper",
            x=(hm_x + hm_right) / 2,
            y=sum(hm_y) / 2,
            xanchor="center",
            showarrow=False,
            font_size=13,
        )  # paper: an empty subplot has no domain
    title = plots.loss_title(stats, max_px=width - 24)
    top = plots.title_px(title) + (12 if stacked else CAPTION_PX)  # stacked: the caption is under the curves
    fig.update_layout(
        template=plots.TEMPLATE,
        width=width,
        height=top + ph + MARGIN["b"],
        margin=dict(MARGIN, t=top),
        title=plots.title_on_top(title),
        legend=dict(orientation="h", x=0, y=legend_y, yanchor="top"),
    )
    return fig


class TrainingDashboard(TrainingPanel):
    """Buttons that drive a Trainer in chunks, live curves, a text sample, attention over training time."""

    title = "Training dashboard"
    input_errors = INPUT_ERRORS + (TrainingDiverged,)  # its message says what to do

    def __init__(
        self,
        trainer,
        chunk: int = 10,
        sample_every: int = 5,
        sample_prompt: str | None = None,
        sample_tokens: int = 120,
        checkpoint_path: str | None = None,
    ):
        self.trainer, self.sample_every, self.sample_tokens = trainer, sample_every, sample_tokens
        trainer.interrupt_hint = "press Resume on the dashboard to continue"
        self._draw = threading.Lock()  # the training thread and a slider callback may redraw at once
        self._save_to: str | None = None  # a save requested while running happens between chunks
        self._chunks = 0
        self.loop = ChunkedTraining(
            self,
            lambda: self.trainer,
            lambda: self.chunk.value,
            self._after_chunk,
            self._buttons,
            self._describe,
            name="gptviz-training",
        )
        self._quiet = False
        self._in_cell = False  # `run` trains in the calling thread: a cell holds the kernel, clicks wait
        self._stop_pressed = False
        self._t0, self._tokens0, self._rate = 0.0, 0, None  # this run's start (wall clock) and its tokens/s
        self.sample_prompt = sample_prompt or self._default_prompt()
        c, mc = trainer.config, trainer.raw_model.config
        st = {"description_width": "initial"}
        self.steps = W.BoundedIntText(
            value=max(1, c.max_steps - trainer.step),
            min=1,
            max=10**7,
            description="steps to run",
            style=st,
            layout=W.Layout(width="190px"),
        )
        self.chunk = W.BoundedIntText(
            value=chunk, min=1, max=10**5, description="chunk", style=st, layout=W.Layout(width="130px")
        )
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.resume_button = W.Button(description="Resume", icon="forward", disabled=True)
        self.path = W.Text(
            value=checkpoint_path or c.out_dir or "",
            placeholder="checkpoint folder",
            description="save to",
            style=st,
            layout=W.Layout(width="320px"),
        )
        self.save_button = W.Button(description="Save checkpoint", icon="save")
        self.snapshot = slider("snapshot", 0, 0, max(0, len(trainer.snapshots) - 1), width="420px")
        self.snapshot.layout.max_width = "100%"  # a narrow window: shorter, not past the panel's edge
        self.layer = slider("layer", 0, 0, mc.n_layer - 1, width="220px")
        self.head = slider("head", 0, 0, mc.n_head - 1, width="220px")
        self.sample_html = W.HTML()
        self.note = W.HTML()  # why the buttons are off, while a cell trains with `run`
        caption = (
            "Start trains in chunks on a background thread; Stop returns after the current step; Resume "
            "finishes the stopped run. Scrub the snapshot slider to see attention change during training."
        )
        super().__init__(
            [
                row(self.steps, self.chunk, self.start_button, self.stop_button, self.resume_button),
                self.note,
                row(self.path, self.save_button),
                row(self.snapshot, self.layer, self.head),
            ],
            self._figure(),
            caption,
            [self.sample_html],
        )
        self.start_button.on_click(self.guarded(lambda _: self.start()))
        self.stop_button.on_click(self.guarded(lambda _: self.stop()))
        self.resume_button.on_click(self.guarded(lambda _: self.resume()))
        self.save_button.on_click(self.guarded(lambda _: self.save()))
        for w in (self.snapshot, self.layer, self.head):
            w.observe(self.guarded(self._redraw), names="value")
        self._describe("ready")

    # ---- public: buttons (running / start / wait come from TrainingPanel) -----------------------------------
    def run(self, steps: int) -> list:
        """Train `steps` steps in the calling thread, updating the panel after each chunk; returns their StepStats.

        In a notebook cell this holds the kernel, so the buttons are disabled meanwhile (the note says why);
        `await dashboard.train(steps)` keeps them working."""
        self._in_cell = True
        try:
            return super().run(steps)
        finally:
            self._in_cell = False

    async def train(self, steps: int | None = None) -> list:
        """Train `steps` (default: the steps box) on the background thread and return their StepStats when done.

        `await` it in a notebook cell: the cell waits (so Run All goes on only after training) but the kernel
        stays free for widget messages (ipykernel >= 7.4 handles them while a cell awaits), so Stop, Save and
        the sliders work meanwhile. Kernel > Interrupt stops the run after the current step (the cell ends with
        CancelledError, the status says "interrupted" and Resume finishes the run). An error during training
        shows in the panel and is raised here too."""
        first = len(self.trainer.history)
        self.start(steps)
        try:
            while self.running:
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:  # Kernel > Interrupt while the cell awaits
            self.loop.stop()
            self.wait()
            self._describe("interrupted")
            raise
        self.wait()
        if self.last_error is not None:
            raise self.last_error
        return self.trainer.history[first:]

    def stop(self) -> None:
        """Return after the current step; what was trained so far stays (and Resume finishes the run)."""
        if not self.running:  # e.g. a click that waited for a cell to end: the run is over, say nothing false
            return
        self._stop_pressed = True
        super().stop()

    def resume(self) -> None:
        """Finish the run that Stop (or Kernel > Interrupt) interrupted."""
        self.loop.resume()

    def save(self, path: str | None = None) -> None:
        """Write a checkpoint (to `path` or the 'save to' box); while training, right after the current chunk."""
        target = path or self.path.value or None
        if target is None and not self.trainer.config.out_dir:
            raise ValueError("no checkpoint folder: type one into 'save to' (e.g. runs/my-model)")
        if self.running:
            self._save_to = target or ""
            self._describe("will save after the current chunk")
            return
        self._save_now(target)

    # ---- between chunks (the loop itself is `_base.ChunkedTraining`) -----------------------------------
    def _after_chunk(self) -> None:
        """A pending save, every few chunks a new sample, then the snapshot slider and the figure."""
        self._chunks += 1
        if self._save_to is not None:
            self._save_now(self._save_to or None)
            self._save_to = None
        if self._chunks % self.sample_every == 0 or self.trainer.step >= self.loop.target:
            self._refresh_sample()
        n = len(self.trainer.snapshots)
        follow = self.snapshot.value >= self.snapshot.max  # on the latest snapshot: keep following
        self._quiet = True
        try:
            self.snapshot.max = max(0, n - 1)
            if follow:
                self.snapshot.value = self.snapshot.max
        finally:
            self._quiet = False
        self._redraw()

    def _save_now(self, target: str | None) -> None:
        path = self.trainer.save_checkpoint(target)
        self.set_status(f"saved step {self.trainer.step} to {path}")

    def _refresh_sample(self) -> None:
        tok = self.trainer.tokenizer
        ids = tok.encode(self.sample_prompt)
        out = generate(
            self.trainer.raw_model,
            torch.tensor([ids]),
            self.sample_tokens,
            do_sample=True,
            temperature=0.8,
            top_k=min(40, tok.vocab_size),
            seed=self.trainer.step,
        )[0].tolist()
        self.sample_html.value = (
            f"<div style='font-size:13px'><b>Sample at step {self.trainer.step}</b> "
            "(temperature 0.8, top-k 40)<pre style='white-space:pre-wrap;margin:4px 0'>"
            f"<span style='color:#8a90a0'>{html.escape(self.sample_prompt)}</span>"
            f"{html.escape(tok.decode(out[len(ids) :]))}</pre></div>"
        )

    # ---- display -------------------------------------------------------------------------------------
    def export_items(self) -> list:
        return [go.Figure(self.figure)] + ([RawHTML(self.sample_html.value)] if self.sample_html.value else [])

    def _figure(self) -> go.Figure:
        snaps = self.trainer.snapshots
        snap = snaps[min(self.snapshot.value, len(snaps) - 1)] if snaps else None
        return dashboard_figure(
            self.trainer.history,
            snap,
            self.layer.value,
            self.head.value,
            self.trainer.raw_model.config.vocab_size,
            width=self.width,  # the panel's measured width (FIGURE_WIDTH while it is being built)
        )

    def relayout(self) -> None:
        """The browser measured the panel's width: lay the figure out for it (`_base.Panel.relayout`)."""
        self._redraw()

    def _redraw(self, change=None) -> None:
        if not self._quiet:
            with self._draw:
                replace_figure(self.figure, self._figure())

    def _buttons(self, running: bool) -> None:
        """Called when a run begins (True) and ends (False): the buttons, the note, and the status."""
        target, cell = self.loop.target, running and self._in_cell
        if running:
            self._t0, self._tokens0, self._rate = time.perf_counter(), self.trainer.tokens_seen, None
            self._stop_pressed = False
        self.start_button.disabled = running
        self.stop_button.disabled = not running or cell  # a click cannot reach a kernel busy with this cell
        self.save_button.disabled = cell
        self.resume_button.disabled = running or target is None or self.trainer.step >= target
        why = "off while this cell trains (Kernel ▸ Interrupt stops it)" if cell else ""
        for b in (self.start_button, self.stop_button, self.save_button):
            b.tooltip = why
        self.note.value = f"<div style='{CSS_NOTE}'>{CELL_NOTE}</div>" if cell else ""
        if running:
            self._describe("training")

    def _describe(self, state: str) -> None:
        """The status line: what is happening now, the step of the run's target, loss, speed, best val."""
        t, target = self.trainer, self.loop.target
        if state == "running":  # ChunkedTraining's word after each chunk
            state = "training in this cell" if self._in_cell else "training"
        elif state in ("stopped", "interrupted"):
            why = "interrupted (Kernel ▸ Interrupt)" if state == "interrupted" or t.interrupted else "stopped"
            if not self._stop_pressed and not t.interrupted and state == "stopped":
                why = "stopped early (time budget)"
            left = (target or 0) - t.step
            state = f"{why} · press Resume to train the {left} steps left" if left > 0 else why
        elif state == "training" and self._in_cell:
            state = "training in this cell"
        parts = [state, f"step {t.step}" + (f" of {target}" if target else "")]
        if t.history:
            parts.append(f"loss {t.history[-1].loss:.3f}")
        rate = self._wall_rate()
        if rate is not None:
            parts.append(f"{rate:,.0f} tokens/s")
        if t.history:
            parts.append(f"{t.elapsed:.0f} s trained")
        if t.best_val_loss is not None:
            parts.append(f"best val {t.best_val_loss:.3f}")
        self.set_status(" · ".join(parts))

    def _wall_rate(self) -> float | None:
        """Tokens per second of the current (or last) run over wall time: evals, snapshots, redraws included."""
        if self.running:
            dt, n = time.perf_counter() - self._t0, self.trainer.tokens_seen - self._tokens0
            if dt > 0 and n > 0:
                self._rate = n / dt
        return self._rate

    def _default_prompt(self) -> str:
        tok = self.trainer.tokenizer
        first = self.trainer.config.probe_text.split("\n")[0] + "\n"
        try:
            tok.encode(first)
            return first
        except ValueError:
            return tok.decode([int(i) for i in self.trainer.val_data.tokens[:8]])
