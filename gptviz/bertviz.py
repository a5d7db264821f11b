"""bertviz, offline: gptviz records -> what bertviz takes, and bertviz's views with no network.

bertviz's `head_view` / `model_view` emit HTML whose script loads require.js, d3 5 and jQuery from a CDN:
blank in a classroom without internet (bertviz #63) and "require is not defined" in JupyterLab (#53).
Here bertviz still builds the view (its own JS and data), and `make_offline` rewrites the result:

* the `<script src=".../require.min.js">` tag and the `require.config({paths: {...CDN...}})` call are removed;
* d3 5.7.0 and jQuery 3.7.1 (vendored in `gptviz/static/vendor/`, licences beside them) are inlined, each run
  inside a private function whose `module`/`exports` are a CommonJS shim and whose `define`/`require` are
  undefined: both libraries take their CommonJS branch, so they set no globals and never touch a require.js
  that the page may already have (classic Notebook);
* bertviz's `requirejs(['jquery', 'd3'], function ($, d3) {...})` call meets a local `requirejs` that hands
  it those two modules once the view's root `<div>` is in the document.

The result needs no loader and no global state, so the same HTML works in JupyterLab, classic Notebook,
VS Code, nbconvert exports and a standalone file. (JupyterLab runs scripts of *trusted* outputs only: a view
in a notebook reopened untrusted stays blank until the notebook is trusted or the cell is re-run.)

Long inputs: bertviz draws one SVG line per token pair per head, which freezes the browser (bertviz #74/#82);
above `max_tokens` the views keep the last tokens and warn.
"""

from __future__ import annotations

import functools
import html as html_lib
import importlib.resources
import math
import operator
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from IPython.display import HTML

__all__ = ["to_bertviz", "head_view", "model_view", "make_offline", "standalone_html"]

# library -> (file under gptviz/static/vendor, version); the vendor README lists the same
_VENDORED = {"d3": ("d3.min.js", "5.7.0"), "jquery": ("jquery.min.js", "3.7.1")}
_LICENCES = {"d3": "BSD-3-Clause, LICENSE-d3.txt", "jquery": "MIT, LICENSE-jquery.txt"}

HEAD_VIEW_MAX_TOKENS = 128
# model_view draws layers x heads thumbnails of T*T lines each: its default limit keeps the total near this
MODEL_VIEW_LINE_BUDGET = 200_000
MODEL_VIEW_MAX_TOKENS = 64
_DECIMALS = 4  # attention values sent to the browser are rounded: ~3x smaller HTML, invisible difference

_PATTERN_KEY = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")


# --------------------------------------------------------------------------------------------- inputs


def to_bertviz(
    record_or_attention: Any, tokens: Sequence[str] | None = None, *, batch: int = 0
) -> tuple[list[torch.Tensor], list[str]]:
    """Turn gptviz attention into bertviz's input: ([one (1, nh, T, T) float32 CPU tensor per layer], tokens).

    Accepts
      * a record with `.attention` ((L, nh, T, T) or (L, B, nh, T, T)) and `.tokens` (e.g. `ForwardRecord`);
      * a mapping such as `gptviz.capture`'s result: {"blocks.{l}.attn.hook_pattern": (B, nh, T, T)} plus
        `tokens=` (other keys are ignored; the layers come back in layer order, only those captured);
      * a list of per-layer tensors, each (nh, T, T), (1, nh, T, T) or (B, nh, T, T), plus `tokens=`;
      * one stacked tensor (L, nh, T, T) or (L, B, nh, T, T), plus `tokens=`.
    Batched inputs contribute item `batch` (default 0). `tokens=` overrides a record's own tokens.

    >>> attn, toks = to_bertviz(record)
    >>> bertviz.head_view(attn, toks)        # or gptviz.bertviz.head_view(record), which works offline
    """
    layers, toks, _ = _collect(record_or_attention, tokens, batch)
    return layers, toks


def _collect(obj: Any, tokens: Sequence[str] | None, batch: int) -> tuple[list[torch.Tensor], list[str], list[int]]:
    """(per-layer (1, nh, T, T) tensors, tokens, layer numbers) from any accepted input."""
    layer_ids: list[int] | None = None
    if hasattr(obj, "attention") and not isinstance(obj, (torch.Tensor, Mapping)):
        attention = obj.attention
        if attention is None:
            raise ValueError(
                f"this {type(obj).__name__} holds no attention (its .attention is None); record "
                "the forward pass with attention captured"
            )
        if tokens is None:
            tokens = getattr(obj, "tokens", None)
            if tokens is None:
                raise ValueError(f"this {type(obj).__name__} has no .tokens; pass tokens=[...]")
            if len(tokens) > 0 and not isinstance(tokens[0], str) and isinstance(tokens[0], Sequence):
                tokens = tokens[batch]  # per-batch-item token lists
        source = f"{type(obj).__name__}.attention"
        raw = attention
    elif isinstance(obj, Mapping) or (
        hasattr(obj, "keys") and hasattr(obj, "__getitem__") and not isinstance(obj, torch.Tensor)
    ):
        found = sorted(
            (int(m.group(1)), key) for key in obj.keys() if isinstance(key, str) and (m := _PATTERN_KEY.match(key))
        )
        if not found:
            some = ", ".join(repr(k) for k in list(obj.keys())[:5]) or "nothing"
            raise ValueError(
                "no attention patterns in this mapping: expected keys like "
                f"'blocks.0.attn.hook_pattern' (it has {some}). Record them with "
                "gptviz.capture(model, 'blocks.*.attn.hook_pattern')."
            )
        layer_ids = [layer for layer, _ in found]
        raw = [obj[key] for _, key in found]
        source = "capture"
    else:
        raw = obj
        source = "attention"

    if isinstance(raw, torch.Tensor) or _is_array(raw):
        stacked = _as_tensor(raw, source)
        if stacked.dim() == 5:
            stacked = _pick_batch(stacked, 1, batch, source, "(L, B, nh, T, T)")
        elif stacked.dim() != 4:
            raise ValueError(f"{source} has shape {tuple(stacked.shape)}; expected (L, nh, T, T) or (L, B, nh, T, T)")
        per_layer = [stacked[i].unsqueeze(0) for i in range(stacked.shape[0])]
    elif isinstance(raw, (list, tuple)):
        if len(raw) == 0:
            raise ValueError(f"{source} is an empty list: expected one attention tensor per layer")
        per_layer = []
        for i, t in enumerate(raw):
            name = f"{source} layer {layer_ids[i] if layer_ids else i}"
            t = _as_tensor(t, name)
            if t.dim() == 3:
                t = t.unsqueeze(0)
            elif t.dim() == 4:
                t = _pick_batch(t, 0, batch, name, "(B, nh, T, T)").unsqueeze(0)
            else:
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)}; expected (nh, T, T), (1, nh, T, T) or (B, nh, T, T)"
                )
            per_layer.append(t)
    else:
        raise TypeError(
            f"cannot read attention from {type(obj).__name__}: pass a record with .attention and "
            ".tokens, a capture {'blocks.0.attn.hook_pattern': tensor}, a list of per-layer "
            "tensors or one (L, nh, T, T) tensor"
        )

    if len(per_layer) == 0:
        raise ValueError(f"{source} has no layers")
    nh, tq, tk = per_layer[0].shape[1:]
    for i, t in enumerate(per_layer):
        label = layer_ids[i] if layer_ids else i
        if t.shape[-1] != t.shape[-2]:
            raise ValueError(
                f"{source} layer {label} is {t.shape[-2]} queries x {t.shape[-1]} keys; bertviz "
                "needs square self-attention (T, T). Was it recorded with a KV cache during "
                "generation? Run one full forward pass over the whole text instead."
            )
        if tuple(t.shape[1:]) != (nh, tq, tk):
            raise ValueError(
                f"{source} layers disagree: layer {layer_ids[0] if layer_ids else 0} is "
                f"(nh, T, T) = {(nh, tq, tk)} but layer {label} is {tuple(t.shape[1:])}"
            )

    if tokens is None:
        raise ValueError(
            f"tokens are required with {type(obj).__name__} input: pass tokens=[...] ({tq} strings, one per position)"
        )
    if isinstance(tokens, str):
        raise TypeError(
            "tokens must be a list of strings, one per position, not one string; "
            "e.g. tokenizer.tokens(tokenizer.encode(text))"
        )
    toks = list(tokens)
    bad = [t for t in toks if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"tokens must be strings, got {type(bad[0]).__name__} {bad[0]!r}; convert ids with "
            "the tokenizer's display tokens"
        )
    if len(toks) != tq:
        raise ValueError(
            f"attention covers T={tq} positions but {len(toks)} tokens were given; they must match one to one"
        )
    return per_layer, toks, layer_ids if layer_ids is not None else list(range(len(per_layer)))


def _is_array(x: Any) -> bool:
    return hasattr(x, "__array__") and hasattr(x, "shape") and not isinstance(x, (list, tuple))


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        if not _is_array(x):
            raise TypeError(f"{name} is a {type(x).__name__}, expected a torch.Tensor")
        x = torch.as_tensor(x)
    if not (x.is_floating_point()):
        raise ValueError(f"{name} has dtype {x.dtype}; expected attention probabilities (a float tensor)")
    return x.detach().to(device="cpu", dtype=torch.float32)


def _pick_batch(t: torch.Tensor, dim: int, batch: int, name: str, layout: str) -> torch.Tensor:
    size = t.shape[dim]
    if not -size <= batch < size:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} {layout}: batch={batch} is out of range (batch size {size})"
        )
    return t.select(dim, batch)


# ----------------------------------------------------------------------------------------------- views


def head_view(
    record: Any,
    tokens: Sequence[str] | None = None,
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    max_tokens: int | None = HEAD_VIEW_MAX_TOKENS,
    html_path: str | os.PathLike | None = None,
    *,
    layers: Sequence[int] | None = None,
    batch: int = 0,
) -> HTML:
    """bertviz's head view of one forward pass, rendered with no network; returns `IPython.display.HTML`.

    `record`: anything `to_bertviz` accepts. `layer`: the layer shown first (its real number); `heads`: the
    heads selected at first (default all); `layers`: only these layers in the menu (default all; fewer layers
    make a smaller page). Inputs longer than `max_tokens` keep their last `max_tokens` tokens, with a warning
    (`max_tokens=None` shows everything). `html_path`: also write a standalone offline HTML file there.
    """
    from bertviz import head_view as bv_head_view

    per_layer, toks, include = _prepare(record, tokens, batch, layers, max_tokens, "head_view")
    if layer is not None:
        layer = operator.index(layer)
        if layer not in include:
            raise ValueError(f"layer={layer} is not among the layers shown: {include}")
    if heads is not None:
        heads = _check_heads(heads, per_layer[include[0]].shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # bertviz opens its .js without closing it
        raw = bv_head_view(per_layer, toks, layer=layer, heads=heads, include_layers=include, html_action="return")
    return _finish(raw.data, html_path, "gptviz head view", background="white")


def model_view(
    record: Any,
    tokens: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    max_tokens: int | str | None = "auto",
    html_path: str | os.PathLike | None = None,
    *,
    display_mode: str = "light",
    batch: int = 0,
) -> HTML:
    """bertviz's model view (every layer x head as a thumbnail), offline; returns `IPython.display.HTML`.

    `layers` / `heads`: show only these (default all). `max_tokens="auto"` picks a limit from the model's size
    (at most 64 tokens, fewer when layers x heads x T^2 lines would pass ~200k: 37 for 12 layers x 12 heads);
    longer inputs keep their last tokens, with a warning; `max_tokens=None` shows everything.
    `display_mode`: "light" (default; bertviz draws the axis labels black) or "dark".
    `html_path`: also write a standalone offline HTML file there.
    """
    from bertviz import model_view as bv_model_view

    if display_mode not in ("light", "dark"):
        raise ValueError(f"display_mode must be 'light' or 'dark', got {display_mode!r}")
    per_layer, toks, include = _prepare(record, tokens, batch, layers, max_tokens, "model_view", heads)
    if heads is not None:
        heads = _check_heads(heads, per_layer[include[0]].shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # bertviz opens its .js without closing it
        raw = bv_model_view(
            per_layer,
            toks,
            include_layers=include,
            include_heads=heads,
            display_mode=display_mode,
            html_action="return",
        )
    return _finish(raw.data, html_path, "gptviz model view", background="black" if display_mode == "dark" else "white")


def _auto_max_tokens(n_layers: int, n_heads: int) -> int:
    fit = int(math.sqrt(MODEL_VIEW_LINE_BUDGET / max(1, n_layers * n_heads)))
    return max(8, min(MODEL_VIEW_MAX_TOKENS, fit))


def _check_heads(heads: Sequence[int], n_heads: int) -> list[int]:
    """Plain ints (bertviz writes them into JSON, where numpy integers fail) within 0..n_heads-1."""
    try:
        out = [operator.index(h) for h in heads]
    except TypeError:
        out = []
    if len(out) == 0 or any(not 0 <= h < n_heads for h in out):
        raise ValueError(f"heads must be a non-empty list of head numbers in 0..{n_heads - 1}, got {list(heads)}")
    return out


def _prepare(
    record: Any,
    tokens: Any,
    batch: int,
    layers: Sequence[int] | None,
    max_tokens: int | str | None,
    view: str,
    heads: Sequence[int] | None = None,
) -> tuple[list[torch.Tensor], list[str], list[int]]:
    """Collect, crop, round, and lay out the layers so that bertviz's layer labels are the real numbers."""
    per_layer, toks, layer_ids = _collect(record, tokens, batch)
    if layers is not None:
        wanted = [operator.index(layer) for layer in layers]
        if not wanted or any(layer not in layer_ids for layer in wanted):
            raise ValueError(f"layers={list(layers)}: available layers are {layer_ids}")
        keep = sorted(set(wanted))
    else:
        keep = layer_ids

    T = len(toks)
    if max_tokens == "auto":
        max_tokens = _auto_max_tokens(len(keep), len(heads) if heads is not None else per_layer[0].shape[1])
    if max_tokens is not None and (isinstance(max_tokens, str) or max_tokens < 1):
        allowed = "a positive number, None or 'auto'" if view == "model_view" else "a positive number or None"
        raise ValueError(f"max_tokens must be {allowed}, got {max_tokens!r}")
    if max_tokens is not None and T > max_tokens:
        cut = T - max_tokens
        warnings.warn(
            f"{view}: the input has {T} tokens; showing only the last {max_tokens} (dropped the first {cut}, "
            f"view starts at {toks[cut]!r}; attention to the dropped tokens is not drawn). bertviz draws one "
            f"line per token pair and head, and long inputs freeze the browser. Pass max_tokens=... to change "
            f"the limit (max_tokens=None shows everything).",
            UserWarning,
            stacklevel=3,
        )
        per_layer = [t[..., cut:, cut:] for t in per_layer]
        toks = toks[cut:]

    # bertviz indexes its attention list by include_layers and shows those numbers: put every layer at the
    # index of its real number (placeholders for layers not captured; they are never shown or sent).
    by_id = dict(zip(layer_ids, per_layer))
    placeholder = torch.zeros((), dtype=torch.float64).expand(per_layer[0].shape)  # bertviz reads its shape
    slots = [placeholder] * (max(layer_ids) + 1)
    for layer in keep:
        slots[layer] = torch.round(by_id[layer].double(), decimals=_DECIMALS)
    return slots, toks, keep


# -------------------------------------------------------------------------------------- offline HTML


@functools.cache
def _vendored_source(name: str) -> str:
    filename, _ = _VENDORED[name]
    return (importlib.resources.files("gptviz") / "static" / "vendor" / filename).read_text(encoding="utf-8")


_REQUIRE_TAG = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"'][^\"']*require(?:\.min)?\.js[\"'][^>]*>\s*</script>", re.I)
_INLINE_SCRIPT = re.compile(r"<script type=\"text/javascript\">\n(.*)\n</script>", re.S)
_REQUIRE_CONFIG = re.compile(r"require\.config\(\s*\{.*?\}\s*\)\s*;", re.S)
_REQUIREJS_CALL = re.compile(r"\brequirejs\(\s*\[\s*'jquery'\s*,\s*'d3'\s*\]\s*,\s*function\s*\(")
_ROOT_ID = re.compile(r"<div id=\"(bertviz-[0-9a-f]+)\"")
_REMOTE_LOAD = re.compile(
    r"\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//|\bimport\s*\(\s*[\"']https?:|cdnjs|"
    r"require\.config",
    re.I,
)


def make_offline(bertviz_html: str) -> str:
    """Rewrite HTML from bertviz's `head_view`/`model_view(..., html_action="return")` to need no network.

    Raises RuntimeError when the HTML is not shaped as bertviz 1.4 makes it (so a bertviz upgrade that
    changes its template is noticed instead of silently rendering blank).
    """

    def template_changed(what: str) -> RuntimeError:
        return RuntimeError(
            f"bertviz's HTML template changed ({what}); gptviz.bertviz.make_offline needs "
            "updating for this bertviz version"
        )

    if len(_REQUIRE_TAG.findall(bertviz_html)) != 1:
        raise template_changed("expected one <script src=...require.min.js> tag")
    page = _REQUIRE_TAG.sub("", bertviz_html)
    scripts = list(_INLINE_SCRIPT.finditer(page))
    if len(scripts) != 1:
        raise template_changed('expected one inline <script type="text/javascript">')
    root = _ROOT_ID.search(page)
    if root is None:
        raise template_changed('no <div id="bertviz-..."> root')
    script = scripts[0]
    js = script.group(1)
    if len(_REQUIRE_CONFIG.findall(js)) != 1 or len(_REQUIREJS_CALL.findall(js)) != 1:
        raise template_changed("expected require.config({...}) and requirejs(['jquery', 'd3'], function (...")
    js = _REQUIRE_CONFIG.sub("/* gptviz: the CDN paths config was removed; d3 and jQuery are inlined above */", js)

    parts = [
        "(function () {",
        "var gptvizLoad = function (factory) {",
        "  var module = {exports: {}};",
        "  factory.call(window, module, module.exports, undefined, undefined);",
        "  return module.exports;",
        "};",
        "var gptvizModules = {};",
    ]
    for name, (_filename, version) in _VENDORED.items():
        parts += [
            f"/* {name} {version} ({_LICENCES[name]} in gptviz/static/vendor/), loaded privately */",
            f"gptvizModules[{name!r}] = gptvizLoad(function (module, exports, define, require) {{",
            _vendored_source(name),
            "});",
        ]
    parts += [
        "var requirejs = function (deps, callback) {",
        "  var args = deps.map(function (d) { return gptvizModules[d]; });",
        "  var tries = 0;",
        "  (function start() {  /* run once the view's root div is in the document */",
        f"    if (document.getElementById({root.group(1)!r}) || tries >= 200) {{ callback.apply(window, args); }}",
        "    else { tries += 1; setTimeout(start, 50); }",
        "  })();",
        "};",
        js,
        "})();",
    ]
    body = _escape_for_script("\n".join(parts))
    out = page[: script.start()] + '<script type="text/javascript">\n' + body + "\n</script>" + page[script.end() :]
    _assert_offline(out)
    return out


def _escape_for_script(js: str) -> str:
    """Keep a script body from ending its <script> element early (a token "</script>" in bertviz's JSON)."""
    js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.I)
    return js.replace("<!--", "<\\!--")


def _assert_offline(page: str) -> None:
    hit = _REMOTE_LOAD.search(page)
    if hit:
        start = max(0, hit.start() - 60)
        raise RuntimeError(
            "the bertviz HTML would still load something from the network near "
            f"{page[start : hit.end() + 60]!r}; gptviz.bertviz needs updating for this bertviz"
        )


def standalone_html(fragment: str, title: str = "gptviz", background: str = "white") -> str:
    """A complete HTML page around a view fragment (what `html_path=` writes)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html_lib.escape(title)}</title>\n</head>\n"
        f'<body style="margin:16px; background:{background}">\n{fragment}\n</body>\n</html>\n'
    )


def _finish(bertviz_html: str, html_path: str | os.PathLike | None, title: str, background: str) -> HTML:
    from IPython.display import HTML

    page = make_offline(bertviz_html)
    if html_path is not None:
        path = Path(html_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(standalone_html(page, title, background), encoding="utf-8")
    return HTML(page)
