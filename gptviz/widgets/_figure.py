"""PlotlyFigure: a plotly figure in a notebook, as a small anywidget of our own (plotly's public API only).

The kernel owns the figure: `PlotlyFigure.figure` is a plain `go.Figure` (a `LiveFigure`) that a panel edits
inside `with figure.batch_update():`; when the outermost batch ends, its JSON (data + layout) becomes the
widget's synced state in one message (only the properties that changed, see `PlotlyFigure`), and the browser
draws it with `Plotly.react`. Every view, shown now or later, draws from that state, so an edit made before the
panel was displayed is never lost. Numeric arrays travel as plotly.js typed arrays in binary buffers (float32
heatmaps keep NaN, no base64, no JSON lists).

The browser sends back only small events (`gptviz/static/plotly_figure.js`): a click's curve, point, x, y and
customdata, dispatched to `on_click` callbacks with the signature plotly's FigureWidget uses,
`callback(trace, points, state)`; and the container's width when it changes (`on_resize`: a panel laid out in
pixels lays out again; a figure without a width is resized by plotly.js itself). It never sends the figure:
plotly's FigureWidget echoed the whole figure
back after each render, 10+ MB messages over Jupyter's websocket limit, and clicks stopped arriving.

plotly.js itself is the installed plotly package's bundle (offline), sent once per kernel by one
`PlotlyLibrary` widget that is never displayed, not once per figure (plotly's FigureWidget carries ~5 MB each).
What this module leaves to others: what a figure shows (`gptviz.plots`, the panels) and static export
(`gptviz.export`, plain figures).
"""

from __future__ import annotations

import base64
import datetime
import math
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import anywidget
import numpy as np
import plotly.graph_objects as go
import traitlets as t
from plotly.callbacks import InputDeviceState, Points
from plotly.offline import get_plotlyjs, get_plotlyjs_version

ESM = (Path(__file__).resolve().parents[1] / "static" / "plotly_figure.js").read_text(encoding="utf-8")
CONFIG = {"displaylogo": False, "showLink": False}  # the browser never reaches plotly's servers anyway

# plotly.js typed-array dtypes; int64 is not among them (it is narrowed to int32 or sent as float64)
_DTYPES = {
    "int8": "i1",
    "uint8": "u1",
    "int16": "i2",
    "uint16": "u2",
    "int32": "i4",
    "uint32": "u4",
    "float32": "f4",
    "float64": "f8",
}


# ---- the figure's JSON as widget state ------------------------------------------------------------------------


def typed_array(a: np.ndarray) -> dict | list:
    """A numeric numpy array as plotly.js's typed-array spec, its bytes a binary buffer of the message; other
    arrays (strings, objects, booleans, empty ones) as plain lists."""
    if a.dtype.kind in "iu" and a.size and a.dtype.itemsize == 8:
        lo, hi = int(a.min()), int(a.max())
        a = a.astype("int32") if -(2**31) <= lo and hi < 2**31 else a.astype("float64")
    dtype = _DTYPES.get(str(a.dtype))
    if dtype is None or a.size == 0 or a.ndim > 3:
        return to_state(a.tolist())
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    spec = {"dtype": dtype, "bdata": a.tobytes()}
    if a.ndim > 1:
        spec["shape"] = ", ".join(str(n) for n in a.shape)
    return spec


def to_state(obj):
    """JSON-safe widget state from plotly's JSON (`to_plotly_json()`): numeric arrays as binary typed arrays
    (`typed_array`), base64 typed arrays (`_base.packed`) turned binary, NaN and inf floats as None (JSON has
    no NaN), numpy scalars and tuples as plain Python, dates as ISO text (as plotly's own JSON has them)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("bdata"), str) and "dtype" in obj:  # a typed array already packed as base64
            return {**obj, "bdata": base64.b64decode(obj["bdata"])}
        return {k: to_state(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return typed_array(obj)
    if isinstance(obj, (list, tuple)):
        return [to_state(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (datetime.date, datetime.time)):
        return obj.isoformat()
    return obj


# ---- plotly.js, once per kernel ----------------------------------------------------------------------------


class PlotlyLibrary(anywidget.AnyWidget):
    """plotly.js from the installed plotly package, as the state of one widget that is never displayed: the
    first figure the page draws runs it, and every PlotlyFigure of that plotly version draws with it."""

    _esm = ESM
    _plotly_version = t.Unicode().tag(sync=True)
    _plotly_js = t.Bytes().tag(sync=True)

    _shared: PlotlyLibrary | None = None

    @classmethod
    def shared(cls) -> PlotlyLibrary:
        """The kernel's one library widget (made again if someone closed it, e.g. `Widget.close_all()`)."""
        if cls._shared is None or cls._shared.comm is None:
            cls._shared = cls(_plotly_version=get_plotlyjs_version(), _plotly_js=get_plotlyjs().encode("utf-8"))
        return cls._shared


# ---- the figure --------------------------------------------------------------------------------------------


class LiveFigure(go.Figure):
    """The go.Figure a PlotlyFigure shows. Edit it inside `batch_update()`: when the outermost batch ends the
    widget sends the figure as it is then, once. (Unlike a plain Figure's batch, edits apply at once, so code
    inside the batch reads what it wrote.) Edits outside a batch reach the view at the next batch or `commit`."""

    def __init__(self, figure=None, widget: PlotlyFigure | None = None):
        super().__init__(figure)
        self._gptviz_widget = widget
        self._gptviz_depth = 0

    @property
    def widget(self) -> PlotlyFigure | None:
        """The PlotlyFigure that shows this figure."""
        return self._gptviz_widget

    @contextmanager
    def batch_update(self):
        self._gptviz_depth += 1
        try:
            yield
        finally:
            self._gptviz_depth -= 1
            if self._gptviz_depth == 0 and self._gptviz_widget is not None:
                self._gptviz_widget.commit()


ClickCallback = Callable[[object, Points, InputDeviceState], None]


def _weight(obj) -> int:
    """About how many bytes `obj` takes in a message (its buffers, strings and numbers)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return len(obj)
    if isinstance(obj, dict):
        return sum(len(k) + _weight(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sum(_weight(v) for v in obj)
    return len(obj) if isinstance(obj, str) else 8


def _diff(base: dict, new: dict) -> dict | None:
    """The top-level properties that turn `base` into `new`: {"set": {...}, "unset": [...]}; None if equal."""
    changed = {k: v for k, v in new.items() if k not in base or base[k] != v}
    gone = [k for k in base if k not in new]
    return {"set": changed, "unset": gone} if changed or gone else None


class PlotlyFigure(anywidget.AnyWidget):
    """A plotly figure drawn in the browser by plotly.js, its state the figure's JSON; clicks come back small.

        w = PlotlyFigure(fig)
        with w.batch_update():              # or w.figure.batch_update()
            w.figure.data[0].z = new_z
        w.on_click(lambda trace, points, state: print(points.point_inds), traces=[0])
        w.set_figure(other_fig)             # show another figure (same widget, one message)

    State: a base (`_fig_data`, `_fig_layout`, numbered `_fig_base`) and one patch against it (`_fig_patch`: the
    traces' and layout's top-level properties that differ from the base now). An update sends only the patch,
    so moving a slider re-sends the heatmap's z, not its hover text or the figure's other heatmaps; when the
    patch outweighs half the figure, the whole figure becomes the new base. The patch is cumulative, so a view
    made at any time draws base + patch = the figure as it is now.
    """

    _esm = ESM
    _fig_data = t.List().tag(sync=True)  # the traces' JSON (to_state)
    _fig_layout = t.Dict().tag(sync=True)
    _fig_base = t.Int(0).tag(sync=True)
    _fig_patch = t.Dict().tag(sync=True)  # {"base", "n" (traces), "traces": {"i": diff}, "layout": diff or None}
    _fig_config = t.Dict().tag(sync=True)
    _fig_stale = t.Bool(False).tag(sync=True)  # greyed out: the panel shows a message about it
    _plotly_version = t.Unicode().tag(sync=True)

    def __init__(self, figure: go.Figure | dict | None = None, config: dict | None = None, **kwargs):
        PlotlyLibrary.shared()  # opened first, so the browser has plotly.js by the time this figure draws
        self._figure = LiveFigure(figure, self)
        self._clicks: list[tuple[frozenset[int] | None, ClickCallback]] = []
        self._resizes: list[Callable[[int], None]] = []
        self.width: int | None = None  # px, the container's width as the browser last measured it
        self._commit_lock = threading.Lock()  # a training thread and a slider may both update the figure
        self.last_js_error: str | None = None  # what plotly.js said when it could not draw the state
        data, layout = self._snapshot()  # the first state the browser gets is the figure, not an empty one
        super().__init__(
            _plotly_version=get_plotlyjs_version(),
            _fig_config={**CONFIG, **(config or {})},
            _fig_data=data,
            _fig_layout=layout,
            _fig_base=1,
            **kwargs,
        )
        self.on_msg(lambda _, content, buffers: self.receive(content))

    @property
    def figure(self) -> LiveFigure:
        """The figure this widget shows; edit it inside `batch_update()`."""
        return self._figure

    def batch_update(self):
        """Edits inside the `with` block reach the browser as one state update when it ends."""
        return self._figure.batch_update()

    def commit(self) -> None:
        """Send the figure as it is now, in one message: the patch against the base, or a new base."""
        with self._commit_lock:
            self._commit()

    def _snapshot(self) -> tuple[list, dict]:
        return (
            [to_state(trace.to_plotly_json()) for trace in self._figure.data],
            to_state(self._figure.layout.to_plotly_json()),
        )

    def _commit(self) -> None:
        data, layout = self._snapshot()
        base = self._fig_data
        traces = {str(i): d for i, new in enumerate(data) if (d := _diff(base[i] if i < len(base) else {}, new))}
        patch = {"base": self._fig_base, "n": len(data), "traces": traces, "layout": _diff(self._fig_layout, layout)}
        if 2 * _weight(patch) > _weight(data) + _weight(layout):
            with self.hold_sync():
                self._fig_data, self._fig_layout, self._fig_patch = data, layout, {}
                self._fig_base += 1
        else:
            self._fig_patch = patch  # no message at all when nothing changed (traitlets compares)

    def set_figure(self, fig: go.Figure | dict) -> None:
        """Show `fig` instead: same widget and same `figure` object (its traces and layout replaced), one update."""
        fig = fig if isinstance(fig, go.Figure) else go.Figure(fig)
        with self.batch_update():
            self._figure.data = []
            self._figure.add_traces(list(fig.data))
            self._figure.layout = fig.layout

    @property
    def stale(self) -> bool:
        """True: the browser shows the figure greyed out (out of date; the panel says why)."""
        return self._fig_stale

    @stale.setter
    def stale(self, value: bool) -> None:
        self._fig_stale = bool(value)

    # ---- events from the browser --------------------------------------------------------------------------
    def on_resize(self, callback: Callable[[int], None], remove: bool = False) -> None:
        """Call `callback(width)` when the browser reports a new container width (px; once after the first
        draw, then when the page or the panel changes size by 8 px or more). A figure without a layout width
        follows its container anyway; this is for figures laid out in pixels, which the panel lays out again."""
        if remove:
            self._resizes = [cb for cb in self._resizes if cb != callback]
        else:
            self._resizes.append(callback)

    def on_click(self, callback: ClickCallback, traces: Iterable[int] | None = None, remove: bool = False) -> None:
        """Call `callback(trace, points, state)` when a point of one of `traces` (indices; None: any trace) is
        clicked, as plotly's `trace.on_click` does: `points.point_inds`, `.xs`, `.ys` hold the clicked points of
        that trace, `trace` is the trace of `figure` as it is now. `remove=True` unregisters `callback`."""
        if remove:
            self._clicks = [(which, cb) for which, cb in self._clicks if cb != callback]
            return
        self._clicks.append((None if traces is None else frozenset(int(i) for i in traces), callback))

    def receive(self, content: dict) -> None:
        """A message from the browser (also what tests call to click without a browser):
        {"type": "click", "points": [{"curve", "point", "x", "y", "customdata"}, ...], "state": {...}}, or
        {"type": "error", "message"} when plotly.js could not draw the state, or {"type": "resize", "width"}
        when the container's width changed."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "error":
            self.last_js_error = str(content.get("message"))
        elif kind == "resize" and isinstance(content.get("width"), (int, float)) and content["width"] > 0:
            self.width = int(content["width"])
            for callback in list(self._resizes):
                callback(self.width)
        elif kind == "click":
            self._dispatch_click(content.get("points") or [], content.get("state") or {})

    def _dispatch_click(self, points: list[dict], state: dict) -> None:
        by_trace: dict[int, list[dict]] = {}
        for p in points:
            if isinstance(p.get("curve"), int) and 0 <= p["curve"] < len(self._figure.data):
                by_trace.setdefault(p["curve"], []).append(p)
        device = InputDeviceState(**{k: state.get(k) for k in ("ctrl", "alt", "shift", "meta", "button", "buttons")})
        for index, pts in by_trace.items():
            trace = self._figure.data[index]
            chosen = Points(
                point_inds=[p.get("point") for p in pts],
                xs=[p.get("x") for p in pts],
                ys=[p.get("y") for p in pts],
                trace_name=trace.name,
                trace_index=index,
            )
            for which, callback in list(self._clicks):
                if which is None or index in which:
                    callback(trace, chosen, device)
