// The browser side of gptviz.widgets._figure: PlotlyFigure (a figure) and PlotlyLibrary (plotly.js itself),
// two anywidgets sharing this one ES module.
//
// Sizing: a figure follows its container. A ResizeObserver tells the kernel the container's width (a small
// {type: "resize", width} message, so panels laid out in pixels can lay out again for it), and a figure whose
// layout has no width is resized by plotly.js to fill it. `_fig_stale` greys the figure out while the panel
// shows a message about it.
//
// A figure draws the kernel's figure with Plotly.react: its synced state is a base (`_fig_data`, `_fig_layout`)
// and `_fig_patch`, the properties that differ from the base now. It sends back only small events: a click's
// curve, point, x, y and customdata. It never sets the model's state, so nothing the browser holds (the
// figure's data above all) travels back to the kernel.
//
// plotly.js is the installed plotly package's own bundle (offline), held once per kernel by a PlotlyLibrary
// model that is never displayed. Its `initialize` only keeps the bytes: anywidget fails a model whose
// initialisation takes over 2 s, and running the 4.8 MB bundle blocks the page for 0.5-3 s (on a busy
// machine), which would starve the figures' models initialising at the same moment. The first figure to draw
// runs the bundle, once per page and plotly version; figures wait for it, and nothing is asked of a kernel that
// may be busy running cells.

const slots = (globalThis.__gptvizPlotly ??= {}); // plotly version -> {source, gotSource, plotly}

function slot(version) {
  if (!slots[version]) {
    const s = {};
    s.source = new Promise((resolve) => { s.gotSource = resolve; });
    slots[version] = s;
  }
  return slots[version];
}

function initialize({ model }) {
  const source = model.get("_plotly_js");
  if (source !== undefined && source !== null) slot(model.get("_plotly_version")).gotSource(source); // the library
}

function plotlyFor(version) {
  const s = slot(version);
  s.plotly ??= s.source.then((source) => new Promise((resolve, reject) => {
    setTimeout(() => { // after the models arriving now have initialised
      try {
        // a UMD bundle: with `module` defined it hands Plotly over instead of looking for AMD's `define`
        const module = { exports: {} };
        const run = new Function("module", "exports", "define", new TextDecoder().decode(source));
        run(module, module.exports, undefined);
        resolve(module.exports);
      } catch (e) {
        reject(e);
      }
    }, 20);
  }));
  return s.plotly;
}

// Typed arrays arrive as {dtype, bdata: DataView (a binary buffer of the message), shape}; plotly.js takes
// bdata as an ArrayBuffer. Returns a copy: plotly.js writes into what it is given, never into the model.
function revive(value) {
  if (value instanceof DataView) {
    const { buffer, byteOffset, byteLength } = value;
    const whole = byteOffset === 0 && byteLength === buffer.byteLength;
    return whole ? buffer : buffer.slice(byteOffset, byteOffset + byteLength);
  }
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = revive(v);
    return out;
  }
  return value;
}

// One clicked point, small whatever the trace holds: never the trace's arrays.
function pointOf(p) {
  const plain = (v) => (v instanceof Date ? v.toISOString() : v);
  const custom = p.customdata === undefined ? null : p.customdata;
  return {
    curve: p.curveNumber,
    point: p.pointNumber ?? p.pointIndex ?? null,
    x: plain(p.x ?? null),
    y: plain(p.y ?? null),
    customdata: JSON.stringify(custom).length <= 2000 ? custom : null,
  };
}

// Properties `diff` ({set, unset}, see PlotlyFigure._diff) applied to `base`; untouched properties stay the
// very same objects, so Plotly.react sees them unchanged.
function patched(base, diff) {
  if (!diff) return base;
  const out = { ...(base || {}), ...revive(diff.set) };
  for (const k of diff.unset) delete out[k];
  return out;
}

// What the model says to draw now: the base with the latest patch on top, revived once per base and patch,
// so a trace the patch leaves alone is the very object Plotly.react drew last time.
function figureOf(model, cache) {
  const baseNo = model.get("_fig_base");
  const patch = model.get("_fig_patch") || {};
  if (cache.base !== baseNo) {
    cache.base = baseNo;
    cache.baseData = revive(model.get("_fig_data"));
    cache.patch = undefined;
  }
  if (cache.patch !== patch) {
    cache.patch = patch;
    if (patch.base === baseNo) {
      cache.data = Array.from({ length: patch.n }, (_, i) => patched(cache.baseData[i], patch.traces[String(i)]));
      cache.layout = patched(model.get("_fig_layout"), patch.layout);
    } else { // no patch yet, or one against an older base: the base alone is the figure
      cache.data = cache.baseData;
      cache.layout = model.get("_fig_layout");
    }
  }
  return { data: cache.data, layout: revive(cache.layout) }; // a fresh layout: plotly.js writes into it
}

function clickMessage(event) {
  const e = event.event || {};
  return {
    type: "click",
    points: (event.points || []).map(pointOf),
    state: {
      ctrl: !!e.ctrlKey, alt: !!e.altKey, shift: !!e.shiftKey, meta: !!e.metaKey,
      button: e.button ?? 0, buttons: e.buttons ?? 0,
    },
  };
}

// Tell the kernel the container's width when it settles (not at every frame of a drag), and let plotly.js
// fill it where the figure has no width of its own.
function watchWidth(model, el, div, isDrawn) {
  let sent = 0;
  let timer = null;
  const report = () => {
    timer = null;
    const width = Math.floor(el.getBoundingClientRect().width);
    if (width < 100) return; // hidden (a collapsed output, a background tab): nothing to lay out for
    if (isDrawn() && !(model.get("_fig_layout") || {}).width) {
      const Plotly = div._gptvizPlotly;
      if (Plotly) Plotly.Plots.resize(div);
    }
    if (Math.abs(width - sent) >= 8) {
      sent = width;
      model.send({ type: "resize", width });
    }
  };
  const observer = new ResizeObserver(() => {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(report, 120);
  });
  observer.observe(el);
  return () => observer.disconnect();
}

function showStale(model, div) {
  const stale = !!model.get("_fig_stale");
  div.style.opacity = stale ? "0.35" : "";
  div.style.filter = stale ? "grayscale(1)" : "";
  div.title = stale ? "out of date: see the message above the figure" : "";
}

async function render({ model, el }) {
  const div = document.createElement("div");
  div.className = "gptviz-plotly-figure";
  el.style.minWidth = "0"; // a flex item that may shrink with the page, never pushing the panel wider
  el.style.maxWidth = "100%";
  el.style.overflowX = "auto";
  el.appendChild(div);
  showStale(model, div);
  model.on("change:_fig_stale", () => showStale(model, div));
  let Plotly;
  try {
    Plotly = await plotlyFor(model.get("_plotly_version"));
  } catch (e) {
    div.textContent = `gptviz: could not load plotly.js (${e})`;
    return;
  }
  div._gptvizPlotly = Plotly;
  const cache = {};
  let queued = false;
  let listening = false;
  let drawing = Promise.resolve();
  const draw = () => {
    queued = false;
    drawing = drawing
      .then(() => {
        const { data, layout } = figureOf(model, cache);
        return Plotly.react(div, data, layout, { ...model.get("_fig_config") });
      })
      .then(() => {
        if (!listening) { // plotly.js gives the div its `on` when it first draws
          div.on("plotly_click", (event) => model.send(clickMessage(event)));
          listening = true;
        }
        div.dataset.drawn = String(Number(div.dataset.drawn || 0) + 1);
      })
      .catch((e) => {
        console.error("gptviz: plotly.js could not draw the figure", e);
        model.send({ type: "error", message: String((e && e.stack) || e).slice(0, 2000) });
      });
  };
  // one update can change several traits, one event each: draw once, after all of them
  const schedule = () => {
    if (!queued) {
      queued = true;
      queueMicrotask(draw);
    }
  };
  const events = ["_fig_data", "_fig_layout", "_fig_base", "_fig_patch", "_fig_config"].map((k) => `change:${k}`);
  for (const name of events) model.on(name, schedule);
  draw();
  await drawing;
  const unwatch = watchWidth(model, el, div, () => listening);
  return () => {
    unwatch();
    for (const name of events) model.off(name, schedule);
    Plotly.purge(div);
  };
}

export default { initialize, render };
