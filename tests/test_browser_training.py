"""The training dashboard during Run All, in JupyterLab in a real browser: Stop works while the cell trains.

A small notebook (a tiny model, a slow step so the run lasts) is run with Run > Run All Cells. While its cell
awaits `dashboard.train(...)`, the test presses the dashboard's Stop button as a user would; the run must end
early (not when all steps are done), the status must say "stopped" and offer Resume, and the cell after it
must then run (Run All goes on). Then the stopped dashboard must fit windows of 800, 1,000 and 1,400 px
(`check_widths`); its timings (Stop to "stopped", fit per width, the largest message the kernel sent meanwhile)
join tests/artifacts/browser/timings.json. The JupyterLab server, the page helpers and Chromium come from
tests/browser_page.py.
"""

from __future__ import annotations

import json
import re
import time

import nbformat
import pytest
from browser_page import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    Lab,
    _require_browser,
    assert_no_error_outputs,
    check_widths,
    open_notebook,
    panel,
    record_websockets,
    shoot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = 100_000  # far more than the test waits for: only Stop can end the run in time
CELLS = [
    "import time, torch\nfrom gptviz import GPT, GPTConfig, get_tokenizer\nfrom gptviz.data import TokenDataset\n"
    "from gptviz.train import Trainer, TrainConfig\nfrom gptviz.widgets import TrainingDashboard\n"
    "text = 'ROMEO:\\nBut soft, what light through yonder window breaks?\\n' * 20\n"
    "tok = get_tokenizer('char', text=text)\ntorch.manual_seed(0)\n"
    "m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))\n"
    "data = TokenDataset.from_text(text, tok)\n"
    "cfg = TrainConfig(batch_size=2, block_size=16, max_steps=10**6, warmup_steps=2, eval_interval=0,\n"
    "                  snapshot_interval=0, device='cpu', probe_text='ROMEO:')\n"
    "tr = Trainer(m, tok, data, data, cfg, on_step=lambda t, s: time.sleep(0.02))",
    "dashboard = TrainingDashboard(tr, chunk=5, sample_every=10**6, sample_tokens=4)\ndashboard",
    f"stats = await dashboard.train({STEPS})\nprint('TRAINED', len(stats))",
    "print('AFTER TRAINING', tr.step)",
]


def status_text(box) -> str:
    return box.locator(".widget-html").filter(has_text=re.compile(r"step \d+")).first.inner_text()


@pytest.mark.timeout(420)
def test_stop_during_run_all_stops_the_training_cell(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    lab = Lab(tmp_path)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "stop_during_run_all.ipynb")
    try:
        lab.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _, received = record_websockets(page)
            open_notebook(page, lab, "stop_during_run_all.ipynb", timeout_ms=UI_TIMEOUT_MS * 3)
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            box = panel(page, "Training dashboard")
            stop = box.get_by_role("button", name=re.compile("Stop"))
            # training has begun and the status says so (not "ready")
            page.wait_for_function(
                "el => /training · step [1-9]\\d* of /.test(el.innerText)",
                arg=box.element_handle(),
                timeout=UI_TIMEOUT_MS * 2,
            )
            assert stop.is_enabled(), "Stop must be live while a cell awaits dashboard.train(...)"
            shoot(box, "training_during_run_all.png")
            t0 = time.monotonic()
            stop.click()
            page.wait_for_function(
                "el => /stopped · press Resume/.test(el.innerText)", arg=box.element_handle(), timeout=UI_TIMEOUT_MS
            )
            stopped_in = time.monotonic() - t0
            # the training cell returned early and Run All went on to the next cell
            page.wait_for_function("() => /AFTER TRAINING \\d+/.test(document.body.innerText)", timeout=UI_TIMEOUT_MS)
            body = page.inner_text("body")
            trained = int(re.search(r"TRAINED (\d+)", body).group(1))
            assert 0 < trained < STEPS
            status = status_text(box)
            assert "of 100000" in status and "press Resume" in status, status
            assert box.get_by_role("button", name=re.compile("Resume")).is_enabled() and not stop.is_enabled()
            shoot(box, "training_stopped_during_run_all.png")
            assert_no_error_outputs(page, "stop_during_run_all.ipynb")
            timings = {"training_dashboard_stop_click_s": round(stopped_in, 3)}
            check_widths(page, [("training_dashboard", box, ())], timings, received)
            browser.close()
        print(f"Stop during Run All: stopped after {trained} steps, {stopped_in:.2f} s after the click")
        path = ARTIFACTS / "timings.json"  # the e2e test's, when it ran first: this test's keys join them
        path.write_text(json.dumps({**(json.loads(path.read_text()) if path.exists() else {}), **timings}, indent=1))
        print("training dashboard timings:", json.dumps(timings))
    finally:
        lab.stop()
    assert (ARTIFACTS / "training_stopped_during_run_all.png").exists()
