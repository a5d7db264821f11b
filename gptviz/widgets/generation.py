"""GenerationExplorer: generate step by step, scrub the timeline, fork at any candidate, compare branches.

Generate runs `steps.generate_steps` with the knobs (temperature, top-k, top-p, repetition penalty,
no-repeat-n-gram, seed, sample/greedy; the constructor takes them under `generate`'s names and checks them
against the controls' ranges, `KNOBS`) and keeps every StepRecord. The timeline slider shows one step: the
candidates' probabilities after each stage (chosen outlined, filtered greyed) and where the last context token
looked when choosing (layer / head, or the mean of the layer's heads). Clicking a candidate bar forks: the
branch continues from prompt + chosen[:t] + [clicked]; branches are listed side by side with the fork point
marked, and the active one drives the timeline. Beam search (beams > 1) runs `sampling.generate` and shows
only its final text: it keeps several hypotheses per step, so there is no single timeline.

The panel holds state and controls; figures come from `plots`, tokens from the sampler's records.
"""

from __future__ import annotations

import html
import numbers
import time
import warnings
from dataclasses import dataclass, replace

import ipywidgets as W
import plotly.graph_objects as go
import torch

from .. import plots
from ..export import RawHTML
from ..plots.generation import message_figure, step_figure
from ..sampling import generate
from ..steps import generate_steps
from ._base import Panel, encode_for_panel, replace_figure, slider
from ._decoding import KNOBS, check_knobs, knob_range, restage


@dataclass
class Branch:
    """One continuation of the prompt: its steps, and where it left its parent (None for the first)."""

    prompt_ids: list[int]
    steps: list  # StepRecord, numbered 0.. along this branch
    parent: int | None = None
    fork_step: int | None = None  # the step whose token was replaced by the clicked candidate

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + [s.token_id for s in self.steps]


class GenerationExplorer(Panel):
    """Prompt + decoding knobs + Generate; a step timeline with candidates and attention; click to fork."""

    title = "Generation explorer"

    def __init__(
        self,
        model,
        tokenizer,
        prompt: str = "ROMEO:",
        max_new_tokens: int = 40,
        k: int = 10,
        generate_now: bool = True,
        *,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        num_beams: int = 1,
        seed: int = 0,
    ):
        """The keyword arguments set the controls (the same names, meanings and defaults as `sampling.generate`,
        which are transformers': top_k=50 when sampling); a value outside its control's range (`KNOBS`) raises
        ValueError, before anything is built. top_k is capped at the vocabulary of a small (char) model."""
        knobs = check_knobs(
            model.config.vocab_size,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            num_beams=num_beams,
            seed=seed,
            max_new_tokens=max_new_tokens,
        )
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"GenerationExplorer: k (candidates shown per step) must be an integer >= 1, got {k!r}")
        self.model, self.tokenizer, self.k = model, tokenizer, k
        self._quiet = False  # True while the panel sets its own controls
        V, nh, L = model.config.vocab_size, model.config.n_head, model.config.n_layer
        st = {"description_width": "125px"}  # one label width: the sliders' tracks line up in columns

        def knob(name):
            label, step = KNOBS[name][0], KNOBS[name][3]
            return slider(label, knobs[name], *knob_range(name, V), step, width="100%", style=st)

        self.prompt = W.Textarea(
            value=prompt,
            description="prompt",
            rows=2,
            layout=W.Layout(width="98%"),
            style={"description_width": "initial"},
        )
        self.sample = W.Checkbox(
            value=do_sample,
            description="sample (off = greedy)",
            indent=False,
            layout=W.Layout(width="auto", margin="0 0 0 12px"),
        )
        self.temperature, self.top_k, self.top_p = knob("temperature"), knob("top_k"), knob("top_p")
        self.repetition_penalty, self.no_repeat_ngram = knob("repetition_penalty"), knob("no_repeat_ngram_size")
        self.beams, self.max_new_tokens = knob("num_beams"), knob("max_new_tokens")
        self.seed = W.IntText(
            value=seed, description="seed", style={"description_width": "initial"}, layout=W.Layout(width="130px")
        )
        self.generate_button = W.Button(
            description="Generate", button_style="primary", icon="play", layout=W.Layout(width="auto", flex="1 1 auto")
        )
        self.step = slider("step", 0, 0, 0, width="100%", style={"description_width": "40px"})
        self.layer = slider("layer", L - 1, 0, L - 1, width="100%", style={"description_width": "45px"})
        self.head = W.Dropdown(
            options=[("mean of heads", -1)] + [(f"head {h}", h) for h in range(nh)],
            value=-1,
            description="head",
            style={"description_width": "45px"},
            layout=W.Layout(width="100%"),
        )
        self.branch = W.Dropdown(
            options=[],
            description="active branch",
            style={"description_width": "initial"},
            layout=W.Layout(width="360px"),
        )
        self.branches_html = W.HTML()
        self.branches: list[Branch] = []
        self.knob_note = ""
        # columns as wide as the panel allows (auto-fill): three or four side by side on a wide screen, one
        # under the other on a narrow one; labels, tracks and read-outs line up, nothing leaves the panel
        for w in (self.temperature, self.top_k, self.top_p, self.repetition_penalty, self.no_repeat_ngram):
            w.layout.width = "auto"
        for w in (self.beams, self.max_new_tokens):
            w.layout.width = "auto"
        knobs_grid = W.GridBox(
            [
                self.sample,
                self.temperature,
                self.top_k,
                self.top_p,
                self.repetition_penalty,
                self.no_repeat_ngram,
                self.beams,
                self.max_new_tokens,
                W.HBox([self.seed, self.generate_button], layout=W.Layout(grid_gap="10px")),
            ],
            layout=W.Layout(grid_template_columns="repeat(auto-fill, minmax(290px, 1fr))", grid_gap="2px 20px"),
        )
        for w in (self.step, self.layer, self.head):
            w.layout.width = "auto"
        view = W.GridBox(
            [self.step, self.layer, self.head],
            layout=W.Layout(
                grid_template_columns="repeat(auto-fill, minmax(240px, 1fr))",
                grid_gap="2px 20px",
                width="100%",
                margin="6px 0 0 0",
                padding="6px 0 0 0",
                border_top="1px solid #e3e5ea",
            ),
        )
        controls = [self.prompt, knobs_grid, view]
        caption = (
            "Each step shows the next-token candidates before and after every decoding stage, and where the "
            "model looked. Click any candidate bar to fork: generation continues from that token."
        )
        super().__init__(controls, message_figure("Press Generate"), caption, [self.branch, self.branches_html])
        self.generate_button.on_click(self.guarded(lambda _: self.run()))
        self.plot.on_click(self.guarded(self._click_candidate))  # the candidate bars: a click forks there
        self.preview: dict | None = None  # the knobs the shown step was re-drawn with (None: as sampled)
        self._raw_logits: dict = {}  # (branch, step) -> the step's raw next-token logits (1, V), for previews
        for w in (self.sample, self.temperature, self.top_k, self.top_p, self.repetition_penalty, self.no_repeat_ngram):
            w.observe(self.guarded(self._on_knob), names="value")
        self.step.observe(self.guarded(self._show), names="value")
        for w in (self.layer, self.head):
            w.observe(self.guarded(self._show), names="value")
        self.branch.observe(self.guarded(self._on_branch), names="value")
        if generate_now:
            self.guarded(self.run)()

    # ---- generation ----------------------------------------------------------------------------------
    def knobs(self) -> dict:
        return dict(
            do_sample=self.sample.value,
            temperature=self.temperature.value,
            top_k=self.top_k.value or None,
            top_p=self.top_p.value,
            repetition_penalty=self.repetition_penalty.value,
            no_repeat_ngram_size=self.no_repeat_ngram.value,
            seed=self.seed.value,
            eos_token_id=getattr(self.tokenizer, "eos_id", None),
        )

    def _steps(self, ids: list[int], n: int, first: int) -> list:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            steps = list(
                generate_steps(
                    self.model, ids, n, k=self.k, record_attention=True, tokenizer=self.tokenizer, **self.knobs()
                )
            )
        self.knob_note = " ".join(str(w.message) for w in caught)
        return [replace(s, step=first + i) for i, s in enumerate(steps)]

    def run(self) -> None:
        """Generate from the prompt with the current knobs (what the Generate button does)."""
        text = self.prompt.value
        if not text:
            raise ValueError("The prompt is empty: type a few characters for the model to continue.")
        ids = encode_for_panel(self.tokenizer, text)
        t0 = time.perf_counter()
        self.preview, self._raw_logits = None, {}
        if self.beams.value > 1:
            self._run_beams(ids)
            return
        self.branches = [Branch(ids, self._steps(ids, self.max_new_tokens.value, 0))]
        self._after_change(0, f"generated {len(self.branches[0].steps)} tokens in {time.perf_counter() - t0:.2f} s")

    def _run_beams(self, ids: list[int]) -> None:
        knobs = self.knobs()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = generate(
                self.model, torch.tensor([ids]), self.max_new_tokens.value, num_beams=self.beams.value, **knobs
            )[0].tolist()
        cleared = len(self.branches)
        self.branches = []
        self.step.disabled = True
        self._quiet = True
        try:
            self.branch.options = []
        finally:
            self._quiet = False
        text = self.tokenizer.decode(out[len(ids) :])
        self.branches_html.value = _cards_html(
            [
                (
                    f"beam search, {self.beams.value} beams: best sequence",
                    html.escape(self.tokenizer.decode(ids)),
                    html.escape(text),
                )
            ]
        )
        replace_figure(
            self.figure,
            message_figure(
                width=self.width,
                text=f"Beam search keeps {self.beams.value} hypotheses at every step, so there is no single step "
                "timeline.<br>The best final sequence is shown below; set beams = 1 to scrub steps and fork.",
            ),
        )
        note = (
            f"beam search replaced the step timeline and its {cleared} branch{'es' if cleared != 1 else ''} "
            "(forks included); set beams = 1 and press Generate to scrub and fork again"
            if cleared
            else ""
        )
        self.set_status(" · ".join(p for p in (note, *(str(w.message) for w in caught)) if p))

    def fork(self, step: int, token_id: int, branch: int | None = None) -> int:
        """Continue `branch` (default: the active one) with `token_id` at `step`; returns the new branch index."""
        b = self.branches[self.active if branch is None else branch]
        if not 0 <= step < len(b.steps):
            raise ValueError(f"step {step} is outside this branch (0..{len(b.steps) - 1})")
        old = b.steps[step]
        cand = old.candidates.tolist()
        if token_id not in cand:
            raise ValueError(f"token id {token_id} is not one of step {step}'s candidates {cand}")
        j = cand.index(token_id)
        forced = replace(
            old,
            token_id=token_id,
            token=self.tokenizer.tokens([token_id])[0],
            prob=float(old.stages[-1].probs[j]),
            raw_prob=float(old.stages[0].probs[j]),
        )
        prefix = b.ids[: len(b.prompt_ids) + step] + [token_id]
        t0 = time.perf_counter()
        rest = self._steps(prefix, len(b.steps) - step - 1, step + 1) if step + 1 < len(b.steps) else []
        self.branches.append(Branch(b.prompt_ids, b.steps[:step] + [forced] + rest, self.active, step))
        new = len(self.branches) - 1
        self._after_change(
            new,
            f"branch {new}: forked at step {step} with {forced.token!r} instead of "
            f"{old.token!r} ({time.perf_counter() - t0:.2f} s)",
        )
        return new

    # ---- display -------------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return self.branch.value if self.branch.value is not None else 0

    def _after_change(self, active: int, status: str) -> None:
        self._quiet = True
        try:
            self.branch.options = [(self._branch_label(i), i) for i in range(len(self.branches))]
            self.branch.value = active
            b = self.branches[active]
            self.step.disabled = False
            self.step.max = max(0, len(b.steps) - 1)
            self.step.value = b.fork_step if b.fork_step is not None else 0
        finally:
            self._quiet = False
        self._status = " · ".join(p for p in (status, self.knob_note) if p)
        self._show()

    def _branch_label(self, i: int) -> str:
        b = self.branches[i]
        if b.parent is None:
            return f"{i}: main"
        return f"{i}: fork of {b.parent} at step {b.fork_step} ({plots.short(b.steps[b.fork_step].token, 8)})"

    def _on_branch(self, change) -> None:
        if self._quiet or change["new"] is None:
            return
        b = self.branches[change["new"]]
        self._quiet = True
        try:
            self.step.max = max(0, len(b.steps) - 1)
            self.step.value = min(self.step.value, self.step.max)
        finally:
            self._quiet = False
        self._show()

    # ---- live knobs: the shown step drawn again with the knobs as they are now ----------------------------
    def _on_knob(self, change=None) -> None:
        if self._quiet or not self.branches:
            return
        self.preview = self.knobs()
        self._show()

    def _raw(self, branch: int, t: int) -> torch.Tensor:
        """Step t's raw next-token logits (1, V): one forward pass over its context window, kept per step."""
        key = (branch, t)
        if key not in self._raw_logits:
            b, s = self.branches[branch], self.branches[branch].steps[t]
            window = torch.tensor([b.ids[s.context_start : s.position]], device=next(self.model.parameters()).device)
            with torch.no_grad():
                self._raw_logits[key] = self.model(window)[:, -1, :].float().cpu()  # (1, V)
        return self._raw_logits[key]

    def shown_step(self):
        """The step the figure shows: as sampled, or (after a knob moved) re-staged with the knobs now."""
        b = self.branches[self.active]
        t = min(self.step.value, len(b.steps) - 1)
        s = b.steps[t]
        if self.preview is None:
            return s, []
        return restage(s, self._raw(self.active, t), b.ids[: s.position], self.model.config.vocab_size, self.preview, t)

    def relayout(self) -> None:
        if self.branches:
            self._show()

    def _show(self, change=None) -> None:
        if getattr(self, "_quiet", False) or not self.branches:
            return
        b = self.branches[self.active]
        if not b.steps:
            replace_figure(
                self.figure,
                message_figure(
                    "No tokens were generated (the model ended the text at once): raise max new tokens or change "
                    "the prompt.",
                    width=self.width,
                ),
            )
            return
        t = min(self.step.value, len(b.steps) - 1)
        s, notes = self.shown_step()
        head = None if self.head.value < 0 else self.head.value
        fig = step_figure(
            s,
            self.layer.value,
            head,
            self.tokenizer.tokens(b.ids),
            forced=t == b.fork_step,
            width=self.width,
            preview=self.preview is not None,
        )
        replace_figure(self.figure, fig)
        if self.preview is not None:
            notes = [
                f"step {t} drawn again with the knobs as they are now (the token stays the one sampled before); "
                "press Generate to sample the whole text with them",
                *notes,
            ]
        self.set_status(" · ".join(p for p in (getattr(self, "_status", ""), *notes) if p))
        self.branches_html.value = self._branches_html()

    def _click_candidate(self, trace, points, state) -> None:
        if points.point_inds and trace.customdata is not None:  # a candidate bar (its customdata: token ids)
            self.fork(self.step.value, int(trace.customdata[points.point_inds[0]]))

    def _branches_html(self) -> str:
        cards = []
        for i, b in enumerate(self.branches):
            spans = []
            for j, (s, piece) in enumerate(zip(b.steps, _pieces(self.tokenizer, b.ids, len(b.prompt_ids)))):
                style = ""
                if j == b.fork_step:
                    style += "background:#fde7c8;border-left:2px solid #e6550d;"
                if i == self.active and j == self.step.value:
                    style += "text-decoration:underline 2px #2166ac;"
                piece = html.escape(piece)
                spans.append(
                    f"<span style='{style}' title='step {j}: p={s.prob:.3f}'>{piece}</span>" if style else piece
                )
            head = self._branch_label(i) + (" · active" if i == self.active else "")
            cards.append((head, html.escape(self.tokenizer.decode(b.prompt_ids)), "".join(spans)))
        return _cards_html(cards, self.active)

    def export_items(self) -> list:
        return [go.Figure(self.figure), RawHTML(self.branches_html.value)]


def _pieces(tokenizer, ids: list[int], start: int) -> list[str]:
    """Text added by each id from `start` on. A character split over several byte-level tokens shows up
    whole at its last token (the earlier ones add nothing), so Chinese never turns into '�'."""
    out, done = [], tokenizer.decode(ids[:start])
    for n in range(start + 1, len(ids) + 1):
        text = tokenizer.decode(ids[:n])
        if text.endswith("\ufffd") and n < len(ids):
            out.append("")
            continue
        out.append(text[len(done) :] if text.startswith(done) else text)
        done = text
    return out


def _cards_html(cards: list[tuple[str, str, str]], active: int | None = None) -> str:
    """Branches side by side: a header, the prompt in grey, then the generated text (already escaped)."""
    items = []
    for i, (head, prompt, body) in enumerate(cards):
        border = "#2166ac" if i == active else "#d4d6db"
        items.append(
            f"<div style='flex:1 1 280px;max-width:460px;border:1px solid {border};border-radius:6px;"
            f"padding:6px 8px;font-size:13px;line-height:1.45'><div style='font-weight:600;margin-bottom:4px'>"
            f"{html.escape(head)}</div><div style='white-space:pre-wrap;font-family:monospace'>"
            f"<span style='color:#8a90a0'>{prompt}</span>{body}</div></div>"
        )
    return f"<div style='display:flex;flex-wrap:wrap;gap:8px'>{''.join(items)}</div>"
