"""What every panel shares: the layout (title, caption, controls, one figure, status and error lines), error
display for callbacks, in-place figure updates, and `export_html`; and, for the panels that train, the Start /
Stop loop that trains in chunks (`ChunkedTraining`).

A panel is an `ipywidgets.VBox`, so a notebook cell that ends with it displays it. Its figure is built once:
`self.figure` is the go.Figure the panel edits (inside `batch_update()`, or wholesale with `replace_figure`),
`self.plot` the widget that draws it (`_figure.PlotlyFigure`: the figure's JSON as widget state, so a view shown
later draws the figure as it is then; clicks come back as small messages). Callback errors never vanish: a
mistake in the input (ValueError and friends) shows its message in the panel's red error line; anything else
shows its type and message there and its traceback in the panel's "details" output.
"""

from __future__ import annotations

import base64
import functools
import html
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from .. import export
from ..errors import InputError
from ..plots.style import WIDTH
from ._figure import LiveFigure, PlotlyFigure


class Busy(RuntimeError):
    """A button pressed while the panel is still doing the last thing (e.g. training)."""


# Errors a user causes by what they typed, chose or pressed: message only, no traceback.
INPUT_ERRORS = (ValueError, KeyError, IndexError, MemoryError, FileNotFoundError, NotADirectoryError, Busy)
# line-height: ipywidgets gives HTML widgets 28 px lines, which made a two-line caption look double-spaced
CSS_STATUS = "color:#4a5160;font-size:13px;line-height:1.45"
PANEL_WIDTH = WIDTH + 20  # px (980), the width a panel is first laid out for, before the browser has measured it
# A panel takes its container's whole width. A figure without a width fills it (the figure widget resizes it
# in the browser). A figure laid out in pixels (a square heatmap with its colour bar beside it) is built for
# FIGURE_WIDTH first; once the browser reports the container's width (`PlotlyFigure.on_resize`), the panel
# lays it out again for that width (`Panel.relayout`, within MIN_FIGURE_WIDTH..MAX_FIGURE_WIDTH).
FIGURE_WIDTH = WIDTH  # plots.style's: the figures' default width is the panels' figure width
MIN_FIGURE_WIDTH = 340  # narrower containers get this width and a horizontal scrollbar on the figure alone
MAX_FIGURE_WIDTH = 2000
RELAYOUT_STEP_PX = 24  # a width change smaller than this keeps the current layout


def packed(a) -> dict:
    """A 2-D float array as plotly.js's typed-array spec (base64 float32).

    As nested JSON lists a 2-D array is ~4x bigger and NaN (a masked cell) is not valid JSON; float32 bytes keep
    NaN, and the figure widget sends them as a binary buffer (`_figure.to_state`). plotly.js decodes them."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {
        "dtype": "f4",
        "bdata": base64.b64encode(a.tobytes()).decode("ascii"),
        "shape": f"{a.shape[0]}, {a.shape[1]}",
    }


def unpack(z) -> np.ndarray:
    """The numbers of a trace's z, packed or not (for tests and checks)."""
    if isinstance(z, dict) and "bdata" in z:
        shape = tuple(int(n) for n in str(z["shape"]).split(","))
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype="<" + z["dtype"]).reshape(shape).astype(float)
    return np.array(z, dtype=float)


def for_widget(fig: go.Figure) -> go.Figure:
    """Ready `fig` (in place) for a panel's figure widget and return it: every 2-D numeric z packed. A figure
    without a width keeps none: the widget sizes it to its container."""
    for trace in fig.data:
        z = getattr(trace, "z", None) if "z" in trace else None
        if isinstance(z, np.ndarray) and z.ndim == 2 and z.dtype.kind == "f":
            trace.z = packed(z)
    return fig


def replace_figure(target: PlotlyFigure | LiveFigure, fig: go.Figure) -> None:
    """Make a panel's figure widget (or the figure it shows) show `fig`, readied by `for_widget`: its traces
    and layout replace the old ones, and the browser gets what changed in one message."""
    widget = target if isinstance(target, PlotlyFigure) else target.widget
    widget.set_figure(for_widget(fig))


class Panel(W.VBox):
    """Base class: `title`, a caption, `controls`, one figure, a status line and an error line.

    `self.figure` is the go.Figure the panel edits (inside `with self.figure.batch_update():`, or wholesale with
    `replace_figure`); `self.plot` is the widget that draws it (`PlotlyFigure`), where clicks are registered."""

    title = "gptviz panel"
    input_errors: tuple = INPUT_ERRORS  # shown as a message; anything else also shows its traceback

    def __init__(self, controls: list[W.Widget], figure: go.Figure, caption: str, extra: list[W.Widget] = ()):
        self.plot = PlotlyFigure(for_widget(figure))
        self.figure = self.plot.figure
        self.caption = caption
        self.status = W.HTML()
        self.error = W.HTML()
        self.details = W.Output(layout=W.Layout(max_height="200px", overflow="auto"))
        self.last_error: BaseException | None = None
        self.last_update_s = 0.0  # wall time of the last callback, figure update included (server side)
        head = W.HTML(
            f"<b style='font-size:15px'>{html.escape(self.title)}</b>"
            f"<div style='{CSS_STATUS}'>{html.escape(caption)}</div>"
        )
        self._laid_out_for = FIGURE_WIDTH  # the width `relayout` last built the figure for
        super().__init__(
            [head, *controls, self.status, self.error, self.plot, *extra, self.details],
            layout=W.Layout(width="100%", min_width="0"),
        )
        self.plot.on_resize(self.guarded(self._on_resize))

    # ---- size ----------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """The width (px) to lay a figure out for: the container's, as the browser measured it, within
        MIN_FIGURE_WIDTH..MAX_FIGURE_WIDTH; FIGURE_WIDTH until the browser has said (or while the panel is
        being built, before it has a figure widget)."""
        plot = getattr(self, "plot", None)
        if plot is None or plot.width is None:
            return FIGURE_WIDTH
        return max(MIN_FIGURE_WIDTH, min(MAX_FIGURE_WIDTH, plot.width - 4))  # 4: no scrollbar from rounding

    def _on_resize(self, width: int) -> None:
        if abs(self.width - self._laid_out_for) >= RELAYOUT_STEP_PX:
            self._laid_out_for = self.width
            self.relayout()

    def relayout(self) -> None:
        """Lay the figure out again for `self.width` (the container changed size). Panels whose figure has a
        width of its own override this; a figure without one follows its container by itself."""

    # ---- callbacks -----------------------------------------------------------------------------------
    def guarded(self, fn):
        """Wrap a callback: time it, clear the error line, show any error in the panel (and return None)."""

        @functools.wraps(fn)
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            self.show_error(None)
            try:
                return fn(*args, **kwargs)
            except self.input_errors as e:
                self.show_error(e)
            except Exception as e:  # a bug, not bad input: say so, keep the traceback inspectable
                self.show_error(e, unexpected=True)
            finally:
                self.last_update_s = time.perf_counter() - t0
            return None

        return run

    def show_error(self, e: BaseException | None, unexpected: bool = False) -> None:
        self.last_error = e
        self.plot.stale = e is not None  # what the figure shows is not what the controls now say
        if e is None:
            self.error.value = ""
            return
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        prefix = f"Unexpected error ({type(e).__name__}), details below: " if unexpected else ""
        self.error.value = f"<div style='color:#b42318;font-size:13px'>⚠ {html.escape(prefix + str(msg))}</div>"
        if unexpected:  # append_stdout works with or without a kernel (a `with Output()` block needs one)
            self.details.append_stdout("".join(traceback.format_exception(type(e), e, e.__traceback__)))

    def set_status(self, text: str) -> None:
        self.status.value = f"<div style='{CSS_STATUS}'>{html.escape(text)}</div>" if text else ""

    # ---- export --------------------------------------------------------------------------------------
    def export_items(self) -> list:
        """What the static page shows: the current figure (panels add RawHTML, e.g. generated text)."""
        return [go.Figure(self.figure)]

    def export_html(self, path: str | Path, title: str | None = None) -> Path:
        """Write the panel's current view to a standalone offline HTML file (plotly.js inlined)."""
        notes = [self.caption] + ([html.unescape(_strip_tags(self.status.value))] if self.status.value else [])
        return export.figures_to_html(self.export_items(), path, title or self.title, notes)


class TrainingPanel(Panel):
    """A Panel that trains through `self.loop` (a `ChunkedTraining`), with a `steps` box for Start."""

    loop: ChunkedTraining
    steps: W.BoundedIntText

    @property
    def running(self) -> bool:
        return self.loop.running

    def run(self, steps: int) -> list:
        """Train `steps` steps now, in chunks, updating the panel after each; returns their StepStats."""
        return self.loop.run(self._steps_to_run(steps, "run"))

    def start(self, steps: int | None = None) -> None:
        """Train `steps` (default: the steps box) on a background thread."""
        self.loop.start(self.steps.value if steps is None else self._steps_to_run(steps, "train"))

    def _steps_to_run(self, steps, call: str) -> int:
        """`steps` checked (a whole number >= 1) and shown in the steps box, so the panel says what it is running."""
        if isinstance(steps, bool) or not hasattr(steps, "__index__") or int(steps) < 1:
            hint = " (or train() for the number in the steps box)" if call == "train" else ""
            raise InputError(f"{call}(steps={steps!r}): steps must be a whole number >= 1, e.g. {call}(200){hint}")
        steps = int(steps)
        self.steps.max = max(self.steps.max, steps)
        self.steps.value = steps
        return steps

    def stop(self) -> None:
        """Return after the current step; what was trained so far stays."""
        self.loop.stop()
        self._describe("stopping after the current step…")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background run ends (for scripts and tests)."""
        self.loop.wait(timeout)


class ChunkedTraining:
    """A panel's training loop: chunks of `chunk()` steps of `trainer()` (a `train.Trainer`), run now (`run`)
    or on a background thread (`start`, `resume`) so the kernel stays free for the buttons; one run at a time.

    Stop asks the trainer to return after its current step (`Trainer.request_stop`) and the loop not to start
    another chunk. After every chunk `after_chunk()` updates the panel, then the status says "running"; at the
    end "stopped" (short of the target) or "done". `buttons(running)` sets the panel's buttons when a run
    begins and ends. A background run's error shows in the panel (`Panel.guarded`); a synchronous run's error
    goes to the caller. Either way the buttons return to idle. What trains, what the panel shows and which
    buttons it has are the panel's; this only runs the loop.
    """

    def __init__(
        self,
        panel: Panel,
        trainer: Callable,
        chunk: Callable[[], int],
        after_chunk: Callable[[], None],
        buttons: Callable[[bool], None],
        describe: Callable[[str], None],
        name: str = "gptviz-training",
    ):
        self.panel, self.trainer, self.chunk, self.name = panel, trainer, chunk, name
        self.after_chunk, self.buttons, self.describe = after_chunk, buttons, describe
        self.target: int | None = None  # the step the current run (or the stopped one) aims for
        self._lock = threading.Lock()  # held while a run (thread or synchronous) is training
        self._thread: threading.Thread | None = None
        self._stop_flag = False

    @property
    def running(self) -> bool:
        return self._lock.locked()

    def run(self, steps: int) -> list:
        """Train `steps` steps now, updating the panel after each chunk; returns their StepStats."""
        self._begin(self.trainer().step + int(steps))
        try:
            return self._loop()
        finally:
            self._end()

    def start(self, steps: int) -> None:
        """Train `steps` more steps on a background thread."""
        self._launch(self.trainer().step + int(steps))

    def resume(self) -> None:
        """Finish, on a background thread, the run that Stop interrupted."""
        if self.target is None or self.trainer().step >= self.target:
            raise ValueError("nothing to resume: the last run finished; press Start for more steps")
        self._launch(self.target)

    def stop(self) -> None:
        """Return after the current step; what was trained stays."""
        self._stop_flag = True
        self.trainer().request_stop()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background run ends (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _launch(self, target: int) -> None:
        self._begin(target)

        def work():
            try:
                self.panel.guarded(self._loop)()
            finally:
                self._end()

        self._thread = threading.Thread(target=work, name=self.name, daemon=True)
        self._thread.start()

    def _begin(self, target: int) -> None:
        if not self._lock.acquire(blocking=False):
            raise Busy("training is already running; press Stop (or wait for it to finish) first")
        self._stop_flag, self.target = False, target  # here, not in the thread: a Stop right after Start counts
        self.buttons(True)

    def _end(self) -> None:
        self._lock.release()
        self.buttons(False)

    def _loop(self) -> list:
        trainer, target, out = self.trainer(), self.target, []
        while trainer.step < target and not self._stop_flag:
            done = trainer.train_steps(min(self.chunk(), target - trainer.step))
            out += done
            self.after_chunk()
            self.describe("running")
            if not done or trainer.interrupted:  # stopped mid-chunk (Stop, Ctrl-C, time budget)
                break
        self.describe("stopped" if trainer.step < target else "done")
        return out


def row(*widgets: W.Widget, gap: str = "4px 16px") -> W.HBox:
    """Controls side by side that wrap onto the next line when the panel is narrow (never off-screen)."""
    return W.HBox(list(widgets), layout=W.Layout(flex_flow="row wrap", grid_gap=gap, width="100%"))


def check_index(what: str, value, count: int, panel: str) -> int:
    """`value` as an index into `count` things (layers, heads), or a ValueError that says so (a slider would
    silently clamp layer 10 of a 6-layer model to 5, and show the wrong thing without a word)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < count:
        raise ValueError(
            f"{panel}: {what} {value!r} does not exist; this model has {count} ({what} 0 to {count - 1}), "
            f"so pick one of those"
        )
    return int(value)


def encode_for_panel(tokenizer, text: str) -> list[int]:
    """`tokenizer.encode(text)`, with the message a student can act on inside a panel when a character-level
    tokenizer meets characters it never saw (its own message tells a programmer to rebuild the tokenizer)."""
    try:
        return list(tokenizer.encode(text))
    except ValueError as e:
        known = getattr(tokenizer, "chars", None)
        if known is None:
            raise
        unknown = sorted(set(text) - set(known), key=text.index)
        shown = " ".join(unknown[:6]) + (" …" if len(unknown) > 6 else "")
        raise ValueError(
            f"This model reads only the {len(known)} characters of the text it was trained on, and {shown} "
            f"{'is' if len(unknown) == 1 else 'are'} not among them: type text without "
            f"{'it' if len(unknown) == 1 else 'them'} (e.g. plain English letters), or open a model with a "
            "byte-level tokenizer (such as SmolLM2) for any language."
        ) from e


def _strip_tags(s: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", s)


def slider(description: str, value, lo, hi, step=1, width: str = "300px", style: dict | None = None, **kw) -> W.Widget:
    """A labelled slider that only reports when released (continuous_update=False); the label takes the
    room it needs unless `style` says otherwise (e.g. {"description_width": "120px"} to line sliders up)."""
    cls = W.FloatSlider if isinstance(step, float) or isinstance(value, float) else W.IntSlider
    return cls(
        value=value,
        min=lo,
        max=hi,
        step=step,
        description=description,
        continuous_update=False,
        style=style or {"description_width": "initial"},
        layout=W.Layout(width=width),
        **kw,
    )
