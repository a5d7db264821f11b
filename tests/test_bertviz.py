"""gptviz.bertviz: records -> bertviz's input, and bertviz views that render with no network."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("bertviz")

from gptviz import bertviz as gb  # noqa: E402

TOKENS = "The quick brown fox jumps over the lazy dog".split()
T = len(TOKENS)
L, NH = 2, 4


def causal_attention(*lead: int, t: int = T, seed: int = 0) -> torch.Tensor:
    """Random post-softmax causal attention of shape (*lead, t, t)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(*lead, t, t, generator=g) * 2
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


def script_params(page: str) -> dict:
    """bertviz's params JSON (the `const params = {...};` line of its script)."""
    line = re.search(r"const params = (\{.*\}); // HACK", page)
    assert line, "bertviz params not found in the HTML"
    # undo make_offline's two escapes, as the browser's JS parser does ("<\\/" is "</", "<\\!--" is "<!--")
    return json.loads(line.group(1).replace("<\\/", "</").replace("<\\!--", "<!--"))


# ------------------------------------------------------------------------------------- to_bertviz


def check_bertviz_shape(layers, tokens, n_layers=L, nh=NH, t=T):
    assert isinstance(layers, list) and len(layers) == n_layers
    for x in layers:
        assert isinstance(x, torch.Tensor)
        assert x.shape == (1, nh, t, t) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert tokens == TOKENS[:t] and all(isinstance(s, str) for s in tokens)


def test_record_with_stacked_attention():
    att = causal_attention(L, NH)
    layers, tokens = gb.to_bertviz(SimpleNamespace(attention=att, tokens=TOKENS))
    check_bertviz_shape(layers, tokens)
    assert torch.equal(layers[1][0], att[1])


def test_record_with_batch_axis_takes_item_0_or_batch():
    att = causal_attention(L, 3, NH)  # (L, B, nh, T, T)
    layers, tokens = gb.to_bertviz(SimpleNamespace(attention=att, tokens=TOKENS))
    check_bertviz_shape(layers, tokens)
    assert torch.equal(layers[0][0], att[0, 0])
    layers, _ = gb.to_bertviz(SimpleNamespace(attention=att, tokens=TOKENS), batch=2)
    assert torch.equal(layers[1][0], att[1, 2])


def test_record_tokens_can_be_overridden_and_half_precision_becomes_float32():
    att = causal_attention(L, NH).half()
    layers, tokens = gb.to_bertviz(SimpleNamespace(attention=att, tokens=["x"] * T), tokens=TOKENS)
    check_bertviz_shape(layers, tokens)


def test_capture_mapping_in_layer_order_ignoring_other_hooks():
    att = causal_attention(11, 2, NH)  # 11 layers, batch of 2
    cap = {f"blocks.{i}.attn.hook_pattern": att[i] for i in (10, 2, 0)}  # unordered; "10" sorts after "2"
    cap["blocks.0.attn.hook_attn_scores"] = torch.zeros(2, NH, T, T)
    cap["hook_logits"] = torch.zeros(2, T, 97)
    layers, tokens = gb.to_bertviz(cap, tokens=TOKENS)
    check_bertviz_shape(layers, tokens, n_layers=3)
    assert [torch.equal(x[0], att[i, 0]) for x, i in zip(layers, (0, 2, 10))] == [True] * 3


def test_capture_from_the_real_model(tiny_model):
    from gptviz import capture

    with torch.no_grad(), capture(tiny_model, "blocks.*.attn.hook_pattern") as cap:
        tiny_model(torch.randint(0, 97, (2, T)))
    layers, tokens = gb.to_bertviz(cap, tokens=TOKENS)
    n_layer, n_head = tiny_model.config.n_layer, tiny_model.config.n_head
    check_bertviz_shape(layers, tokens, n_layers=n_layer, nh=n_head)
    assert torch.allclose(layers[0].sum(-1), torch.ones(1, n_head, T), atol=1e-5)


def test_list_of_per_layer_tensors():
    att = causal_attention(L, NH)
    as_3d, as_4d = [a for a in att], [a.unsqueeze(0) for a in att]
    batched = [a.unsqueeze(0).repeat(3, 1, 1, 1) for a in att]
    for layer_list in (as_3d, as_4d, batched, tuple(as_4d)):
        layers, tokens = gb.to_bertviz(layer_list, tokens=TOKENS)
        check_bertviz_shape(layers, tokens)
        assert torch.equal(layers[1][0], att[1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gb.to_bertviz(causal_attention(L, NH), tokens=TOKENS[:-1]), r"T=9 positions but 8 tokens"),
        (
            lambda: gb.to_bertviz(SimpleNamespace(attention=causal_attention(L, NH), tokens=TOKENS + ["!"])),
            r"T=9 positions but 10 tokens",
        ),
        (lambda: gb.to_bertviz(causal_attention(L, NH)), r"tokens are required"),
        (lambda: gb.to_bertviz([causal_attention(NH), causal_attention(NH + 1)], tokens=TOKENS), r"layers disagree"),
        (lambda: gb.to_bertviz([torch.rand(1, NH, 3, T)], tokens=TOKENS), r"square self-attention"),
        (lambda: gb.to_bertviz([torch.rand(T, T)], tokens=TOKENS), r"expected \(nh, T, T\)"),
        (lambda: gb.to_bertviz(torch.rand(NH, T, T), tokens=TOKENS), r"expected \(L, nh, T, T\)"),
        (lambda: gb.to_bertviz([], tokens=TOKENS), r"empty list"),
        (lambda: gb.to_bertviz({"hook_logits": torch.zeros(1)}, tokens=TOKENS), r"blocks.\*.attn.hook_pattern"),
        (lambda: gb.to_bertviz(SimpleNamespace(attention=None, tokens=TOKENS)), r"holds no attention"),
        (lambda: gb.to_bertviz(causal_attention(L, 2, NH), tokens=TOKENS, batch=5), r"batch=5 is out of range"),
        (lambda: gb.to_bertviz(torch.ones(L, NH, T, T, dtype=torch.long), tokens=TOKENS), r"float tensor"),
    ],
)
def test_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_clear_type_errors():
    with pytest.raises(TypeError, match="list of strings"):
        gb.to_bertviz(causal_attention(L, NH), tokens="The quick brown fox jumps over the lazy dog")
    with pytest.raises(TypeError, match="tokens must be strings"):
        gb.to_bertviz(causal_attention(L, NH), tokens=list(range(T)))
    with pytest.raises(TypeError, match="cannot read attention"):
        gb.to_bertviz(42, tokens=TOKENS)


# ---------------------------------------------------------------------------------- offline views


def record():
    return SimpleNamespace(attention=causal_attention(L, NH), tokens=list(TOKENS))


def assert_offline_with_libraries(page: str):
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I), "a <script src=...> is left"
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "cdnjs" not in page and "require.config" not in page
    assert "https://d3js.org v5.7.0" in page and "jQuery v3.7.1" in page  # the inlined libraries' headers
    assert gb._vendored_source("d3") in page and gb._vendored_source("jquery") in page
    assert page.count('<script type="text/javascript">') == len(re.findall("</script", page, re.I)) == 1
    assert "<!--" not in page  # would switch the HTML parser into "script data escaped" state


@pytest.mark.parametrize("view", [gb.head_view, gb.model_view])
def test_views_return_offline_html(view):
    from IPython.display import HTML

    out = view(record())
    assert isinstance(out, HTML)
    assert_offline_with_libraries(out.data)
    params = script_params(out.data)
    assert params["attention"][0]["left_text"] == TOKENS
    assert params["include_layers"] == [0, 1]


def test_bertviz_itself_still_loads_from_the_cdn():
    """The premise: if bertviz stops using a CDN, this module may no longer be needed."""
    from bertviz import head_view

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # bertviz leaves its .js file open
        raw = head_view(gb.to_bertviz(record())[0], TOKENS, html_action="return").data
    assert "cdnjs.cloudflare.com" in raw
    with pytest.raises(RuntimeError, match="network"):
        gb._assert_offline(raw)


def test_changed_bertviz_template_is_noticed():
    with pytest.raises(RuntimeError, match="template changed"):
        gb.make_offline("<div id='vis'></div><script>console.log(1)</script>")
    fake = (
        '<script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"></script>'
        '<div id="bertviz-0a"></div>\n<script type="text/javascript">\nd3.select("#vis")\n</script>\n'
    )
    with pytest.raises(RuntimeError, match="requirejs"):
        gb.make_offline(fake)


def test_token_that_closes_a_script_tag_is_escaped():
    toks = list(TOKENS)
    toks[3] = "</script><b>x<!--"
    page = gb.head_view(SimpleNamespace(attention=causal_attention(L, NH), tokens=toks)).data
    assert len(re.findall("</script", page, re.I)) == 1 and page.rstrip().endswith("</script>")
    assert "<!--" not in page
    assert script_params(page)["attention"][0]["left_text"][3] == "</script><b>x<!--"


def test_layer_numbers_survive_a_partial_capture():
    att = causal_attention(4, 1, NH)
    cap = {"blocks.3.attn.hook_pattern": att[3], "blocks.1.attn.hook_pattern": att[1]}
    page = gb.head_view(cap, tokens=TOKENS, layer=3).data
    params = script_params(page)
    assert params["include_layers"] == [1, 3] and params["layer"] == 3
    assert len(params["attention"][0]["attn"]) == 2  # the placeholders for layers 0 and 2 are not sent
    assert params["attention"][0]["attn"][1][0][0][0] == pytest.approx(float(att[3, 0, 0, 0, 0]), abs=1e-4)
    assert script_params(gb.model_view(cap, tokens=TOKENS, layers=[3]).data)["include_layers"] == [3]
    with pytest.raises(ValueError, match="available layers are \\[1, 3\\]"):
        gb.model_view(cap, tokens=TOKENS, layers=[0])
    with pytest.raises(ValueError, match="not among the layers"):
        gb.head_view(cap, tokens=TOKENS, layer=0)
    with pytest.raises(ValueError, match="heads must be"):
        gb.head_view(cap, tokens=TOKENS, heads=[NH])
    import numpy as np  # numpy integers are fine (bertviz's JSON would reject them)

    params = script_params(gb.head_view(cap, tokens=TOKENS, layer=np.int64(1), heads=np.array([0, 2])).data)
    assert params["layer"] == 1 and params["heads"] == [0, 2]


def test_long_input_keeps_the_last_tokens_and_warns():
    t = 200
    toks = [f"t{i}" for i in range(t)]
    long_record = SimpleNamespace(attention=causal_attention(1, 2, t=t), tokens=toks)
    with pytest.warns(UserWarning, match=r"200 tokens; showing only the last 128.*max_tokens="):
        page = gb.head_view(long_record).data
    shown = script_params(page)["attention"][0]["left_text"]
    assert shown == toks[72:]
    assert len(script_params(page)["attention"][0]["attn"][0][0]) == 128

    with pytest.warns(UserWarning, match="last 20"):
        page = gb.head_view(long_record, max_tokens=20).data
    assert script_params(page)["attention"][0]["left_text"] == toks[-20:]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        page = gb.head_view(SimpleNamespace(attention=causal_attention(1, 1, t=t), tokens=toks), max_tokens=None).data
    assert len(script_params(page)["attention"][0]["left_text"]) == t


def test_model_view_limit_shrinks_with_model_size():
    t = 50
    toks = [f"t{i}" for i in range(t)]
    big = SimpleNamespace(attention=causal_attention(12, 12, t=t), tokens=toks)  # 12 layers x 12 heads
    with pytest.warns(UserWarning, match=r"model_view: the input has 50 tokens; showing only the last 37"):
        page = gb.model_view(big).data
    assert script_params(page)["attention"][0]["left_text"] == toks[-37:]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        gb.model_view(SimpleNamespace(attention=causal_attention(2, 2, t=t), tokens=toks))  # 50 <= 64: no warning
    with pytest.raises(ValueError, match="max_tokens must be"):
        gb.model_view(big, max_tokens=0)


def test_html_path_writes_a_standalone_offline_page(tmp_path):
    target = tmp_path / "sub" / "head.html"
    out = gb.head_view(record(), html_path=target)
    text = target.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert out.data in text and '<meta charset="utf-8">' in text
    assert_offline_with_libraries(text)
    gb.model_view(record(), html_path=str(tmp_path / "model.html"), display_mode="dark")
    assert "background:black" in (tmp_path / "model.html").read_text(encoding="utf-8")


def test_vendored_files_match_their_readme():
    vendor = Path(gb.__file__).parent / "static" / "vendor"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    for _name, (filename, version) in gb._VENDORED.items():
        path = vendor / filename
        header = path.read_text(encoding="utf-8")[:120]
        assert f"v{version}" in header, (filename, header)
        assert f"`{filename}` ({path.stat().st_size:,} B)" in readme and f"| {version} |" in readme
    assert (vendor / "LICENSE-d3.txt").read_text().startswith("Copyright 2010-2017 Mike Bostock")
    assert "Permission is hereby granted" in (vendor / "LICENSE-jquery.txt").read_text()


# ------------------------------------------------------------------------------ real browser (optional)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png_pixels(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, channels, raw pixel bytes) of an 8-bit RGB/RGBA PNG, enough for Chromium screenshots."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    out = bytearray(stride * height)
    prev = bytearray(stride)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif ftype == 4:
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=90,
    )


# How JupyterLab shows a trusted text/html output: innerHTML into a detached node, each <script> re-created so
# that it runs, then the node attached. The page has no require.js but a foreign AMD `define` (as classic
# Notebook has), which the inlined libraries must not call; they must not leak globals either.
JUPYTERLAB_LIKE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<script>var amdCalls = 0; window.define = function () { amdCalls += 1; }; window.define.amd = {};</script>
<pre id="report">not run</pre>
<script>
var host = document.createElement("div");
host.innerHTML = FRAGMENT;
host.querySelectorAll("script").forEach(function (old) {
  var s = document.createElement("script"); s.textContent = old.textContent; old.parentNode.replaceChild(s, old);
});
document.body.appendChild(host);
document.getElementById("report").textContent = "REPORT " + JSON.stringify({
  lines: host.querySelectorAll("line").length,
  texts: Array.prototype.map.call(host.querySelectorAll("text"), function (t) { return t.textContent; }),
  amdCalls: amdCalls, globals: [typeof window.$, typeof window.jQuery, typeof window.d3, typeof window.require]});
</script></body></html>"""


def require_chromium():
    if CHROMIUM is None:
        if os.environ.get("GPTVIZ_REQUIRE_BROWSER") == "1":
            pytest.fail("GPTVIZ_REQUIRE_BROWSER=1 but no chromium on PATH (make browser-deps installs it)")
        pytest.skip("no chromium on PATH (make browser-deps installs it with apt as root)")


@pytest.mark.browser
def test_head_view_renders_in_chromium_without_network(tmp_path):
    require_chromium()
    fragment = gb.head_view(record(), html_path=tmp_path / "head.html").data

    # 1. inserted the JupyterLab way: attention lines drawn, no global loader needed or touched
    harness = tmp_path / "jupyterlab_like.html"
    harness.write_text(
        JUPYTERLAB_LIKE.replace("FRAGMENT", json.dumps(fragment).replace("</", "<\\/")), encoding="utf-8"
    )
    dom = run_chromium(["--virtual-time-budget=2000", "--dump-dom", harness.as_uri()], tmp_path / "profile")
    report = re.search(r"REPORT (\{.*?\})</pre>", dom.stdout.decode("utf-8", "replace"))
    assert report, f"the view's script did not finish: {dom.stdout[-500:]!r} {dom.stderr[-500:]!r}"
    report = json.loads(report.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert report["lines"] >= T * T, "bertviz drew no attention lines: the inlined JS did not run"
    assert report["texts"].count("fox") == 2  # each token on both sides
    assert report["amdCalls"] == 0 and report["globals"] == ["undefined"] * 4

    # 2. the standalone file, screenshotted: token text and coloured attention lines, not a blank page
    shot = tmp_path / "head.png"
    run_chromium(
        [f"--screenshot={shot}", "--window-size=500,320", (tmp_path / "head.html").as_uri()], tmp_path / "profile"
    )
    width, height, channels, pixels = png_pixels(shot.read_bytes())
    dark = colored = 0
    for i in range(0, len(pixels), channels):
        r, g, b = pixels[i], pixels[i + 1], pixels[i + 2]
        dark += max(r, g, b) < 128  # token text
        colored += max(r, g, b) - min(r, g, b) > 40  # head-coloured lines and the head swatches
    assert dark > 500, f"no text in the screenshot ({dark} dark pixels)"
    assert colored > 2000, f"no coloured attention lines in the screenshot ({colored} coloured pixels)"
