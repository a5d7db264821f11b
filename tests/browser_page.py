"""Helpers for the browser tests: a JupyterLab server, Chromium, and what a person does and sees on its pages.

`Lab` starts JupyterLab with the launcher's own command in a temporary Jupyter home, on a copy of the lessons,
and stops it by process group; `_require_browser` skips a test without Debian's Chromium or playwright (fails
under GPTVIZ_REQUIRE_BROWSER=1), `_require_default_model` without the committed default model. The page helpers
open a notebook and Run All Cells (or write one and run its cells one by one), find a widget panel by its
heading and read its plotly figure, press keys and click points in it, time an action until a DOM predicate
holds, check a panel for layout faults (`layout_problems`) and at window widths of 800, 1,000 and 1,400 px
(`check_widths`), record websocket message sizes, and save screenshots to tests/artifacts/browser/. They wait
on DOM predicates, never on sleeps (only the server's start is polled over HTTP). The tests themselves, what to
open, press and expect, are tests/test_browser_e2e.py, tests/test_browser_training.py and tests/test_app_mode.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gptviz import launcher

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
RUN_TIMEOUT_MS = 600_000  # running a whole notebook on a busy 2-core machine (shared with other jobs)
UI_TIMEOUT_MS = 60_000  # one widget callback round trip


def _require_browser() -> None:
    why = None
    if not CHROMIUM.exists():
        why = (
            f"{CHROMIUM} is missing: install Debian's chromium (`make browser-deps`, or apt-get install "
            "chromium fonts-dejavu-core fonts-noto-cjk fonts-noto-color-emoji); never `playwright install`"
        )
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "the playwright Python package is missing (pip install -e '.[test]')"
    if why:
        if os.environ.get("GPTVIZ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GPTVIZ_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


def _require_default_model() -> None:
    from gptviz.paths import DEFAULT_MODEL, repo_root

    folder = repo_root() / "lab" / "models" / DEFAULT_MODEL
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"the lessons open on the default model and {folder} is not there yet")


# ------------------------------------------------------------------------------------------- the server


class Lab:
    """JupyterLab started with the launcher's own command, in a temporary Jupyter home, stopped by group."""

    def __init__(self, home: Path) -> None:
        self.port = launcher.free_port(None)
        self.token = secrets.token_urlsafe(24)
        env = dict(os.environ)
        for var, sub in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTERLAB_SETTINGS_DIR", "settings"),
            ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
            ("IPYTHONDIR", "ipython"),
        ]:
            (home / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(home / sub)
        # kernels talk over IPC sockets there: a Unix socket's path must stay under ~107 characters, which
        # pytest's deep temporary folders exceed ("File name too long")
        self.runtime = Path(tempfile.mkdtemp(prefix="gvrt"))
        env["JUPYTER_RUNTIME_DIR"] = str(self.runtime)
        env["OMP_NUM_THREADS"] = "2"
        # a copy of the lessons: JupyterLab autosaves what it runs, and the committed notebooks stay clean
        nb_dir = self.notebooks = home / "notebooks"
        shutil.copytree(REPO / "notebooks", nb_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        overrides = launcher.settings_dir(REPO / "notebooks")
        assert overrides is not None, "lab/jupyter/overrides.json is missing"
        cmd = launcher.lab_command(nb_dir, self.port, open_browser=False, overrides_dir=overrides)
        cmd.append("--ServerApp.terminals_enabled=False")
        self.log_path = home / "jupyter.log"
        self._log = open(self.log_path, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            env=launcher.lab_env(self.token, env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> float:
        url = f"{self.base}/api/status?token={self.token}"
        while time.monotonic() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - self.t0
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)  # the server socket is not up yet: nothing in a page to wait on
        raise RuntimeError(f"JupyterLab did not answer /api/status within {timeout} s:\n{self.log()}")

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={self.token}&reset"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.runtime, ignore_errors=True)


# ------------------------------------------------------------------------------------------- page helpers


def open_notebook(page, lab: Lab, notebook: str, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Open a notebook and wait until its kernel is started and idle."""
    page.goto(lab.url(notebook))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=UI_TIMEOUT_MS)
    # the indicator says "idle" before a kernel exists too; a kernel name comes first, then idle again
    page.wait_for_function(
        """() => {
            const name = document.querySelector('.jp-KernelName');
            const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return name && !/No Kernel/.test(name.textContent) && ind && ind.dataset.status === 'idle';
        }""",
        timeout=timeout_ms,
    )


def open_and_run_all(page, lab: Lab, notebook: str) -> None:
    """Open a notebook, wait for its kernel, then Run -> Run All Cells from the menu bar."""
    open_notebook(page, lab, notebook)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # every code cell executed ([n]: in its prompt) and the kernel idle again; or a cell failed, which stops
    # Run All (the caller's assert_no_error_outputs then shows the traceback instead of a timeout)
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
            const done = prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            const failed = [...document.querySelectorAll(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                .some(e => /Traceback|Error:/.test(e.textContent));
            const idle = document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
            return (done || failed) && idle !== null;
        }""",
        timeout=RUN_TIMEOUT_MS,
    )


def with_small_settings(path: Path) -> None:
    """Give a lesson copy the small settings tests/test_notebooks.py runs it with (same cells, less work)."""
    import nbformat
    from test_notebooks import SMALL, with_parameters

    nbformat.write(with_parameters(nbformat.read(path, as_version=4), SMALL[path.name]), path)


def assert_no_error_outputs(page, notebook: str) -> None:
    errors = page.evaluate(
        """() => [...document.querySelectorAll(
                     '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                 .map(e => e.textContent).filter(t => /Traceback|Error:/.test(t))"""
    )
    assert not errors, f"{notebook} printed errors:\n" + "\n---\n".join(e[:2000] for e in errors)


def panel(page, title: str):
    """The widget panel (an ipywidgets VBox) whose heading is `title`, once its plot has drawn."""
    box = (
        page.locator(".widget-vbox", has=page.locator("b", has_text=title))
        .filter(has=page.locator(".js-plotly-plot"))
        .last
    )
    box.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=UI_TIMEOUT_MS)
    return box


def plot_state(box) -> dict:
    """What the panel's plot shows: its title and the first trace's data, read from plotly's own graph div."""
    return box.locator(".js-plotly-plot").first.evaluate(
        """el => ({title: (el.layout.title && el.layout.title.text) || '',
                   z: JSON.stringify(el.data[0].z),
                   traces: el.data.length})"""
    )


LAYOUT_PROBLEMS_JS = """box => {
            const panel = box.getBoundingClientRect();
            const problems = [];
            const el = box.querySelector('.js-plotly-plot');
            const svg = el.querySelector('.main-svg').getBoundingClientRect();
            if (svg.width < 0.9 * panel.width) problems.push(`plot ${svg.width} px wide in a ${panel.width} px panel`);
            const texts = [...el.querySelectorAll('.gtitle, .annotation, .legend, .g-xtitle, .g-ytitle')]
                .map(e => ({name: e.textContent.slice(0, 50), r: e.getBoundingClientRect()}))
                .filter(t => t.r.width > 0);
            for (const t of texts)
                if (t.r.right > svg.right + 1 || t.r.left < svg.left - 1) problems.push(`cut off: ${t.name}`);
            texts.forEach((a, i) => texts.slice(i + 1).forEach(b => {
                const w = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);
                const h = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
                if (w > 2 && h > 2) problems.push(`overlap: ${a.name} / ${b.name}`);
            }));
            for (const c of box.querySelectorAll('.widget-inline-hbox, .widget-button, .widget-inline-hbox select')) {
                const r = c.getBoundingClientRect();
                if (r.width > 0 && r.right > panel.right + 1) problems.push(`control past the panel: ${c.textContent}`);
            }
            for (const l of box.querySelectorAll('.widget-label'))
                if (l.offsetWidth > 0 && l.scrollWidth > l.clientWidth + 1)
                    problems.push(`label cut: ${l.textContent}`);
            return problems;
        }"""


def layout_problems(box) -> list[str]:
    """What a person would call broken in a panel: a plot much narrower than the panel; a title, caption,
    legend or axis title cut off at the plot's edge or lying on top of another one; a control reaching past
    the panel's edge, or a control's label cut short."""
    return box.evaluate(LAYOUT_PROBLEMS_JS)


def colourbar_gaps(plot) -> list[float]:
    """Pixels between each colour bar of a drawn plot and the plot area nearest on its left (its heatmap)."""
    return plot.evaluate(
        """el => {
            const areas = [...el.querySelectorAll('.nsewdrag')].map(e => e.getBoundingClientRect());
            return [...el.querySelectorAll('.colorbar')].map(cb => {
                const r = cb.getBoundingClientRect();
                const left = areas.filter(a => a.right <= r.left + 2).map(a => r.left - a.right);
                return left.length ? Math.min(...left) : 1e9;
            });
        }"""
    )


def static_plot(page, title: str):
    """A figure a cell drew with fig.show() (not a panel's), found by its title: the output is the plot itself."""
    out = page.locator(".jp-OutputArea-output.js-plotly-plot", has=page.locator(".gtitle", has_text=title)).first
    out.locator(".main-svg").first.wait_for(timeout=UI_TIMEOUT_MS)
    return out


def check_static_heatmap(page, title: str, screenshot: str) -> None:
    out = static_plot(page, title)
    show(out)
    shoot(out, screenshot)
    gaps = colourbar_gaps(out)
    assert gaps and all(g <= 30 for g in gaps), f"{title}: colour bars {gaps} px from their heatmaps"


def move_slider(box, description: str, key: str, times: int = 1) -> None:
    slider = box.locator(".widget-slider", has=box.page.locator("label", has_text=description)).first
    handle = slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(times):
        handle.press(key)


def timed(timings: dict, name: str, action, wait) -> None:
    """Do `action`, then `wait` (a DOM predicate); record the seconds between them as timings[name]."""
    t0 = time.monotonic()
    action()
    wait()
    timings[name] = round(time.monotonic() - t0, 3)


def wait_plot(page, plot, predicate: str, arg=None) -> None:
    """Wait until `predicate` (a JS function of the plot's graph div, or of [div, arg]) holds."""
    el = plot.element_handle()
    page.wait_for_function(predicate, arg=el if arg is None else [el, arg], timeout=UI_TIMEOUT_MS)


def click_at(page, bbox: dict, fx: float = 0.5, fy: float = 0.5) -> None:
    """Move to a point of a box (plotly clicks the point it hovers), then click there."""
    x, y = bbox["x"] + bbox["width"] * fx, bbox["y"] + bbox["height"] * fy
    page.mouse.move(x, y)
    page.mouse.click(x, y)


def focus_of(plot) -> str:
    return plot.evaluate("el => el.layout.legend.title.text")


# ------------------------------------------------------------------------------------------- notebooks


BIG_MODEL_CELLS = [  # 12 layers x 12 heads, 256 tokens, random weights: the size for message limits
    "import torch, gptviz\nfrom gptviz.config import GPTConfig\nfrom gptviz.model import GPT\n"
    "from gptviz.tokenizers import CharTokenizer\nfrom gptviz.widgets import AttentionExplorer, "
    "GenerationExplorer, PositionalEncodingExplorer\n"
    "TEXT = ('ROMEO: But soft, what light through yonder window breaks? '\n"
    "        'It is the east, and Juliet is the sun. ' * 3)[:256]\n"
    "tok = CharTokenizer.from_text(TEXT)\ntorch.manual_seed(0)\n"
    "model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=12, n_head=12, n_embd=192)).eval()",
    "AttentionExplorer(model, tok, TEXT)",
    "GenerationExplorer(model, tok, TEXT[:200], max_new_tokens=20)",
    "PositionalEncodingExplorer(model, T=256)",
]


def write_big_model_notebook(folder: Path) -> str:
    return write_notebook(folder, "e2e_big_model.ipynb", BIG_MODEL_CELLS)


def write_notebook(folder: Path, name: str, sources: list[str]) -> str:
    """A notebook of these code cells in `folder`, named `name` (returned, for `Lab.url`)."""
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src} for src in sources
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (folder / name).write_text(json.dumps(nb))
    return name


def run_cells_one_by_one(page, lab: Lab, notebook: str, received: list, sizes: dict) -> None:
    """Open `notebook`, run its code cells one at a time (Shift+Enter) and record, per cell, the largest
    websocket message from the kernel while it ran (plotly.js itself, sent once per kernel, left out)."""
    open_notebook(page, lab, notebook)
    page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first.click()
    page.keyboard.press("Escape")
    for i in range(len(BIG_MODEL_CELLS)):
        mark = len(received)
        page.keyboard.press("Shift+Enter")
        page.wait_for_function(
            r"""i => {
                const p = document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')[i];
                const idle = document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
                return p && /\[\d+\]/.test(p.textContent) && idle !== null;
            }""",
            arg=i,
            timeout=RUN_TIMEOUT_MS,
        )
        if i:
            title = ("Attention explorer", "Generation explorer", "Positional encoding explorer")[i - 1]
            panel(page, title)  # drawn
            sizes[title] = max((n for n, lib in received[mark:] if not lib), default=0)


# ------------------------------------------------------------------------------------------- window widths

WIDTHS = (800, 1000, 1400)
# where check_widths also goes through every view of a panel: the narrowest, where views stack, turn labels and
# wrap titles (1,000 px lays out the same way); at the others each panel shows the view it is on (a budget: ~1 s
# a view on a busy machine)
VIEW_WIDTHS = (800,)


OVERFLOW_PROBLEMS_JS = """(box, width) => {
            const problems = [];
            const panel = box.getBoundingClientRect();
            if (panel.right > width + 1) problems.push(`panel reaches ${panel.right} px in a ${width} px window`);
            for (const c of box.querySelectorAll(
                    '.widget-inline-hbox, .widget-button, .widget-toggle-button, .widget-label, .main-svg')) {
                const r = c.getBoundingClientRect();
                if (r.width > 0 && r.right > Math.min(panel.right, width) + 1)
                    problems.push(`cut off at ${width} px: ${(c.textContent || '').slice(0, 40)}`);
            }
            const nb = box.closest('.jp-WindowedPanel-outer') || box.closest('.jp-Notebook');
            if (nb && nb.scrollWidth > nb.clientWidth + 1)
                problems.push(`horizontal scrollbar at ${width} px: ${nb.scrollWidth} > ${nb.clientWidth}`);
            return problems;
        }"""


def overflow_problems(page, box, width: int) -> list[str]:
    """At a window `width` px wide: anything of the panel past the window's right edge, a horizontal scrollbar on
    the notebook, a plot wider than its panel."""
    return box.evaluate(OVERFLOW_PROBLEMS_JS, width)


FITS_JS = """([el, box, width]) => {
        const w = el.querySelector('.main-svg').getBoundingClientRect().width;
        const panel = box.getBoundingClientRect().width;
        return w <= panel + 1 && w >= 0.9 * panel
            && (OVERFLOW)(box, width).length === 0 && (LAYOUT)(box).length === 0;
    }""".replace("OVERFLOW", OVERFLOW_PROBLEMS_JS).replace("LAYOUT", LAYOUT_PROBLEMS_JS)
FIT_TIMEOUT_MS = 20_000  # a relayout round trip to the kernel, on a busy machine; past it the problems are real


def fit_problems(page, box, width: int) -> list[str]:
    """Wait until the panel fits a `width` px window (its figure fills the panel, laid out again for it when it is
    laid out in px; nothing cut off, overlapping or past the edge); the problems left if it never does."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    plot = box.locator(".js-plotly-plot").first
    try:
        page.wait_for_function(
            FITS_JS, arg=[plot.element_handle(), box.element_handle(), width], timeout=FIT_TIMEOUT_MS
        )
    except PlaywrightTimeout:
        pass
    return overflow_problems(page, box, width) + layout_problems(box)


def toggle(box, label: str):
    """The toggle button labelled exactly `label` (ipywidgets puts an icon before the text: whitespace)."""
    return box.locator("button.widget-toggle-button", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")).first


def switch_view(page, box, label: str) -> float | None:
    """Press the toggle button `label` unless it is pressed already; wait until the figure's title changed.
    Returns the seconds from the click to the new title (None: it was pressed already)."""
    button = toggle(box, label)
    if "mod-active" in (button.get_attribute("class") or ""):
        return None
    plot = box.locator(".js-plotly-plot").first
    before = plot_state(box)["title"]
    t0 = time.monotonic()
    button.click()
    wait_plot(page, plot, "([el, t]) => el.layout.title.text !== t", before)
    return time.monotonic() - t0


def check_widths(page, panels: list, timings: dict, received: list) -> None:
    """Resize the window to each of WIDTHS around already drawn panels (name, box, views) of one notebook: each must
    fit each width (its figure laid out again for it), with no control or plot cut off. At VIEW_WIDTHS each
    panel's `views` (toggle-button labels) are pressed in turn and checked the same way. Screenshots at each
    width, and of every view at the narrowest. Records per panel the seconds from the resize until it fits, the
    slowest view switch (click to new title) and the largest message the kernel sent for it (while its views
    switched; a notebook's only panel: also while it was laid out again)."""
    clicks: dict[str, list[float]] = {name: [] for name, _, _ in panels}
    largest: dict[str, int] = dict.fromkeys(clicks, 0)

    def note(name: str, mark: int) -> None:
        largest[name] = max([largest[name]] + [n for n, lib in received[mark:] if not lib])

    for width in WIDTHS:
        mark = len(received)
        page.set_viewport_size({"width": width, "height": 1800})  # a stacked panel whole in its screenshot
        t0 = time.monotonic()
        for name, box, _ in panels:  # all of them laid out again at once: each one's time from the resize
            problems = fit_problems(page, box, width)
            timings[f"{name}_fit_{width}px_s"] = round(time.monotonic() - t0, 3)
            show(box)
            shoot(box, f"{name}_{width}px.png")
            assert not problems, (name, width, problems)
        if len(panels) == 1:
            note(panels[0][0], mark)
        for name, box, views in panels if width in VIEW_WIDTHS else ():
            for label in views:
                view_mark = len(received)
                took = switch_view(page, box, label)
                if took is None:
                    continue
                clicks[name].append(took)
                problems = fit_problems(page, box, width)
                note(name, view_mark)
                if width == WIDTHS[0]:
                    show(box)
                    shoot(box, f"{name}_{width}px_{re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')}.png")
                assert not problems, (name, label, width, problems)
    page.set_viewport_size({"width": 1400, "height": 1600})
    for name in clicks:
        if clicks[name]:
            timings[f"{name}_view_click_max_s"] = round(max(clicks[name]), 3)
        timings[f"{name}_largest_ws_received_bytes"] = largest[name]


def record_websockets(page) -> tuple[list[int], list[tuple[int, bool]]]:
    """Lists that fill with the size of every websocket message the page sends, and of every one it receives
    with whether it is plotly.js itself (sent once per kernel, not a panel's)."""
    sent, received = [], []

    def size(payload) -> int:
        return len(payload.encode()) if isinstance(payload, str) else len(payload)

    def library(payload) -> bool:
        # its state's bytes travel as a buffer, named in buffer_paths (every figure's own JS module mentions
        # "_plotly_js" too, so the name alone would not tell them apart)
        head = payload[:200_000]
        return ('["_plotly_js"]' in head) if isinstance(head, str) else (b'["_plotly_js"]' in head)

    def on_websocket(ws):
        ws.on("framesent", lambda payload: sent.append(size(payload)))
        ws.on("framereceived", lambda payload: received.append((size(payload), library(payload))))

    page.on("websocket", on_websocket)
    return sent, received


def show(box) -> None:
    """Scroll a panel to the top of the notebook's own scroll area (the page itself never scrolls)."""
    box.evaluate("e => e.scrollIntoView({block: 'start'})")


def shoot(target, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / name))
