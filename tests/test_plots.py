"""Pure plots and the HTML export: figures carry exactly the recorded numbers, long inputs are windowed."""

import math
import re
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from conftest import tiny_llama

from gptviz import GPT, GPTConfig, hooks, plots, sinusoidal_encoding
from gptviz.export import RawHTML, figure_to_html, figures_to_html
from gptviz.lens import logit_lens_record
from gptviz.positions import position_scores
from gptviz.records import ForwardRecord, record_forward
from gptviz.steps import generate_steps
from gptviz.tokenizers import get_tokenizer

TEXT = "The quick brown fox jumps over the lazy dog. 人工智能科学家\n"


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("char", text=TEXT)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=32)).eval()


@pytest.fixture(scope="module")
def record(model, tok):
    return record_forward(model, tok, "the fox jumps over the dog")


def fake_record(T, L=1, nh=1, seed=0):
    """A record with random causal attention, for sizes no tiny model reaches."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(L, nh, T, T, generator=g).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -1e9)
    return ForwardRecord(
        ids=torch.arange(T) % 7,
        tokens=[f"t{i}" for i in range(T)],
        attention=scores.softmax(-1),
        top_ids=torch.zeros(T, 1, dtype=torch.long),
        top_probs=torch.ones(T, 1),
        top_tokens=[["t0"]] * T,
    )


def z_of(trace):
    return np.array(trace.z, dtype=float)


def test_attention_heatmap_shows_the_recorded_pattern(record):
    fig = plots.attention_heatmap(record, 1, 2)
    z = z_of(fig.data[0])
    a = record.attention[1, 2].numpy()
    T = record.T
    lower = np.tril(np.ones((T, T), dtype=bool))
    np.testing.assert_allclose(z[lower], a[lower], rtol=1e-6)
    assert np.isnan(z[~lower]).all()  # masked cells are NaN (drawn grey), not zero
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0, 1)
    assert "layer 1, head 2" in fig.layout.title.text
    text = np.array(fig.data[0].text)
    assert text[3, 1] == f"3 {record.tokens[3]} → 1 {record.tokens[1]}"
    assert fig.layout.yaxis.autorange == "reversed"  # query 0 at the top
    with pytest.raises(ValueError, match="nh=4 heads"):
        plots.attention_heatmap(record, 0, 4)


def test_hiding_the_sink_renormalises_rows(record):
    z = plots.attention_matrix(record, 0, 1, hide_first=True)
    assert np.isnan(z[:, 0]).all()
    np.testing.assert_allclose(np.nansum(z[1:], axis=1), 1.0, rtol=1e-5)
    raw = plots.attention_matrix(record, 0, 1, hide_first=True, renormalize=False)
    np.testing.assert_allclose(raw[2, 1:3], record.attention[0, 1, 2, 1:3].numpy(), rtol=1e-6)


def test_long_inputs_are_windowed_and_say_so():
    r = fake_record(300)
    fig = plots.attention_heatmap(r, 0, 0)
    z = z_of(fig.data[0])
    assert z.shape == (plots.MAX_TOKENS, plots.MAX_TOKENS)
    assert "showing last 256 of 300 tokens" in fig.layout.title.text
    np.testing.assert_allclose(z[-1, -5:], r.attention[0, 0, -1, -5:].numpy(), rtol=1e-6)
    assert list(fig.data[0].x[:2]) == [44, 45]  # absolute positions


def test_grid_max_pools_long_inputs():
    r = fake_record(48, L=2, nh=3)
    image, S = plots.grid_image(r, thumb=24)
    assert S == plots.grid_cells(48, 24) == 24  # blocks of 2 x 2 tokens
    assert plots.grid_cells(50, 24) == 17 and plots.grid_cells(20, 24) == 20  # blocks of 3; no pooling
    assert image.shape == (2 * 25 - 1, 3 * 25 - 1)
    block = r.attention[1, 2, 10:12, 4:6].max().item()
    assert image[25 + 5, 2 * 25 + 2] == pytest.approx(block)
    assert np.isnan(image[24]).all()  # the gap row between layers
    fig = plots.attention_grid(r)
    marks = fig.data[2]
    assert marks.name == "heads" and len(marks.x) == 6
    assert "layer 1, head 2" in marks.hovertext[5] and "previous-token" in marks.hovertext[5]


def plot_area(fig) -> tuple[float, float]:
    """Width and height (px) of the plot area of a figure with a set size; margins the template's unless set."""
    lay = fig.layout
    m = {k: lay.margin[k] if lay.margin[k] is not None else lay.template.layout.margin[k] for k in "lrtb"}
    return lay.width - m["l"] - m["r"], lay.height - m["t"] - m["b"]


def colourbar_gaps(fig) -> list[float]:
    """Pixels from the right edge of each heatmap that shows a colour bar to its colour bar's left edge."""
    pw, _ = plot_area(fig)
    gaps = []
    for t in fig.data:
        if t.type == "heatmap" and t.showscale is not False:
            domain = fig.layout["xaxis" + (t.xaxis or "x")[1:]].domain or (0, 1)
            assert (t.colorbar.xanchor or "left") == "left"
            x = t.colorbar.x if t.colorbar.x is not None else 1.02  # plotly's default
            gaps.append((x - domain[1]) * pw)
    return gaps


@pytest.mark.parametrize("make", ["heatmap", "similarity"])
def test_square_heatmaps_have_their_colour_bar_beside_them(record, model, make):
    """A static square heatmap used to sit in the middle of the page with its colour bar ~250 px away: it is now
    laid out in pixels, the plot area the square itself, the colour bar right next to it."""
    build = {
        "heatmap": lambda **kw: plots.attention_heatmap(record, 1, 2, **kw),
        "similarity": lambda **kw: plots.position_similarity(model, 20, **kw),
    }[make]
    fig = build()
    w, h = plot_area(fig)
    assert w == h == plots.SQUARE_PX and fig.layout.xaxis.domain in (None, (0, 1))
    assert [round(g) for g in colourbar_gaps(fig)] == [10]
    assert fig.layout.width == fig.layout.margin.l + plots.SQUARE_PX + plots.COLOURBAR_PX
    wide = build(width=960)  # a panel's width: the same square, the room past the colour bar stays empty
    assert plot_area(wide) == (plots.SQUARE_PX, plots.SQUARE_PX) and wide.layout.width == 960
    narrow = build(width=500)
    assert plot_area(narrow)[0] == plot_area(narrow)[1] < plots.SQUARE_PX
    assert [round(g) for g in colourbar_gaps(narrow)] == [10]
    with pytest.raises(ValueError, match="needs a width of at least"):
        build(width=300)


def test_long_titles_wrap_to_the_figure_width():
    fig = plots.attention_heatmap(fake_record(300), 0, 0, hide_first=True)
    title = fig.layout.title.text
    lines = re.findall(r"<sup>(.*?)</sup>", title)
    assert len(lines) == 2 and "showing last 256 of 300 tokens" in title and "sink hidden" in title
    assert all(len(line) * plots.SUB_CHAR_PX <= fig.layout.width - 24 for line in lines)
    assert fig.layout.margin.t >= plots.title_px(title)  # the plot starts below the last line
    assert "<br>" not in plots.attention_title(fake_record(300), 0, 0, True, 44).split("<sup>")[1]  # no limit given


def test_attention_grid_is_sized_to_its_thumbnails(record):
    fig = plots.attention_grid(record)
    S = plots.grid_cells(record.T)
    w, h = plot_area(fig)
    assert h == pytest.approx(w * (2 * (S + 1) + 1) / (4 * (S + 1) + 1), abs=1)  # L=2 x nh=4, undistorted (to 1 px)
    assert max(w, h) == pytest.approx(plots.SQUARE_PX)
    assert fig.data[2].marker.size == pytest.approx(w / 4 * S / (S + 1))  # a hover target per thumbnail
    assert plot_area(plots.attention_grid(record, width=400))[0] == 400 - 64 - 16


def test_figures_with_two_heatmaps_keep_each_colour_bar_beside_its_own(model, tok, record):
    other = record_forward(GPT(model.config).eval(), tok, "the fox jumps over the dog")
    for fig in (
        plots.position_score_contribution(position_scores(model, 20), 1, 2),
        plots.checkpoint_diff(record, other),
    ):
        assert fig.layout.width == plots.WIDTH
        gaps = colourbar_gaps(fig)
        assert gaps and all(5 <= g <= 15 for g in gaps)
        pw, _ = plot_area(fig)
        # the next part starts past the colour bar and its labels
        assert (fig.layout.xaxis2.domain[0] - fig.layout.xaxis.domain[1]) * pw >= plots.COLOURBAR_PX
        assert fig.layout.xaxis2.domain[1] <= 1
    scores = plots.position_score_contribution(position_scores(model, 20), 0, 0)
    assert plot_area(scores)[0] * scores.layout.xaxis.domain[1] == pytest.approx(plot_area(scores)[1])  # square
    with pytest.raises(ValueError, match="needs a width of at least"):
        plots.checkpoint_diff(record, other, width=280)  # under ~700 px its parts stack; under 296 px no room


def test_head_metrics_heatmap(record):
    m = record.head_metrics()
    fig = plots.head_metrics_heatmap(record, m)
    assert [t.name for t in fig.data] == ["previous_token", "induction", "entropy", "first_token"]
    np.testing.assert_allclose(z_of(fig.data[0]), m["previous_token"].numpy(), rtol=1e-6)


def test_sinusoidal_views():
    fig = plots.sinusoidal_heatmap(16, 8)  # sin dimensions, then cos ones: no barcode of alternating columns
    assert [t.name for t in fig.data] == ["sin", "cos"]
    np.testing.assert_allclose(z_of(fig.data[0]), sinusoidal_encoding(16, 8)[:, 0::2].numpy(), atol=1e-6)
    np.testing.assert_allclose(z_of(fig.data[1]), sinusoidal_encoding(16, 8)[:, 1::2].numpy(), atol=1e-6)
    waves = plots.sine_waves(16, 8, (2, 3))
    dots = [t for t in waves.data if t.mode == "markers"]
    np.testing.assert_allclose(dots[1].y, sinusoidal_encoding(16, 8)[:, 3].numpy(), atol=1e-6)
    assert "cos" in dots[1].name and f"{2 * math.pi * 10000 ** (2 / 8):.1f}" in dots[1].name
    with pytest.raises(ValueError, match="outside 0..7"):
        plots.sine_waves(16, 8, (8,))


def test_position_views_of_a_model(model):
    sim = z_of(plots.position_similarity(model, 20).data[0])
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    learned = plots.learned_position_heatmap(model, max_positions=10)
    np.testing.assert_allclose(z_of(learned.data[0]), model.wpe.weight[:10].detach().numpy(), atol=1e-6)
    assert "first 10 of 64" in learned.layout.title.text
    sinus = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_encoding="sinusoidal"))
    with pytest.raises(ValueError, match="not learned"):
        plots.learned_position_heatmap(sinus)


def test_position_scores_equal_layer0_scores_without_tokens(model):
    """Independent check of the definition: zero the token embeddings, read layer 0's hook_scores."""
    T = 12
    scores = position_scores(model, T)  # (L, nh, T, T)
    seen = {}

    def zero(x, hook):
        return torch.zeros_like(x)

    def keep(x, hook):
        seen["s"] = x[0].detach()

    with torch.no_grad(), hooks(model, {"hook_embed": zero, "blocks.0.attn.hook_attn_scores": keep}):
        model(torch.zeros(1, T, dtype=torch.long))
    lower = torch.ones(T, T, dtype=torch.bool).tril()
    torch.testing.assert_close(scores[0][:, lower], seen["s"][:, lower], atol=1e-5, rtol=1e-5)
    assert torch.isnan(scores[0][:, ~lower]).all()
    fig = plots.position_score_contribution(scores, 1, 3)
    np.testing.assert_allclose(z_of(fig.data[0])[lower.numpy()], scores[1, 3][lower].numpy(), rtol=1e-5)
    spread = z_of(fig.data[1])
    assert spread.shape == (2, 4)
    expected = np.mean([scores[1, 3, t, : t + 1].std(unbiased=False).item() for t in range(1, T)])
    assert spread[1, 3] == pytest.approx(expected, rel=1e-4)
    with pytest.raises(TypeError, match="position_scores"):  # the view draws scores; it never runs the model
        plots.position_score_contribution(model, 1, 3)


def test_rope_angle_heatmap():
    from gptviz.positions import rope_angles

    fig = plots.rope_angle_heatmap(16, 24, theta=100.0)
    a = rope_angles(16, 24, theta=100.0)  # (T, rd/2)
    np.testing.assert_allclose(z_of(fig.data[0]), np.cos(a), atol=1e-12)
    custom = np.array(fig.data[0].customdata, dtype=float)  # hover: angle mod 2π, cos, wavelength
    np.testing.assert_allclose(custom[..., 0], np.mod(a, 2 * math.pi))
    np.testing.assert_allclose(custom[5, :, 2], 2 * math.pi * 100.0 ** (np.arange(0, 16, 2) / 16))
    assert "T=24 × rd/2=8, θ=100" in fig.layout.title.text
    wrapped = plots.rope_angle_heatmap(16, 24, theta=100.0, value="angle")
    z = z_of(wrapped.data[0])
    assert (0 <= z).all() and (z < 2 * math.pi).all() and wrapped.data[0].zmax == pytest.approx(2 * math.pi)
    rotary = GPT(
        GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16, pos_encoding="rotary", rope_theta=1e5)
    )
    assert "rd/2=4, θ=100000" in plots.rope_angle_heatmap(rotary, 8).layout.title.text  # the model's own settings
    with pytest.raises(ValueError, match="'cos' or 'angle'"):
        plots.rope_angle_heatmap(16, 8, value="sin")
    with pytest.raises(ValueError, match="not rotary"):
        plots.rope_angle_heatmap(GPTConfig(), 8)


def test_rope_score_heatmap_is_constant_along_diagonals():
    from gptviz.positions import rope_relative_scores

    fig = plots.rope_score_heatmap(16, 30)
    z = z_of(fig.data[0])
    curve = rope_relative_scores(16, 29).ones_fraction
    for d in (0, 3, 29):
        np.testing.assert_allclose(np.diagonal(z, -d), curve[d], atol=1e-5)  # query i, key i - d
    assert np.isnan(z[np.triu_indices(30, 1)]).all()  # keys after the query: masked, as in attention
    assert plot_area(fig) == (plots.SQUARE_PX, plots.SQUARE_PX) and [round(g) for g in colourbar_gaps(fig)] == [10]
    assert plots.rope_score_heatmap(16, 30, width=960).layout.width == 960


def test_rope_distance_scores_side_by_side():
    from gptviz.positions import rope_relative_scores

    base, slow = rope_relative_scores(64, 512, n_random=32), rope_relative_scores(64, 512, theta=1e5, n_random=32)
    fig = plots.rope_distance_scores([base, slow], width=960)
    assert fig.layout.width == 960 and fig.layout.xaxis.type == fig.layout.xaxis2.type == "log"
    assert [a.text for a in fig.layout.annotations][:2] == ["rd=64, θ=10000", "rd=64, θ=100000"]
    ones = [t for t in fig.data if t.name == "all-ones vector"]
    assert [t.xaxis for t in ones] == ["x", "x2"] and [t.showlegend for t in ones] == [True, False]
    np.testing.assert_allclose(ones[0].y, base.ones_fraction[1:])  # log axis: Δ = 1..D
    np.testing.assert_allclose(ones[1].y, slow.ones_fraction[1:])
    band = [t for t in fig.data if t.fill == "tonexty"][0]
    np.testing.assert_allclose(band.y, np.percentile(base.random_fraction[:, 1:], 10, axis=0))
    halves = [a.text for a in fig.layout.annotations if a.text.startswith("below")]
    assert halves == ["below ½ at Δ=28", "below ½ at Δ=59"]
    linear = plots.rope_distance_scores(base, log_x=False)
    assert linear.data[2].x[0] == 0 and linear.layout.xaxis.type == "linear"
    with pytest.raises(ValueError, match="at least one RopeScores"):
        plots.rope_distance_scores([])


def test_rope_head_distance():
    from gptviz.positions import rope_head_scores

    torch.manual_seed(0)
    m = GPT(
        GPTConfig(vocab_size=30, block_size=40, n_layer=1, n_head=4, n_kv_head=2, n_embd=32, pos_encoding="rotary")
    ).eval()
    r = rope_head_scores(m, 100, 0, 2, token_ids=[1, 7, 9])
    fig = plots.rope_head_distance(r)
    assert len(fig.data) == 4 and "reads key/value head 1" in fig.layout.title.text
    np.testing.assert_allclose(fig.data[-1].y, r.scores.mean(0), rtol=1e-6)
    np.testing.assert_allclose(fig.data[1].y, r.scores[1], rtol=1e-6)
    assert list(fig.data[0].x) == list(range(40))  # cropped to the block size


def test_step_candidates_and_attention_row(model, tok):
    steps = list(
        generate_steps(
            model,
            tok.encode("the fox"),
            3,
            do_sample=True,
            temperature=0.7,
            top_k=3,
            seed=1,
            k=6,
            record_attention=True,
            tokenizer=tok,
        )
    )
    s = steps[2]
    fig = plots.step_candidates(s)
    assert len(fig.data) - 1 == len(s.stages) == 3  # raw, temperature, top-k; then the row of ✕
    chosen = s.candidates.tolist().index(s.token_id)
    assert list(fig.data[0].marker.line.width)[chosen] == 3
    np.testing.assert_allclose(fig.data[0].y, s.stages[0].probs.numpy(), rtol=1e-6)
    topk = fig.data[2]  # candidates 4..6 are cut by top-k: no bar, and a ✕ under where their bar would be
    assert list(topk.y[3:]) == [0, 0, 0]
    colours = {t.marker.color for t in fig.data[:3]}
    assert len(colours) == 3 and all(isinstance(c, str) for c in colours)  # one clear colour per stage
    removed = fig.data[3]
    assert removed.type == "scatter" and removed.name == "removed by that stage" and len(removed.x) == 3
    assert all(y < 0 for y in removed.y)  # the row under the axis
    offset = (2 - 1) * 0.8 / 3  # the third of three bars in each candidate's group
    np.testing.assert_allclose(removed.x, np.array([3, 4, 5]) + offset, atol=1e-9)
    assert "top-k (had" in removed.hovertext[0] and list(removed.marker.line.color) == [topk.marker.color] * 3
    assert list(topk.customdata) == s.candidates.tolist()
    tokens = tok.tokens(tok.encode("the fox") + [x.token_id for x in steps])
    row = plots.attention_row(s, 1, 2, tokens)
    np.testing.assert_allclose(row.data[0].y, s.attention[1, 2].numpy(), rtol=1e-6)
    assert list(row.data[0].text) == tokens[: len(row.data[0].y)]
    mean = plots.attention_row(s, 0, None)
    np.testing.assert_allclose(mean.data[0].y, s.attention[0].mean(0).numpy(), rtol=1e-6)


@dataclass
class Stats:
    step: int
    loss: float
    lr: float
    val_loss: float | None = None


def test_loss_curves():
    stats = [Stats(i, 4.0 - 0.1 * i, 1e-3, 3.9 - 0.1 * i if i % 5 == 0 else None) for i in range(1, 21)]
    fig = plots.loss_curves(stats, vocab_size=65)
    train, val, lr = fig.data
    assert list(train.y) == [s.loss for s in stats]
    assert list(val.x) == [5, 10, 15, 20]
    assert lr.yaxis == "y2"
    assert fig.layout.shapes[0].y0 == pytest.approx(math.log(65))
    assert "step 20: train 2.000, val 1.900" in fig.layout.title.text


def test_logit_lens_last_layer_is_the_model_prediction(model, tok):
    ids = tok.encode("the lazy dog")
    model.train()  # the record runs in eval mode and gives the model back as it found it
    try:
        lens = logit_lens_record(model, tok, ids)
        assert model.training
    finally:
        model.eval()
    assert lens.layers == ["embed", "block 0", "block 1"]
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0]
    assert lens.top_ids[-1].tolist() == logits.argmax(-1).tolist()
    p = logits.softmax(-1)
    torch.testing.assert_close(lens.next_probs[-1, :-1], p[torch.arange(len(ids) - 1), ids[1:]], atol=1e-5, rtol=1e-4)
    fig = plots.logit_lens_figure(lens, "next", max_positions=5)
    assert z_of(fig.data[0]).shape == (3, 5)
    assert "showing last 5 of 12 tokens" in fig.layout.title.text
    with pytest.raises(ValueError):
        plots.logit_lens_figure(lens, "bogus")


def test_checkpoint_diff(model, tok, record):
    same = plots.head_change(record, record)
    assert np.allclose(same, 0)
    other = GPT(model.config).eval()
    after = record_forward(other, tok, "the fox jumps over the dog")
    change = plots.head_change(record, after)
    assert change.shape == (2, 4) and (change > 0).all()
    fig = plots.checkpoint_diff(record, after)
    np.testing.assert_allclose(z_of(fig.data[0]), change, rtol=1e-6)
    # a CheckpointDiff passes the head_change it holds: the same figure, computed once
    assert plots.checkpoint_diff(record, after, change=change).to_json() == fig.to_json()
    with pytest.raises(ValueError, match=r"must be head_change\(before, after\)"):
        plots.checkpoint_diff(record, after, change=change[:1])
    np.testing.assert_allclose(fig.data[2].y, after.top_probs[:, 0].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="same token ids"):
        plots.checkpoint_diff(record, record_forward(model, tok, "the dog"))


def test_export_is_offline_and_standalone(tmp_path, record):
    path = figure_to_html(plots.attention_heatmap(record, 0, 0), tmp_path / "a.html", "Tïtle <b>", "note & more")
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", page)  # nothing fetched: plotly.js is inlined
    assert page.count("plotly.js v") == 1 and "Tïtle &lt;b&gt;" in page and "note &amp; more" in page
    two = figures_to_html(
        [
            plots.attention_heatmap(record, 0, 0),
            RawHTML("<p id='x'>hi</p>"),
            go.FigureWidget(plots.sinusoidal_heatmap(8, 4)),
        ],
        tmp_path / "b.html",
    )
    page = two.read_text(encoding="utf-8")
    assert page.count("plotly.js v") == 1  # inlined once for the whole page
    assert "<p id='x'>hi</p>" in page and page.count("Plotly.newPlot") == 2
    with pytest.raises(ValueError, match=".html"):
        figure_to_html(go.Figure(), tmp_path / "a.png")


# ---- grouped-query attention and deep models in the attention views ---------------------------------------
@pytest.fixture(scope="module")
def gqa_record(tok):
    """A tiny Llama-style model: 4 query heads reading 2 key/value heads (heads 0, 1 share kv head 0; 2, 3 kv 1)."""
    model = tiny_llama(tok.vocab_size)
    return record_forward(model, tok, "the fox jumps over the dog")


def kv_lines(fig) -> list:
    return [s for s in fig.layout.shapes if s.type == "line"]


def test_grid_marks_the_heads_that_share_a_kv_head(gqa_record):
    r = gqa_record
    assert plots.attention.record_kv_groups(r) == [[0, 1], [2, 3]]
    fig = plots.attention_grid(r)
    S = plots.grid_cells(r.T)
    heads = fig.data[2]
    i = next(j for j, (l, h) in enumerate(heads.customdata) if (l, h) == (1, 2))
    assert "<b>layer 1, head 2</b> · kv head 1 (shares with 3)" in heads.hovertext[i]
    # one line, in the gap between head 1 and head 2, across every layer
    [line] = kv_lines(fig)
    assert line.x0 == line.x1 == 2 * (S + 1) - 1 and (line.y0, line.y1) == (-1.5, 2 * (S + 1) - 0.5)
    labels = [a for a in fig.layout.annotations if a.text.startswith("kv")]
    assert [a.text for a in labels] == ["kv head 0", "kv head 1"]
    assert labels[1].x == pytest.approx((2 + 3) / 2 * (S + 1) + (S - 1) / 2)  # over the middle of heads 2, 3
    assert "GQA: 2 kv heads, each shared by 2 query heads" in fig.layout.title.text
    assert fig.layout.margin.t >= plots.title_px(fig.layout.title.text) + plots.attention.GROUP_LABEL_PX
    # the single head names its kv head in the title and the hover
    heat = plots.attention_heatmap(r, 1, 2)
    assert "layer 1, head 2 · kv head 1 (shares with 3)" in heat.layout.title.text
    assert "kv head 1 (shares with 3)" in heat.data[0].hovertemplate
    # the metric maps: a white line between the groups in each map, the kv head in the hover
    metrics = plots.head_metrics_heatmap(r)
    assert [s.x0 for s in kv_lines(metrics)] == [1.5] * len(metrics.data)
    assert np.array(metrics.data[0].text)[0, 3] == " · kv head 1 (shares with 2)"


def test_views_of_a_model_without_gqa_are_unchanged(record, gqa_record):
    assert plots.attention.record_kv_groups(record) is None
    fig = plots.attention_grid(record)
    assert not kv_lines(fig) and not fig.layout.annotations
    assert not any("kv head" in t for t in fig.data[2].hovertext) and "GQA" not in fig.layout.title.text
    heat = plots.attention_heatmap(record, 1, 2)
    assert heat.layout.title.text.startswith("Attention of layer 1, head 2<br>")
    assert heat.data[0].hovertemplate == "%{text}: %{z:.3f}<extra></extra>"
    metrics = plots.head_metrics_heatmap(record)
    assert not kv_lines(metrics) and "GQA" not in metrics.layout.title.text
    # as many kv heads as heads, or a record that does not say: ordinary multi-head attention
    assert plots.attention.record_kv_groups(fake_record(4, nh=3)) is None
    same = fake_record(4, nh=3)
    same.meta["config"] = {"n_kv_head": 3}
    assert plots.attention.record_kv_groups(same) is None


def test_a_deep_grid_grows_taller_and_labels_every_head_and_layer():
    """SmolLM2's 30 layers x 9 heads: thumbnails of at least GRID_MIN_PITCH_PX (not squeezed into SQUARE_PX),
    every head and layer labelled, 3 kv groups marked."""
    r = fake_record(14, L=30, nh=9)
    r.meta["config"] = {"n_kv_head": 3}
    fig = plots.attention_grid(r)
    w, h = plot_area(fig)
    S = plots.grid_cells(14)
    assert plots.attention.grid_pitch_px(w, 9, S) >= plots.attention.GRID_MIN_PITCH_PX - 0.5
    assert h == pytest.approx(w * plots.attention.grid_aspect(30, 9, S), abs=1) and h > plots.SQUARE_PX
    assert list(fig.layout.xaxis.ticktext) == [str(i) for i in range(9)]
    assert list(fig.layout.yaxis.ticktext) == [str(i) for i in range(30)]
    assert len(kv_lines(fig)) == 2
    assert plot_area(plots.attention_grid(r, width=300))[0] == 300 - 64 - 16  # a given width still caps it


def test_crowded_grid_labels_line_up_with_the_kv_groups():
    r = fake_record(4, L=2, nh=32)
    r.meta["config"] = {"n_kv_head": 8}  # groups of 4 heads
    fig = go.Figure()
    plots.add_grid(fig, r, r.head_metrics(), pitch_px=8)  # too narrow for every label: the first of each group
    assert list(fig.layout.xaxis.ticktext) == [str(h) for h in range(0, 32, 4)]
    assert [a.text for a in fig.layout.annotations] == [f"kv {g}" for g in range(8)]  # short group labels
    plain = go.Figure()
    plots.add_grid(plain, fake_record(4, L=2, nh=32), {}, pitch_px=8)
    assert list(plain.layout.xaxis.ticktext) == [str(h) for h in range(0, 32, 3)]


def test_label_px_counts_wide_characters_as_a_full_em():
    assert plots.attention.label_px(["人工"], 10) == pytest.approx(20)
    assert plots.attention.label_px(["ab", "abcd"], 10) == pytest.approx(24.8)
    assert plots.attention.label_px([], 10) == 0


# ---- token colouring, attribution, neurons, embeddings, lens ranks (issue 17) ------------------------------------
def test_token_colours_lay_tokens_out_as_text():
    from gptviz.plots.tokens import token_lines

    tokens = ["R", "O", "↵", "B", "u", "t"]
    assert token_lines(tokens) == [[0, 1, 2], [3, 4, 5]]  # a newline token ends its line
    assert token_lines(list("abcdefg"), per_line=3) == [[0, 1, 2], [3, 4, 5], [6]]
    fig = plots.token_colours(tokens, [1.0, -2.0, 0.5, np.nan, 0.0, 3.0], highlight={5: "this one"})
    t = fig.data[0]
    z = np.array(t.z, dtype=float)
    assert z.shape == (2, 3) and z[0, 1] == -2.0 and np.isnan(z[1, 0])
    assert t.zmid == 0 and t.zmin == -3.0 and t.zmax == 3.0  # signed: diverging, symmetric
    assert t.text[1][2] == "t" and "this one" in t.customdata[1][2]
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 == 1.5  # the outline on position 5
    unsigned = plots.token_colours(["a", "b"], [0.2, 0.4]).data[0]
    assert unsigned.zmin == 0 and unsigned.zmid is None
    with pytest.raises(ValueError, match="one value per token"):
        plots.token_colours(["a", "b"], [1.0])


def test_attribution_figures(model, tok):
    from gptviz.attribution import attribution_record

    rec = attribution_record(model, tok, "the fox jumps", prompt_len=8, method="grad_x_input")
    fig = plots.attribution_tokens(rec, 2)
    cells = np.array(fig.data[0].z, dtype=float).reshape(-1)
    p = rec.positions[2]
    np.testing.assert_allclose(cells[:p], rec.row(2).numpy(), rtol=1e-6)  # then the explained token, uncoloured
    assert np.isnan(cells[p]) and f"{rec.tokens[p]!r}" in fig.layout.title.text
    mat = plots.attribution_matrix(rec, normalise=False)
    np.testing.assert_allclose(np.array(mat.data[0].z, dtype=float), rec.values.numpy(), rtol=1e-6)
    assert mat.layout.shapes[-1].x0 == rec.prompt_len - 0.5  # where the prompt ends
    rows = np.array(plots.attribution_matrix(rec).data[0].z, dtype=float)
    assert np.nanmax(np.abs(rows), axis=1) == pytest.approx(1.0)


def test_rank_figure_and_lens_ranks(model, tok):
    lens = logit_lens_record(model, tok, tok.encode("the fox jumps over"))
    ranks, top = lens.ranks[:, :-1], lens.top_ids[:, :-1]
    nxt = torch.tensor(tok.encode("the fox jumps over"))[1:]
    assert torch.equal(ranks == 1, top == nxt[None])  # rank 1 exactly where the top guess is the next token
    assert torch.isnan(lens.ranks[:, -1]).all() and (ranks >= 1).all()
    fig = plots.rank_figure(lens)
    assert fig.data[0].text[0][0] == str(int(lens.ranks[0, 0]))
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float)[:, :-1], -np.log10(ranks.numpy()), rtol=1e-6)
    chosen = logit_lens_record(model, tok, tok.encode("the fox"), token=tok.encode("o")[0])
    assert chosen.rank_token == tok.encode("o")[0] and not torch.isnan(chosen.ranks).any()
    assert "token id" in plots.rank_figure(chosen).layout.title.text


def test_neuron_and_embedding_figures(model, tok):
    from gptviz.embedding_map import embedding_map
    from gptviz.neurons import mlp_factors, neuron_record, top_activations

    rec = neuron_record(model, tok, "the fox jumps over the dog", layer=1)
    fig = plots.neuron_tokens(rec, 1, 3)
    np.testing.assert_allclose(
        np.array(fig.data[0].z, dtype=float).reshape(-1)[: len(rec.tokens)], rec.neuron(1, 3).numpy(), rtol=1e-6
    )
    top = top_activations(model, tok, TEXT * 2, 1, 3, k=5, context=3)
    tf = plots.top_activations_figure(top)
    z = np.array(tf.data[0].z, dtype=float)
    assert z.shape[0] == 5 and z[:, 3] == pytest.approx([e.value for e in top.examples])  # the firing column
    fac = mlp_factors(model, tok, None, 1, 3, record=rec)
    assert np.array(plots.factors_overview(fac).data[0].z, dtype=float).shape == (3, len(rec.tokens))
    assert "factor 2" in plots.factor_tokens(fac, 2).layout.title.text
    with pytest.raises(IndexError, match="0..2"):
        plots.factor_tokens(fac, 3)
    emap = embedding_map(model, tok, "tokens")
    two = plots.embedding_map_figure(emap)
    assert sum(len(t.x) for t in two.data) == tok.vocab_size and all(t.type == "scatter" for t in two.data)
    assert "class" in two.layout.title.text and "of variance" in two.layout.xaxis.title.text
    pos = plots.embedding_map_figure(embedding_map(model, tok, "positions"), "position", dims=3)
    assert pos.data[0].mode == "lines" and pos.data[1].type == "scatter3d" and len(pos.data[1].x) == 64
    with pytest.raises(KeyError, match="no property"):
        plots.embedding_map_figure(emap, "position")
