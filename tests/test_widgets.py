"""Panels driven without a browser: set a control's value (or send a click), assert on the figure."""

import json
import re
import threading
import time

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from conftest import tiny_llama
from plotly.offline import get_plotlyjs

from gptviz import GPT, GPTConfig, plots, sinusoidal_encoding
from gptviz.data import TokenDataset
from gptviz.plots.explorer import BARS_GAP_PX, HEATMAP_PX, TITLE_LEGEND_PX, explorer_figure, explorer_layout
from gptviz.positions import position_scores
from gptviz.records import ForwardRecord
from gptviz.sampling import generate
from gptviz.steps import generate_steps
from gptviz.tokenizers import CharTokenizer, get_tokenizer
from gptviz.train import TrainConfig, Trainer
from gptviz.widgets import (
    AttentionExplorer,
    GenerationExplorer,
    LogitLensPanel,
    PositionalEncodingExplorer,
    TrainingDashboard,
)
from gptviz.widgets._base import FIGURE_WIDTH, Busy, ChunkedTraining, Panel, unpack
from gptviz.widgets._figure import PlotlyFigure, PlotlyLibrary, to_state

TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
    "The quick brown fox jumps over the lazy dog. 人工智能科学家\n"
)


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("char", text=TEXT)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=3, n_embd=24)).eval()


def z_of(trace):
    return unpack(trace.z)  # panels send 2-D arrays packed (binary float32)


def split_buffers(obj, buffers=None):
    """(state without its bytes, the bytes): what the widget comm sends as JSON and as binary buffers."""
    buffers = [] if buffers is None else buffers
    if isinstance(obj, (bytes, bytearray, memoryview)):
        buffers.append(obj)
        return None, buffers
    if isinstance(obj, dict):
        return {k: split_buffers(v, buffers)[0] for k, v in obj.items()}, buffers
    if isinstance(obj, (list, tuple)):
        return [split_buffers(v, buffers)[0] for v in obj], buffers
    return obj, buffers


def comm_safe(fig):
    """The figure's widget state as the comm sends it must be valid JSON (no NaN: masked cells are NaN), its
    arrays in binary buffers."""
    state, buffers = split_buffers(fig.widget.get_state())
    json.dumps(state, allow_nan=False)
    assert buffers, "numeric arrays travel as binary buffers"


def click(fig, trace_index, point_index, x=None, y=None):
    """What the browser sends on a click (gptviz/static/plotly_figure.js): one small message per click."""
    fig.widget.receive(
        {
            "type": "click",
            "points": [{"curve": trace_index, "point": point_index, "x": x, "y": y, "customdata": None}],
            "state": {"button": 0},
        }
    )


def test_attention_explorer_follows_layer_head_and_clicks(model, tok):
    p = AttentionExplorer(model, tok, "But soft, what light")
    att = p.trace("attention")
    p.layer.value, p.head.value = 1, 2
    T = p.record.T
    lower = np.tril(np.ones((T, T), dtype=bool))
    np.testing.assert_allclose(z_of(att)[lower], p.record.attention[1, 2].numpy()[lower], rtol=1e-6)
    assert "layer 1, head 2" in p.figure.layout.title.text and "layer 1, head 2" in p.head_info.value
    # the focus token (last by default): its row and column as bars
    np.testing.assert_allclose(p.trace("looks_at").y, p.record.attention[1, 2, T - 1].numpy(), rtol=1e-6)
    # click the grid's thumbnail of layer 0, head 1 -> that head opens
    heads = p.trace("heads")
    i = next(j for j, (l, h) in enumerate(heads.customdata) if (l, h) == (0, 1))
    click(p.figure, 3, i)
    assert (p.layer.value, p.head.value) == (0, 1)
    np.testing.assert_allclose(z_of(att)[lower], p.record.attention[0, 1].numpy()[lower], rtol=1e-6)
    assert p.figure.layout.shapes[0].x0 == plots.selected_head_shape(0, 1, T)["x0"]
    # click heatmap row 4 -> token 4 is focused; bars show where it looks and who looks at it
    click(p.figure, 0, [4, 2], x=2, y=4)
    assert p.token.value == 4
    np.testing.assert_allclose(p.trace("looks_at").y[:5], p.record.attention[0, 1, 4, :5].numpy(), rtol=1e-6)
    np.testing.assert_allclose(p.trace("looked_at_by").y[4:], p.record.attention[0, 1, 4:, 4].numpy(), rtol=1e-6)
    assert p.last_error is None


def test_attention_explorer_text_sink_and_errors(model, tok):
    p = AttentionExplorer(model, tok, "ROMEO:")
    p.text.value = "It is the east, and Juliet is the sun."
    assert p.record.T == 38 and z_of(p.trace("attention")).shape == (38, 38)
    assert p.token.value == 37 and "38 tokens" in p.status.value
    p.hide_first.value = True
    z = z_of(p.trace("attention"))
    assert np.isnan(z[:, 0]).all()
    np.testing.assert_allclose(np.nansum(z[1:], axis=1), 1.0, rtol=1e-5)
    assert "sink hidden" in p.figure.layout.title.text
    comm_safe(p.figure)
    before = z_of(p.trace("attention"))
    p.text.value = "ÆØÅ"  # not in the char vocabulary: the message shows, the view stays
    assert "reads only the" in p.error.value and "Ø" in p.error.value and "Traceback" not in p.error.value
    assert p.plot.stale  # the old figure greyed out while the message shows
    np.testing.assert_array_equal(z_of(p.trace("attention")), before)
    p.text.value = "the sun"
    assert p.error.value == "" and p.record.T == 7


def test_attention_explorer_long_input_is_windowed(model, tok):
    p = AttentionExplorer(model, tok, TEXT[:60], max_tokens=40)
    assert z_of(p.trace("attention")).shape == (40, 40)
    assert "showing last 40 of 60 tokens" in p.figure.layout.title.text
    assert "heatmap shows the last 40 of 60" in p.status.value
    assert p.token.options[0][1] == 20  # focus choices stay inside the window


def pixel_box(fig, axis: str, yaxis: str | None = None) -> tuple[float, float]:
    """Width and height in pixels of a subplot (axes x{axis}, y{yaxis or axis}), from its axes' domains and the
    figure's size and margins."""
    lay = fig.layout
    x, y = lay[f"xaxis{axis}"].domain or (0, 1), lay[f"yaxis{axis if yaxis is None else yaxis}"].domain or (0, 1)
    pw = lay.width - lay.margin.l - lay.margin.r
    ph = lay.height - lay.margin.t - lay.margin.b
    return (x[1] - x[0]) * pw, (y[1] - y[0]) * ph


@pytest.mark.parametrize("n", [10, 40, 60])
def test_attention_explorer_layout(model, tok, n):
    """The figure fills the panel: a square heatmap (square cells) of HEATMAP_PX, its colour bar beside it,
    the grid and this head's scores in the column on the right, every token labelled up to 48."""
    p = AttentionExplorer(model, tok, TEXT[:n])
    fig = p.figure
    assert fig.layout.width == FIGURE_WIDTH
    w, h = pixel_box(fig, "")
    assert w == pytest.approx(HEATMAP_PX) and h == pytest.approx(HEATMAP_PX)
    pw = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    bar = p.trace("attention").colorbar
    assert 0 < (bar.x - fig.layout.xaxis.domain[1]) * pw <= 12, "the colour bar sits right next to the heatmap"
    assert bar.len * (fig.layout.height - fig.layout.margin.t - fig.layout.margin.b) == pytest.approx(HEATMAP_PX)
    right = fig.layout.xaxis2.domain
    assert right[0] > bar.x and fig.layout.xaxis3.domain[0] == right[0]  # grid and scores share a column
    gw, gh = pixel_box(fig, "2")
    S = plots.grid_cells(n)
    assert gh / gw == pytest.approx((2 * (S + 1) + 1) / (3 * (S + 1) + 1))  # the 2 x 3 thumbnails, undistorted
    assert fig.layout.xaxis4.domain == (0, 1)  # the bars span the width
    if n <= 48:
        assert list(fig.layout.xaxis.ticktext) == [plots.short(t, 8) for t in p.record.tokens]
    else:  # every second token, with its position
        assert fig.layout.xaxis.ticktext[1] == f"2:{plots.short(p.record.tokens[2], 6)}"
    numbers = p.trace("attention").texttemplate
    assert (numbers == "%{z:.2f}") == (n == 10)  # big cells print their weight
    # the selected head is outlined from the first draw on (not only after a change)
    first = fig.layout.shapes[0]
    assert (first.xref, first.line.color, first.x0) == ("x2", plots.CHOSEN, plots.selected_head_shape(0, 0, n)["x0"])


def test_attention_explorer_figure_in_a_narrower_width(model, tok):
    record = AttentionExplorer(model, tok, "the sun").record
    fig = explorer_figure(record, 0, 0, width=760)  # a smaller heatmap, still square, domains inside 0..1
    w, h = pixel_box(fig, "")
    assert w == pytest.approx(h, rel=1e-3) and 300 <= w < HEATMAP_PX and fig.layout.xaxis3.domain[1] == 1
    assert explorer_layout(6, 6, 20, 760)["mode"] != "stacked"
    # narrower (a projector at 800 px, a split screen): heatmap, bars, grid and scores one under the other
    fig = explorer_figure(record, 0, 0, width=480)
    box = explorer_layout(record.n_layer, record.n_head, 20, 480)
    assert box["mode"] == "stacked"
    w, h = pixel_box(fig, "")
    assert w == pytest.approx(h, rel=1e-3) and w >= 200
    heat_y, bars_y, grid_y, scores_y = (fig.layout[a].domain for a in ("yaxis", "yaxis4", "yaxis2", "yaxis3"))
    assert heat_y[0] > bars_y[1] and bars_y[0] > grid_y[1] and grid_y[0] > scores_y[1]  # top to bottom
    assert all(0 <= v <= 1 for a in ("xaxis", "xaxis2", "xaxis3", "xaxis4") for v in fig.layout[a].domain)
    with pytest.raises(ValueError, match="needs a width of at least"):
        explorer_figure(record, 0, 0, width=300)


def test_attention_explorer_scores_follow_the_head(model, tok):
    p = AttentionExplorer(model, tok, "But soft, what light")
    p.layer.value, p.head.value = 1, 2
    scores = p.trace("metrics")
    expected = [float(p.metrics[k][1, 2]) for k in ("previous_token", "induction", "entropy", "first_token")]
    np.testing.assert_allclose([np.nan if v is None else v for v in scores.x], expected, rtol=1e-6)
    assert "layer 1, head 2" in p.figure.layout.xaxis3.title.text
    comm_safe(p.figure)  # an undefined score (NaN) travels as None


def test_the_widget_state_is_the_figure_as_it_is_now(model, tok):
    """A view draws from the widget's state: a figure changed before the panel was shown (generated in the
    constructor, a head picked in code) must draw as it is now, not stale or empty."""
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=3, generate_now=False)
    g.run()
    bundle = g._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    data, layout = drawn(g.plot)
    assert layout["title"]["text"].startswith("Step 0")
    assert [t["type"] for t in data] == [t.type for t in g.figure.data]
    p = AttentionExplorer(model, tok, "the sun")
    p.layer.value = 1
    data, layout = drawn(p.plot)
    assert "layer 1, head 0" in layout["title"]["text"]
    assert (data, layout) == (drawn(PlotlyFigure(p.figure))), "base + patch = the figure sent whole"
    z = data[0]["z"]  # float32 bytes, sent as a binary buffer
    assert isinstance(z["bdata"], bytes) and z["dtype"] == "f4"
    np.testing.assert_array_equal(
        np.frombuffer(z["bdata"], "<f4").reshape(p.record.T, p.record.T), z_of(p.trace("attention"))
    )


def drawn(widget) -> tuple[list, dict]:
    """What the browser draws from the widget's state (gptviz/static/plotly_figure.js): the base with the
    patch's properties on top."""
    state = widget.get_state()
    data, layout, patch = state["_fig_data"], state["_fig_layout"], state["_fig_patch"]
    if patch.get("base") != state["_fig_base"]:
        return data, layout

    def patched(base, diff):
        if diff is None:
            return base
        out = {**base, **diff["set"]}
        return {k: v for k, v in out.items() if k not in diff["unset"]}

    return (
        [patched(data[i] if i < len(data) else {}, patch["traces"].get(str(i))) for i in range(patch["n"])],
        patched(layout, patch["layout"]),
    )


def sent_messages(widget) -> list[tuple[dict, list]]:
    """Record what `widget` sends to the browser from now on (the comm's messages: state updates)."""
    sent = []
    widget.comm.send = lambda data=None, buffers=None, **kw: sent.append((data, list(buffers or [])))
    return sent


def message_bytes(data: dict, buffers: list) -> int:
    return len(json.dumps(data)) + sum(memoryview(b).nbytes for b in buffers)


def test_figure_messages_stay_small_and_plotly_js_travels_once(tok):
    """12 x 12 heads, 128 tokens: the whole figure is far under Jupyter's 10 MiB websocket limit (the panel's
    budget is 1 MB), a head change sends only what changed (not the grid, not the heatmap's hover text), and
    plotly.js is one widget per kernel, never part of a figure's state."""
    torch.manual_seed(0)
    big = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=12, n_head=12, n_embd=48)).eval()
    p = AttentionExplorer(big, tok, (TEXT * 2)[:128])
    state, buffers = split_buffers(p.plot.get_state())
    assert "_plotly_js" not in state and message_bytes(state, buffers) < 1_000_000
    sent = sent_messages(p.plot)
    p.select(3, 5)
    assert len(sent) == 1, "one state update per head change"
    data, buffers = sent[0]
    assert set(data["state"]) == {"_fig_patch"} and message_bytes(data, buffers) < 100_000
    assert set(data["state"]["_fig_patch"]["traces"]["0"]["set"]) == {"z"}  # the heatmap: only its numbers
    p.hide_first.value = True  # the grid changes too: still far under the limit
    assert all(message_bytes(d, b) < 1_000_000 for d, b in sent)
    lib = PlotlyLibrary.shared()
    assert PlotlyFigure(go.Figure()) is not None and PlotlyLibrary.shared() is lib  # still one per kernel
    assert lib.get_state()["_plotly_js"] == get_plotlyjs().encode() and "_plotly_js" not in p.plot.keys


def test_figure_widget_clicks_reach_only_their_traces():
    w = PlotlyFigure(go.Figure([go.Bar(y=[1, 2, 3], customdata=[7, 8, 9]), go.Scatter(y=[3, 2, 1])]))
    got = []
    w.on_click(lambda trace, points, state: got.append(("bar", trace.customdata[points.point_inds[0]])), traces=[0])
    w.on_click(lambda trace, points, state: got.append(("any", points.trace_index, points.xs, state.shift)))
    w.receive({"type": "click", "points": [{"curve": 0, "point": 2, "x": 2, "y": 3}], "state": {"shift": True}})
    w.receive({"type": "click", "points": [{"curve": 1, "point": 0, "x": 0, "y": 3}]})
    w.receive({"type": "click", "points": [{"curve": 5, "point": 0}]})  # a trace that is gone: ignored
    assert got == [("bar", 9), ("any", 0, [2], True), ("any", 1, [0], None)]
    w.receive({"type": "error", "message": "plotly.js could not draw"})
    assert w.last_js_error == "plotly.js could not draw"
    w.set_figure(go.Figure(go.Heatmap(z=[[1.0, float("nan")]]), layout={"title": "new"}))
    data, layout = drawn(w)
    assert [t["type"] for t in data] == ["heatmap"] and layout["title"]["text"] == "new"
    assert data[0]["z"] == [[1.0, None]]  # NaN in lists travels as None
    assert "customdata" not in data[0]  # nothing of the bar is left


def test_head_change_is_fast_on_12x12_heads_128_tokens(tok):
    torch.manual_seed(0)
    big = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=12, n_head=12, n_embd=192)).eval()
    p = AttentionExplorer(big, tok, (TEXT * 2)[:128])
    times = []
    for layer, head in [(3, 5), (7, 2), (11, 11), (0, 4), (5, 5)]:
        t0 = time.perf_counter()
        p.layer.value = layer
        p.head.value = head
        times.append((time.perf_counter() - t0) / 2)  # two updates per iteration
    np.testing.assert_allclose(z_of(p.trace("attention"))[127, :3], big_row(p, 5, 5), rtol=1e-6)
    print(f"layer/head update, 12x12 heads, T=128: median {1000 * np.median(times):.1f} ms")
    assert np.median(times) < 0.25  # the goal is < 0.1 s; the margin absorbs a busy CI machine


def big_row(p, layer, head):
    return p.record.attention[layer, head, 127, :3].numpy()


def test_positional_encoding_explorer(model):
    p = PositionalEncodingExplorer(T=32, C=16)
    assert [v for _, v in p.view.options] == [
        "sinusoidal",
        "waves",
        "rotary",
        "rotary_scores",
        "similarity",
    ]  # no model: the formulas only
    np.testing.assert_allclose(z_of(p.figure.data[0]), sinusoidal_encoding(32, 16)[:, 0::2].numpy(), atol=1e-6)
    p.view.value = "waves"
    p.dim.value = 4
    dots = [t for t in p.figure.data if t.mode == "markers"]
    np.testing.assert_allclose(dots[0].y, sinusoidal_encoding(32, 16)[:, 4].numpy(), atol=1e-6)
    assert p.dim.layout.display == "" and p.layer.layout.display == "none"
    m = PositionalEncodingExplorer(model, T=20)
    m.view.value = "learned"
    np.testing.assert_allclose(z_of(m.figure.data[0]), model.wpe.weight[:20].detach().numpy(), atol=1e-6)
    m.view.value = "scores"
    m.layer.value, m.head.value = 1, 2
    scores = position_scores(model, 20)
    lower = np.tril(np.ones((20, 20), dtype=bool))
    np.testing.assert_allclose(z_of(m.figure.data[0])[lower], scores[1, 2].numpy()[lower], rtol=1e-5)
    assert m.last_error is None


def test_positional_encoding_explorer_rotary_views(tok):
    """RoPE beside sinusoidal and learned: rd and theta on sliders without a model, a rotary model's own settings
    with one, and its heads' q·k against distance."""
    from gptviz.positions import rope_angles, rope_head_scores, rope_relative_scores

    p = PositionalEncodingExplorer(T=32, C=16)
    p.view.value = "rotary"
    p.rd.value, p.theta.value = 16, 100.0
    np.testing.assert_allclose(z_of(p.figure.data[0]), np.cos(rope_angles(16, 32, theta=100.0)), atol=1e-6)
    assert p.rd.layout.display == p.theta.layout.display == "" and p.distance.layout.display == "none"
    p.view.value = "rotary_scores"
    p.distance.value = 256
    expected = rope_relative_scores(16, 256, theta=100.0)
    ones = next(t for t in p.figure.data if t.name == "all-ones vector")
    np.testing.assert_allclose(ones.y, expected.ones_fraction[1:], rtol=1e-6)  # log axis: Δ = 1..256
    assert p.figure.layout.xaxis.type == "log" and f"below ½ at Δ={expected.first_below(0.5)}" in p.status.value
    p.log_x.value = False
    ones = next(t for t in p.figure.data if t.name == "all-ones vector")
    assert ones.x[0] == 0 and ones.y[0] == 1.0 and p.figure.layout.xaxis.type == "linear"
    assert p.T.layout.display == "none" and p.last_error is None

    torch.manual_seed(0)
    m = GPT(
        GPTConfig(
            vocab_size=tok.vocab_size,
            block_size=64,
            n_layer=2,
            n_head=4,
            n_kv_head=2,
            n_embd=32,
            pos_encoding="rotary",
            rotary_dim=4,
            rope_theta=500.0,
        )
    ).eval()
    r = PositionalEncodingExplorer(m, T=20)
    views = [v for _, v in r.view.options]
    assert r.view.value == "rotary" and "rotary_head" in views and "scores" not in views and "learned" not in views
    assert r.rd.disabled and r.theta.disabled and (r.rd.value, r.theta.value) == (4, 500.0)
    assert "turns 4 of each head's 8 dims with θ=500" in r.caption
    np.testing.assert_allclose(z_of(r.figure.data[0]), np.cos(rope_angles(m, 20)), atol=1e-6)
    r.view.value = "rotary_head"
    r.layer.value, r.head.value = 1, 3
    head = rope_head_scores(m, r.distance.value, 1, 3)
    mean = next(t for t in r.figure.data if t.name == "average over tokens")
    np.testing.assert_allclose(mean.y, head.scores.mean(0), rtol=1e-5)
    assert len(mean.x) == 64 and "reads key/value head 1" in r.figure.layout.title.text  # cropped to the block
    assert r.layer.layout.display == "" and r.rd.layout.display == "none" and r.last_error is None


def test_generation_timeline_and_fork(model, tok):
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=8, k=5)
    g.top_k.value = 3
    g.generate_button.click()
    main = g.branches[0]
    assert len(main.steps) == 8 and g.step.max == 7 and g.last_error is None
    g.step.value = 3
    s = main.steps[3]
    assert "Step 3" in g.figure.layout.title.text
    np.testing.assert_allclose(g.figure.data[0].y, s.stages[0].probs.numpy(), rtol=1e-6)
    row = g.figure.data[-1]
    np.testing.assert_allclose(row.y, s.attention[-1].mean(0).numpy(), rtol=1e-6)  # last layer, mean of heads
    g.head.value = 1
    np.testing.assert_allclose(g.figure.data[-1].y, s.attention[-1, 1].numpy(), rtol=1e-6)
    # click the 2nd candidate of step 3: a new branch continues from prompt + chosen[:3] + [clicked]
    other = int(s.candidates[1]) if int(s.candidates[0]) == s.token_id else int(s.candidates[0])
    j = s.candidates.tolist().index(other)
    click(g.figure, 0, j)
    assert len(g.branches) == 2 and g.active == 1 and g.step.value == 3
    fork = g.branches[1]
    n = len(main.prompt_ids)
    assert fork.ids[: n + 3] == main.ids[: n + 3] and fork.ids[n + 3] == other and len(fork.steps) == 8
    assert fork.fork_step == 3 and fork.parent == 0
    assert [st.step for st in fork.steps] == list(range(8))
    assert "forked, you chose" in g.figure.layout.title.text
    assert "fork of 0 at step 3" in g.branches_html.value and "0: main" in g.branches_html.value
    g.branch.value = 0  # the main branch drives the timeline again
    assert "chose" in g.figure.layout.title.text and "forked" not in g.figure.layout.title.text


def test_generation_beam_search_shows_final_text(model, tok):
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=5, generate_now=False)
    g.beams.value = 3
    g.sample.value = False
    g.generate_button.click()
    assert g.last_error is None and g.step.disabled
    assert "no single step" in g.figure.layout.annotations[0].text
    assert "beam search, 3 beams" in g.branches_html.value


KNOBS = dict(do_sample=True, temperature=0.7, top_k=4, top_p=0.8, repetition_penalty=1.3, no_repeat_ngram_size=2)


def test_generation_takes_its_knobs_in_the_constructor(model, tok):
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=12, k=5, seed=3, **KNOBS)
    assert (
        g.sample.value,
        g.temperature.value,
        g.top_k.value,
        g.top_p.value,
        g.repetition_penalty.value,
        g.no_repeat_ngram.value,
        g.seed.value,
    ) == (True, 0.7, 4, 0.8, 1.3, 2, 3)
    ids = tok.encode("ROMEO:")
    same = [s.token_id for s in generate_steps(model, ids, 12, k=5, seed=3, **KNOBS)]
    other_seed = [s.token_id for s in generate_steps(model, ids, 12, k=5, seed=0, **KNOBS)]
    assert same != other_seed, "precondition: the seed changes this sample, so the check below can fail"
    steps = g.branches[0].steps
    assert [s.token_id for s in steps] == same and g.last_error is None
    assert [st.name for st in steps[0].stages] == [
        "raw",
        "repetition_penalty",
        "no_repeat_ngram",
        "temperature",
        "top_k",
        "top_p",
    ]
    assert all(s.stage("top_k").kept <= 4 for s in steps)
    # one bar trace per stage, the row of ✕ for removed candidates, the attention row: drawn at once
    assert len(g.figure.data) == 6 + 1 + 1


def test_generation_beams_from_the_constructor(model, tok):
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=5, do_sample=False, num_beams=3)
    assert g.beams.value == 3 and g.step.disabled and g.last_error is None
    out = generate(model, torch.tensor([tok.encode("ROMEO:")]), 5, num_beams=3)[0, 6:].tolist()
    assert "beam search, 3 beams" in g.branches_html.value
    assert tok.decode(out).replace("\n", "") in re.sub(r"<[^>]+>", "", g.branches_html.value).replace("\n", "")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.5), "temperature must be a number from 0.0 to 2.0 (0 = greedy"),
        (dict(temperature=float("nan")), "temperature must be a number from 0.0 to 2.0"),
        (dict(top_k=-1), "top_k must be an integer from 0 to"),
        (dict(top_k=2.5), "top_k must be an integer"),
        (dict(top_k=10_000), "top_k must be an integer from 0 to"),
        (dict(top_p=0.0), "top_p must be a number from 0.01 to 1.0"),
        (dict(top_p=1.5), "top_p must be a number from 0.01 to 1.0"),
        (dict(repetition_penalty=0.5), "repetition_penalty must be a number from 1.0 to 2.0"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be an integer from 0 to 6 (0 = off)"),
        (dict(num_beams=0), "num_beams must be an integer from 1 to 8"),
        (dict(max_new_tokens=0), "max_new_tokens must be an integer from 1 to 400"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(seed="0"), "seed must be an integer >= 0"),
        (dict(do_sample="yes"), "do_sample must be True (sample) or False (greedy)"),
        (dict(k=0), "k (candidates shown per step) must be an integer >= 1"),
    ],
)
def test_generation_rejects_bad_knobs_with_the_allowed_range(model, tok, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GenerationExplorer(model, tok, "ROMEO:", generate_now=False, **kwargs)


def test_generation_names_every_bad_knob_at_once(model, tok):
    with pytest.raises(ValueError, match="temperature.*; top_p.*; num_beams"):
        GenerationExplorer(model, tok, "ROMEO:", temperature=-1, top_p=2, num_beams=99)
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=2, top_k=None, temperature=0)  # None/0: off/greedy
    assert g.top_k.value == 0 and g.temperature.value == 0 and g.last_error is None


def test_generation_figure_fills_the_panel(model, tok):
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=3)
    assert g.figure.layout.width == FIGURE_WIDTH
    title = g.figure.layout.title.text
    assert title.startswith("Step 0") and "entropy" in title.split("<br>")[1]
    first_line = title.split("<br>")[0]
    assert len(first_line) < 100, "the title's first line must fit the figure's width"


def tiny_trainer(tok, tmp_path, steps=40):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    data = TokenDataset.from_text(TEXT * 4, tok)
    cfg = TrainConfig(
        batch_size=4,
        block_size=16,
        max_steps=steps,
        warmup_steps=2,
        eval_interval=4,
        eval_batches=1,
        snapshot_interval=4,
        device="cpu",
        probe_text="ROMEO:\nBut soft",
        out_dir=str(tmp_path / "run"),
    )
    # each step pauses a little, so a background run is reliably still going when the test presses buttons
    return Trainer(m, tok, data, data, cfg, on_step=lambda trainer, stats: time.sleep(0.03))


def test_training_dashboard_run_start_stop_save(tok, tmp_path):
    tr = tiny_trainer(tok, tmp_path)
    d = TrainingDashboard(tr, chunk=4, sample_every=2, sample_tokens=10)
    stats = d.run(8)
    assert len(stats) == 8 and tr.step == 8
    train = d.figure.data[0]
    assert list(train.y) == [s.loss for s in tr.history]
    val = d.figure.data[1]
    assert list(val.x) == [4, 8]
    assert d.snapshot.max == len(tr.snapshots) - 1 == 2 and d.snapshot.value == 2  # follows the latest
    np.testing.assert_allclose(
        z_of(d.figure.data[3])[-1, :2], tr.snapshots[2].record.attention[0, 0, -1, :2].numpy(), rtol=1e-6
    )
    d.snapshot.value = 0  # scrub back to step 0
    assert "step 0" in d.figure.layout.annotations[-1].text
    assert "Sample at step 8" in d.sample_html.value and "tokens/s" in d.status.value
    # background run, stopped from "the kernel" while it trains
    d.start(30)
    assert d.running and d.start_button.disabled
    with pytest.raises(RuntimeError, match="already running"):
        d.run(1)
    d.start_button.disabled = False  # a second click (e.g. from another view) is refused in the panel
    d.start_button.click()
    assert "already running" in d.error.value and "Unexpected" not in d.error.value
    d.stop()
    d.wait(60)
    assert not d.running and 8 < tr.step < 38 and not d.resume_button.disabled
    d.resume()
    d.wait(60)
    assert tr.step == 38 and d.resume_button.disabled and d.last_error is None
    d.path.value = str(tmp_path / "ckpt")
    d.save_button.click()
    assert (tmp_path / "ckpt" / "model.safetensors").exists() and "saved step 38" in d.status.value


def test_switching_views_sends_the_new_layout_whole(model):
    """The browser draws each view from the whole new layout (Plotly.react), so nothing of the last view stays:
    the score view's matrix keeps its column, the similarity view's scaleanchor is gone."""
    p = PositionalEncodingExplorer(model, T=20)
    p.view.value = "similarity"
    sent = sent_messages(p.plot)
    p.view.value = "scores"
    expected = plots.position_score_contribution(position_scores(model, 20), 0, 0, width=FIGURE_WIDTH)
    assert p.figure.layout.to_plotly_json() == expected.layout.to_plotly_json()
    assert len(sent) == 1
    _, layout = drawn(p.plot)
    assert layout == to_state(expected.layout.to_plotly_json())
    assert layout["xaxis"]["domain"][1] < 0.6 and "scaleanchor" not in layout["yaxis"]


def test_every_panel_figure_fills_the_panel(model, tok, tmp_path):
    """Every view of every panel is laid out for the panel's width (FIGURE_WIDTH before the browser measured
    it) or has none (the widget sizes it to its container), and each heatmap's colour bar sits right beside it."""
    from test_plots import colourbar_gaps

    def check(fig, what):  # laid out for the panel's width, or none: the widget fills its container
        assert fig.layout.width in (FIGURE_WIDTH, None), what
        if fig.layout.width is not None:  # a figure sized by its container: the browser test measures its gaps
            assert all(0 < g <= 30 for g in colourbar_gaps(fig)), (what, colourbar_gaps(fig))

    check(LogitLensPanel(model, tok, "the sun").figure, "logit lens")
    pe = PositionalEncodingExplorer(model, T=20)
    for _, view in pe.view.options:
        pe.view.value = view
        check(pe.figure, view)
    assert pe.last_error is None
    w, h = pixel_box(pe.figure, "")  # "scores": the score matrix stays square
    assert w == pytest.approx(h)
    d = TrainingDashboard(tiny_trainer(tok, tmp_path, steps=4), chunk=4, sample_every=10)
    check(d.figure, "dashboard before any snapshot")
    d.run(4)
    check(d.figure, "dashboard")
    w, h = pixel_box(d.figure, "2", "3")  # the snapshot's heatmap: square, its colour bar beside it
    assert w == pytest.approx(h) and colourbar_gaps(d.figure) == [pytest.approx(10)]


class FakeTrainer:
    """What ChunkedTraining uses of a Trainer. Like Trainer.train_steps, a chunk clears a stop requested before
    it (so Stop between chunks must be the loop's own doing) and returns early on one requested during it.
    `fail_at`: the chunk reaching that step raises; `gate`: every step first waits for it (a slow step)."""

    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None):
        self.step, self.interrupted, self._stop = 0, False, False
        self.fail_at, self.gate, self.chunks = fail_at, gate, []

    def request_stop(self) -> None:
        self._stop = True

    def train_steps(self, n: int) -> list:
        self._stop, self.interrupted, done = False, False, []
        for _ in range(n):
            if self.gate is not None:
                assert self.gate.wait(10), "the test never opened the gate"
            if self._stop:
                break
            self.step += 1
            if self.step == self.fail_at:
                raise RuntimeError(f"boom at step {self.step}")
            done.append(self.step)
        self.chunks.append(len(done))
        return done


def chunk_loop(trainer, chunk=4, after_chunk=None):
    """A bare panel and its ChunkedTraining, recording what the loop tells the panel."""
    panel = Panel([], go.Figure(), "a test panel")
    told = {"buttons": [], "states": [], "steps": []}

    def after():
        told["steps"].append(trainer.step)
        if after_chunk:
            after_chunk()

    loop = ChunkedTraining(panel, lambda: trainer, lambda: chunk, after, told["buttons"].append, told["states"].append)
    return panel, loop, told


def test_chunked_training_runs_chunks_and_stops_between_them():
    trainer = FakeTrainer()
    panel, loop, told = chunk_loop(trainer)
    assert loop.run(10) == list(range(1, 11))  # the StepStats of every step (here: step numbers)
    assert trainer.chunks == [4, 4, 2] and told["steps"] == [4, 8, 10]
    assert told["states"] == ["running"] * 3 + ["done"] and told["buttons"] == [True, False]
    # Stop pressed between chunks: the next chunk would clear the trainer's own stop, the loop must not start it
    trainer = FakeTrainer()
    panel, loop, told = chunk_loop(trainer, after_chunk=lambda: loop.stop())
    loop.start(12)
    loop.wait(10)
    assert trainer.step == 4 and told["states"][-1] == "stopped" and not loop.running
    assert told["buttons"] == [True, False] and loop.target == 12
    loop.after_chunk = lambda: None
    loop.resume()  # finishes the stopped run
    loop.wait(10)
    assert trainer.step == 12 and told["states"][-1] == "done" and panel.last_error is None
    with pytest.raises(ValueError, match="nothing to resume"):
        loop.resume()


def test_chunked_training_stop_right_after_start_and_one_run_at_a_time():
    gate = threading.Event()
    trainer = FakeTrainer(gate=gate)
    panel, loop, told = chunk_loop(trainer)
    loop.start(8)
    assert loop.running and told["buttons"] == [True]
    with pytest.raises(Busy, match="already running"):
        loop.run(1)
    with pytest.raises(Busy, match="already running"):
        loop.start(1)
    loop.stop()  # before the thread's first step, or during it: either way it counts
    gate.set()
    loop.wait(10)
    assert trainer.step == 0 and told["states"][-1] == "stopped" and told["buttons"] == [True, False]


def test_chunked_training_error_shows_in_the_panel_and_the_buttons_go_idle():
    trainer = FakeTrainer(fail_at=6)
    panel, loop, told = chunk_loop(trainer)
    loop.start(12)
    loop.wait(10)
    assert "Unexpected error (RuntimeError" in panel.error.value and "boom at step 6" in panel.error.value
    assert any("boom at step 6" in o.get("text", "") for o in panel.details.outputs)  # the traceback
    assert not loop.running and told["buttons"] == [True, False] and told["steps"] == [4]
    trainer.fail_at = None
    loop.start(2)  # the panel is usable again
    loop.wait(10)
    assert trainer.step == 8 and told["states"][-1] == "done"
    trainer.fail_at = 9  # a synchronous run raises to its caller, and also leaves the buttons idle
    with pytest.raises(RuntimeError, match="boom at step 9"):
        loop.run(4)
    assert not loop.running and told["buttons"][-1] is False


def test_logit_lens_panel(model, tok):
    p = LogitLensPanel(model, tok, "the sun", max_positions=16)
    np.testing.assert_allclose(z_of(p.figure.data[0]), p.lens.top_probs.numpy(), rtol=1e-6)
    p.colour.value = "next"
    np.testing.assert_allclose(z_of(p.figure.data[0])[:, :-1], p.lens.next_probs[:, :-1].numpy(), rtol=1e-6)
    p.text.value = "It is the east"
    assert len(p.lens.tokens) == 14 and z_of(p.figure.data[0]).shape == (3, 14)
    comm_safe(p.figure)  # the last position has no true next token: NaN
    p.text.value = ""
    assert "empty" in p.error.value


def test_every_panel_exports_offline_html(model, tok, tmp_path):
    panels = [
        AttentionExplorer(model, tok, "the sun"),
        PositionalEncodingExplorer(model, T=16),
        LogitLensPanel(model, tok, "the sun"),
        GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=4),
    ]
    for i, p in enumerate(panels):
        page = p.export_html(tmp_path / f"p{i}.html").read_text(encoding="utf-8")
        assert "<script src" not in page and p.title in page and p.caption[:30] in page
    assert "ROMEO:" in (tmp_path / "p3.html").read_text(encoding="utf-8")  # the branches travel with the figure


def test_unexpected_errors_are_shown_not_swallowed(model, tok):
    p = LogitLensPanel(model, tok, "the sun")

    def broken(change):
        raise TypeError("boom")

    p.colour.observe(p.guarded(broken), names="value")
    p.colour.value = "next"
    assert "Unexpected error (TypeError" in p.error.value and isinstance(p.last_error, TypeError)
    assert any("boom" in o.get("text", "") for o in p.details.outputs)


# ---- grouped-query attention and deep models in the attention explorer ------------------------------------
@pytest.fixture(scope="module")
def gqa_model(tok):
    """A tiny Llama-style model: 4 query heads reading 2 key/value heads (heads 0, 1 share kv head 0; 2, 3 kv 1)."""
    return tiny_llama(tok.vocab_size)


def kv_lines(fig) -> list:
    return [s for s in fig.layout.shapes if s.type == "line" and s.xref == "x2"]


def test_attention_explorer_shows_which_heads_share_a_kv_head(gqa_model, tok):
    p = AttentionExplorer(gqa_model, tok, "But soft, what light")
    S = plots.grid_cells(p.record.T)
    assert "GQA: 2 kv heads, each shared by 2 query heads" in p.status.value and "nh=4 heads" in p.status.value
    assert "Grouped-query attention" in p.caption and "kv head h // 2" in p.caption
    [line] = kv_lines(p.figure)  # between head 1 and head 2, in the grid's axes
    assert line.x0 == 2 * (S + 1) - 1 and line.yref == "y2"
    assert [a.text for a in p.figure.layout.annotations if a.text.startswith("kv")] == ["kv head 0", "kv head 1"]
    heads = p.trace("heads")
    i = next(j for j, (l, h) in enumerate(heads.customdata) if (l, h) == (1, 3))
    assert "layer 1, head 3</b> · kv head 1 (shares with 2)" in heads.hovertext[i]
    click(p.figure, 3, i)  # open head 3: title, hover and scores' line name its kv head
    assert (p.layer.value, p.head.value) == (1, 3)
    assert "layer 1, head 3 · kv head 1 (shares with 2)" in p.figure.layout.title.text
    assert "kv head 1 (shares with 2)" in p.trace("attention").hovertemplate
    assert "head 3 · kv head 1 (shares with 2):" in p.head_info.value
    p.head.value = 0
    assert "kv head 0 (shares with 1)" in p.trace("attention").hovertemplate
    # the group line outlives head and focus changes (the panel redraws only its first three shapes)
    p.token.value = 3
    assert len(kv_lines(p.figure)) == 1 and p.figure.layout.shapes[0].line.color == plots.CHOSEN
    p.text.value = "the sun"  # a new record: the whole figure is rebuilt, markings included
    assert len(kv_lines(p.figure)) == 1 and "GQA" in p.status.value
    comm_safe(p.figure)
    assert p.last_error is None


def test_attention_explorer_without_gqa_shows_no_kv_groups(model, tok):
    p = AttentionExplorer(model, tok, "But soft, what light")
    assert p.kv_groups is None and not kv_lines(p.figure)
    assert [a.text for a in p.figure.layout.annotations] == ["all heads (L × nh): click one to open it"]
    text = " ".join(
        [
            p.status.value,
            p.caption,
            p.head_info.value,
            p.figure.layout.title.text,
            p.trace("attention").hovertemplate,
            *p.trace("heads").hovertext,
        ]
    )
    assert "kv head" not in text and "GQA" not in text and "Grouped-query" not in text


def boxes_px(fig) -> dict[str, tuple[float, float, float, float]]:
    """Each part's box (left, top, right, bottom) in pixels of the plot area, top down."""
    lay = fig.layout
    pw, ph = lay.width - lay.margin.l - lay.margin.r, lay.height - lay.margin.t - lay.margin.b
    out = {}
    for name, n in (("heatmap", ""), ("grid", "2"), ("scores", "3"), ("bars", "4")):
        x, y = lay[f"xaxis{n}"].domain, lay[f"yaxis{n}"].domain
        out[name] = (x[0] * pw, (1 - y[1]) * ph, x[1] * pw, (1 - y[0]) * ph)
    return out


def apart(a, b, gap: float = 0) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def deep_record(L: int, nh: int, n_kv: int | None, T: int = 14):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(L, nh, T, T, generator=g).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -1e9)
    return ForwardRecord(
        ids=torch.arange(T) % 5,
        tokens=[f"t{i}" for i in range(T)],
        attention=scores.softmax(-1),
        top_ids=torch.zeros(T, 1, dtype=torch.long),
        top_probs=torch.ones(T, 1),
        top_tokens=[["t0"]] * T,
        meta={"config": {"n_kv_head": n_kv}},
    )


def test_a_deep_models_grid_runs_down_the_right_side():
    """SmolLM2-shaped (30 layers x 9 heads, 3 kv heads): the grid takes the right column's whole height with
    thumbnails ~3x what fitting it beside the heatmap gave, every head and layer labelled; no two parts overlap."""
    record = deep_record(30, 9, 3)
    fig = explorer_figure(record, 4, 5)
    S = plots.grid_cells(14)
    box = explorer_layout(30, 9, S, grouped=True)
    assert box["mode"] == "tall" and box["pitch_px"] >= 24  # ~3x the 9 px a compact layout gave
    parts = boxes_px(fig)
    assert parts["grid"][3] - parts["grid"][1] > 2 * HEATMAP_PX * 0.8  # far taller than the heatmap
    for a, b in [("heatmap", "grid"), ("bars", "grid"), ("scores", "grid"), ("bars", "scores"), ("heatmap", "bars")]:
        assert apart(parts[a], parts[b], 20), (a, b, parts[a], parts[b])
    assert list(fig.layout.xaxis2.ticktext) == [str(h) for h in range(9)]
    assert list(fig.layout.yaxis2.ticktext) == [str(l) for l in range(30)]
    assert fig.data[3].marker.size == pytest.approx(box["thumb_px"]) and box["thumb_px"] >= 22
    assert len(kv_lines(fig)) == 2 and "kv head 1 (shares with 3, 4)" in fig.layout.title.text
    # GPT-2-sized (12 x 12, no GQA) keeps the compact layout: grid above the scores, bars across the width
    gpt2 = explorer_figure(deep_record(12, 12, None), 0, 0)
    assert explorer_layout(12, 12, S)["mode"] == "compact" and gpt2.layout.xaxis4.domain == (0, 1)
    assert gpt2.layout.xaxis3.domain[0] == gpt2.layout.xaxis2.domain[0] and not kv_lines(gpt2)
    parts = boxes_px(gpt2)
    assert all(apart(parts[a], parts[b], 20) for a, b in [("heatmap", "grid"), ("grid", "scores"), ("scores", "bars")])


def test_long_key_labels_push_the_legend_and_bars_down():
    """Upright key labels (long tokens) used to reach into the legend row; the bars start below them now."""

    def bars_gap(layout):
        return (1 - layout["bars"][1][1]) * layout["plot_height"] - layout["heatmap_px"]

    assert bars_gap(explorer_layout(2, 3, 10)) == pytest.approx(BARS_GAP_PX)
    assert bars_gap(explorer_layout(2, 3, 10, key_labels_px=90)) == pytest.approx(90 + TITLE_LEGEND_PX)
    record = deep_record(2, 3, None, T=20)
    record.tokens = ["␣sunshine" * 2] * 20  # shortened to 8 characters on the axis
    fig = explorer_figure(record, 0, 0)
    ph = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert (1 - fig.layout.legend.y) * ph - HEATMAP_PX > BARS_GAP_PX


def test_panels_lay_out_again_for_the_width_the_browser_reports(model, tok):
    p = AttentionExplorer(model, tok, "the sun is up")
    assert p.figure.layout.width == FIGURE_WIDTH  # before the browser has measured anything
    p.plot.receive({"type": "resize", "width": 1404})
    assert p.figure.layout.width == 1400 and explorer_layout(6, 6, 20, 1400)["mode"] != "stacked"
    p.plot.receive({"type": "resize", "width": 484})  # a narrow window: stacked, nothing wider than it
    assert p.figure.layout.width == 480 and p.last_error is None
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=3)
    g.plot.receive({"type": "resize", "width": 704})
    assert g.figure.layout.width == 700 and g.last_error is None


def test_out_of_range_values_are_refused_not_clamped(model, tok):
    with pytest.raises(ValueError, match="layer 10 does not exist.*0 to"):
        AttentionExplorer(model, tok, "the sun", layer=10)
    p = AttentionExplorer(model, tok, "the sun")
    with pytest.raises(ValueError, match="head 99 does not exist"):
        p.select(0, 99)
    with pytest.raises(ValueError, match="T=1000"):
        PositionalEncodingExplorer(model, T=1000)


def test_generation_knobs_redraw_the_step_at_once(model, tok):
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=6, top_k=0, seed=1)
    before = [s.token_id for s in g.branches[0].steps]
    g.step.value = 2
    recorded = g.branches[0].steps[2]
    g.top_k.value = 2  # no Generate: the same tokens, the step's stages computed again
    assert [s.token_id for s in g.branches[0].steps] == before
    shown, _ = g.shown_step()
    assert [st.name for st in shown.stages] == ["raw", "top_k"] and shown.stages[-1].kept == 2
    np.testing.assert_allclose(shown.stages[0].probs, recorded.stages[0].probs, atol=1e-5)  # same raw logits
    assert (shown.stages[-1].probs > 0).sum() == 2
    assert "drawn again" in g.status.value and "Generate" in g.figure.layout.title.text
    removed = [t for t in g.figure.data if t.type == "scatter"][0]
    assert len(removed.x) == len(recorded.candidates) - 2  # every candidate top-k removed has its ✕
    g.temperature.value = 0.5
    assert [st.name for st in g.shown_step()[0].stages] == ["raw", "temperature", "top_k"]
    g.run()  # Generate samples again with the knobs: the preview ends
    assert g.preview is None and all(s.stage("top_k").kept == 2 for s in g.branches[0].steps)


def test_beams_say_that_they_cleared_the_forks(model, tok):
    g = GenerationExplorer(model, tok, "ROMEO:", max_new_tokens=4)
    g.fork(1, int(g.branches[0].steps[1].candidates[1]))
    g.beams.value = 2
    g.run()
    assert "2 branches (forks included)" in g.status.value and "beams = 1" in g.status.value


# ---- attribution, neurons, embedding map, lens ranks (issue 17) --------------------------------------------------
def test_attribution_panel_computes_steps_when_shown(model, tok, tmp_path):
    from gptviz.widgets import AttributionPanel

    p = AttributionPanel(model, tok, "ROMEO:\nBut", max_new_tokens=5, method="grad_x_input")
    assert p.last_error is None and p.step.max == 4 and list(p._steps) == [0] and p.record is None
    p.step.value = 3
    rec, row = p.step_record(3)
    cells = z_of(p.figure.data[0]).reshape(-1)
    np.testing.assert_allclose(cells[: rec.positions[row]], rec.row(row).numpy(), rtol=1e-5)
    p.view.value = "matrix"
    assert p.record is not None and z_of(p.figure.data[0]).shape == (5, len(p.ids))
    comm_safe(p.figure)  # NaN (not yet written) travels in binary buffers
    p.method.value = "occlusion"  # same generation, new attributions
    assert p.record.method == "occlusion" and p.last_error is None
    p.new_tokens.value = 3
    assert p.step.max == 2 and z_of(p.figure.data[0]).shape[0] == 3
    p.prompt.value = ""
    assert "empty" in p.error.value
    page = p.export_html(tmp_path / "attr.html").read_text(encoding="utf-8")
    assert "<script src" not in page and p.title in page


def test_neuron_panel_views(model, tok, tmp_path):
    from gptviz.widgets import NeuronPanel

    p = NeuronPanel(model, tok, "the sun is the east", layer=1, corpus=TEXT * 2)
    assert p.neuron.value == p.record.strongest(1, 1)[0][0]
    np.testing.assert_allclose(
        z_of(p.figure.data[0]).reshape(-1)[: len(p.record.tokens)],
        p.record.neuron(1, p.neuron.value).numpy(),
        rtol=1e-5,
    )
    p.view.value = "top"
    assert (1, p.neuron.value) in p._tops and "Where neuron" in p.figure.layout.title.text
    p.view.value = "factors"
    assert z_of(p.figure.data[0]).shape == (6, len(p.record.tokens))
    p.factor.value = 2
    assert "factor 2" in p.figure.layout.title.text
    p.n_factors.value = 3
    assert p.factor.value == 2 and p.factors().weights.shape[1] == 3
    p.n_factors.value = 2
    assert p.factor.value == -1 and p.last_error is None  # factor 2 is gone: back to all factors
    p.layer.value = 0
    assert p.record.layers == [0] and p.last_error is None
    p.neuron.value = 5
    p.view.value = "text"
    p.strongest.click()
    assert p.neuron.value == p.record.strongest(0, 1)[0][0]
    assert p.title in p.export_html(tmp_path / "n.html").read_text(encoding="utf-8")


def test_embedding_map_panel(model, tok, tmp_path):
    from gptviz.widgets import EmbeddingMapPanel

    p = EmbeddingMapPanel(model, tok, text=TEXT)
    assert list(p.colour.options) == ["class", "id", "log count"] and p.figure.data[0].type == "scatter"
    p.kind.value = "positions"
    assert p.colour.value == "position" and "nearest neighbour" in p.status.value and p.last_error is None
    p.dims.value = 3
    assert p.figure.data[1].type == "scatter3d"
    assert p.title in p.export_html(tmp_path / "e.html").read_text(encoding="utf-8")
    rotary = EmbeddingMapPanel(tiny_llama(tok.vocab_size), tok)
    assert [v for _, v in rotary.kind.options] == ["tokens"]  # a rotary model has no position vectors


def test_logit_lens_panel_ranks(model, tok):
    p = LogitLensPanel(model, tok, "the sun is", colour="rank")
    np.testing.assert_allclose(z_of(p.figure.data[0])[:, :-1], -np.log10(p.lens.ranks[:, :-1].numpy()), rtol=1e-6)
    p.colour.value = "top"
    np.testing.assert_allclose(z_of(p.figure.data[0]), p.lens.top_probs.numpy(), rtol=1e-6)


def test_a_12x12_head_model_on_256_tokens_stays_under_1_mb_per_message():
    """The issue's size: every panel's figure state (what the first message carries) stays under 1 MB; the
    browser test measures the real websocket messages."""
    from gptviz.widgets._figure import _weight

    text = ("ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun. " * 3)[
        :256
    ]
    tok = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=12, n_head=12, n_embd=96)).eval()
    for panel in (AttentionExplorer(m, tok, text), PositionalEncodingExplorer(m, T=256)):
        size = _weight(panel.plot._fig_data) + _weight(panel.plot._fig_layout)
        assert size < 1_000_000, (type(panel).__name__, size)
