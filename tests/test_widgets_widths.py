"""Panels in narrow windows, without a browser: tell a panel the width its container has (what the browser sends on
a resize) and check that every view is laid out for it: titles wrap to the room they have, the plot starts below
the title's last line, parts side by side go one under the other. The browser test measures the real thing."""

import re

import numpy as np
import pytest
import torch
from test_finetune import LM_TEXT, TEST, TRAIN, tiny_gpt, train_config
from test_widgets import TEXT, tiny_trainer

from gptviz import GPT, GPTConfig, plots
from gptviz import finetune as ft
from gptviz.data import Corpus
from gptviz.plots.style import SUB_CHAR_PX, TITLE_CHAR_PX, text_px
from gptviz.tokenizers import get_tokenizer
from gptviz.widgets import (
    AttributionPanel,
    EmbeddingMapPanel,
    LogitLensPanel,
    NeuronPanel,
    PositionalEncodingExplorer,
    TrainingDashboard,
)
from gptviz.widgets._base import unpack
from gptviz.widgets.finetune import FinetunePanel

NARROW, WIDE = 368, 968  # a panel's width in an 800 px and a 1,400 px JupyterLab window (file browser open)


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("char", text=TEXT)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=3, n_embd=24)).eval()


def title_lines(title: str) -> list[tuple[str, float]]:
    """Each line of a figure title and about how wide it is drawn (px): the heading's lines, then the <sup> ones."""
    out = []
    for line in title.split("<br>"):
        text = re.sub(r"<[^>]+>", "", line)
        out.append((text, text_px(text, SUB_CHAR_PX if line.startswith("<sup>") else TITLE_CHAR_PX)))
    return out


def assert_fits(fig, width: int, what: str) -> int:
    """The figure's title fits `width` (a line longer than the room is one word), the plot starts below it, and a
    figure laid out in px is no wider than the panel. Returns the title's number of lines."""
    title = fig.layout.title.text or ""
    for text, px in title_lines(title):
        assert px <= width - 24 or " " not in text.strip(), (what, text, px, width)
    assert fig.layout.margin.t is None or fig.layout.margin.t >= plots.title_px(title), (what, fig.layout.margin.t)
    assert fig.layout.width is None or fig.layout.width <= width, (what, fig.layout.width)
    return len(title_lines(title))


def views_of(control) -> list:
    return [v for _, v in control.options]


def test_subtitle_wraps_the_heading_and_long_parts_to_the_room():
    parts = ("cell text = top token", "colour = probability of the true next token", "showing last 16 of 48 tokens")
    one = plots.subtitle("Logit lens: what each layer would predict next", *parts)
    assert one.count("<br>") == 1  # no room given: one line of parts under the heading, as before
    narrow = plots.subtitle("Logit lens: what each layer would predict next", *parts, max_px=200)
    assert narrow.split("<br>")[:3] == ["Logit lens: what each", "layer would predict", "next"]  # at spaces
    assert all(px <= 200 for _, px in title_lines(narrow))

    def words(title):  # what the title says, whatever its lines (a part starting a line loses its " · ")
        return [w for w in re.sub(r"<br>|<sup>|</sup>", " ", title).split() if w != "·"]

    assert words(narrow) == words(one)
    # a part alone longer than the room breaks at its spaces; a single word longer than it keeps its line
    long = plots.subtitle("T", "a" * 80, "b c " * 40, max_px=200)
    assert "<sup>" + "a" * 80 + "</sup>" in long and all(px <= 200 for t, px in title_lines(long) if " " in t)
    assert text_px("人工智能", 10) == pytest.approx(72)  # wide characters count 1.8


def test_newer_panels_lay_out_every_view_for_a_narrow_window(model, tok):
    panels = [
        (AttributionPanel(model, tok, "ROMEO:\nBut", max_new_tokens=4, method="grad_x_input"), "view"),
        (NeuronPanel(model, tok, "the sun is the east", layer=1, corpus=TEXT * 2), "view"),
        (EmbeddingMapPanel(model, tok, text=TEXT), "kind"),
        (LogitLensPanel(model, tok, "But soft, what light through yonder window", colour="rank"), "colour"),
        (PositionalEncodingExplorer(model, T=32), "view"),
    ]
    for p, name in panels:
        control = getattr(p, name)
        lines = {}
        for width in (NARROW, WIDE):
            p.plot.receive({"type": "resize", "width": width + 4})  # the panel lays out for its width - 4
            assert p.width == width
            for view in views_of(control):
                control.value = view
                assert p.last_error is None, (type(p).__name__, view, p.last_error)
                lines[width, view] = assert_fits(p.figure, width, f"{type(p).__name__} {view} at {width}")
        narrow = [lines[NARROW, v] for v in views_of(control)]
        wide = [lines[WIDE, v] for v in views_of(control)]
        assert sum(narrow) > sum(wide), (type(p).__name__, narrow, wide)  # titles wrapped for the narrow width


def test_narrow_views_stack_their_parts_and_show_what_fits(model, tok):
    pe = PositionalEncodingExplorer(model, T=32)
    pe.plot.receive({"type": "resize", "width": NARROW + 4})
    sin_y, cos_y = pe.figure.layout.yaxis.domain, pe.figure.layout.yaxis2.domain  # sin above cos
    assert sin_y[0] > cos_y[1] and pe.figure.layout.xaxis.domain == pe.figure.layout.xaxis2.domain
    pe.plot.receive({"type": "resize", "width": WIDE + 4})
    assert pe.figure.layout.xaxis.domain[1] < pe.figure.layout.xaxis2.domain[0]  # side by side again

    # a text wraps into shorter lines of token cells; the top contexts keep fewer tokens around the firing one
    n = NeuronPanel(model, tok, TEXT[:90], layer=0, corpus=TEXT * 3)
    wide_cols = unpack(n.figure.data[0].z).shape[1]
    n.plot.receive({"type": "resize", "width": NARROW + 4})
    assert unpack(n.figure.data[0].z).shape[1] < wide_cols
    n.view.value = "top"
    narrow_top = unpack(n.figure.data[0].z)
    n.plot.receive({"type": "resize", "width": WIDE + 4})
    wide_top = unpack(n.figure.data[0].z)
    assert narrow_top.shape[1] < wide_top.shape[1] and narrow_top.shape[1] >= 7
    firing = n.figure.layout.xaxis.tickvals[0]  # the outlined column: every example's firing token
    examples = n._tops[(0, n.neuron.value)].examples
    np.testing.assert_allclose(wide_top[:, firing], [e.value for e in examples], rtol=1e-5)


def test_finetune_panel_and_dashboard_stack_in_a_narrow_window(tmp_path):
    tok = get_tokenizer("char", text="abcdefgh xy\n" + LM_TEXT)
    corpus = Corpus("toy", LM_TEXT, LM_TEXT[:300], ["toy"], ["toy"])
    p = FinetunePanel(tiny_gpt(tok), tok, TRAIN, TEST, corpus, ft.FinetuneConfig(mode="full"), train_config(), chunk=2)
    p.run(2)
    for width, stacked in ((NARROW, True), (WIDE, False)):
        p.plot.receive({"type": "resize", "width": width + 4})
        text = "xab" if stacked else "yab"  # a new text: the panel switches to "your text"
        for attr, value in (("view", "training"), ("text", text), ("task", "lm"), ("view", "training")):
            getattr(p, attr).value = value
            assert p.last_error is None, (width, attr, value, p.last_error)
            fig = p.figure
            assert_fits(fig, width, f"finetune {p.task.value} {p.view.value} at {width}")
            first, second = fig.layout.yaxis.domain, fig.layout.yaxis2.domain
            # stacked: the second part under the first; side by side: both as tall
            assert (first[0] > second[1]) == stacked, (width, p.task.value, p.view.value, first, second)
        p.task.value = "classify"
    assert p.last_error is None

    d = TrainingDashboard(tiny_trainer(get_tokenizer("char", text=TEXT), tmp_path, steps=8), chunk=4)
    d.run(8)
    d.plot.receive({"type": "resize", "width": NARROW + 4})
    fig = d.figure
    assert fig.layout.width == NARROW and assert_fits(fig, NARROW, "dashboard")
    curves, heatmap = fig.layout.yaxis.domain, fig.layout.yaxis3.domain  # yaxis2: the learning rate's
    assert heatmap[1] < curves[0]  # the snapshot's heatmap under the loss curves
    d.plot.receive({"type": "resize", "width": WIDE + 4})
    assert d.figure.layout.width == WIDE and d.figure.layout.yaxis3.domain == (0, 1)  # beside them again


def test_checkpoint_diff_stacks_when_narrow(tok, model):
    from gptviz.records import record_forward

    before = record_forward(model, tok, "the sun is up")
    after = record_forward(GPT(model.config).eval(), tok, "the sun is up")
    fig = plots.checkpoint_diff(before, after, width=NARROW)
    assert fig.layout.width == NARROW and fig.layout.yaxis.domain[0] > fig.layout.yaxis2.domain[1]
    assert fig.layout.xaxis2.domain == (0, 1)  # the bars take the whole width under the heads' map
    with pytest.raises(ValueError, match="needs a width of at least 296 px"):
        plots.checkpoint_diff(before, after, width=280)
