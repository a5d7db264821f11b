"""AttributionPanel: why did the model write this token? Input attribution for every step of a generation.

Type a prompt: the model continues it (greedy) and every generated token is attributed to the tokens before it
(`gptviz.attribution`: integrated gradients, gradient x input or occlusion). View "one step": the context
coloured by what it contributed to the chosen step's token (red up, blue down); "all steps": the
(generated x context) matrix. Work is done when it is first shown: a step's attribution when the slider reaches
it (one batched pass, ~1 s for integrated gradients on the lab's model), the matrix (every step at once) when
that view opens; both are kept until the prompt, the length or the method changes.
"""

from __future__ import annotations

import time

import ipywidgets as W

from .. import plots
from ..attribution import METHOD_LABELS, METHODS, attribution_record, continuation
from ._base import Panel, replace_figure, row, slider


class AttributionPanel(Panel):
    """Prompt + length + method + view + step: input attribution of a greedy generation."""

    title = "Input attribution"

    def __init__(
        self,
        model,
        tokenizer,
        prompt: str = "ROMEO:\nBut soft, what light",
        max_new_tokens: int = 12,
        method: str = "integrated_gradients",
        steps: int = 32,
        step: int = 0,
        view: str = "step",
        record=None,
    ):
        """`steps`: integrated gradients' path points (32 keep completeness within 1% on the lab's model).
        `record`: an `attribute(...)` record already made (its generation and matrix are then reused)."""
        self.model, self.tokenizer, self.ig_steps = model, tokenizer, steps
        method = record.method if record is not None else method
        st = {"description_width": "initial"}
        self.prompt = W.Textarea(
            value=prompt, description="prompt", continuous_update=False, rows=2, layout=W.Layout(width="95%"), style=st
        )
        self.new_tokens = slider("tokens to generate", max_new_tokens, 1, 64, width="300px")
        self.method = W.ToggleButtons(
            options=[(METHOD_LABELS[m], m) for m in METHODS], value=method, style={"button_width": "auto"}
        )
        self.view = W.ToggleButtons(
            options=[("one step", "step"), ("all steps", "matrix")], value=view, style={"button_width": "auto"}
        )
        self._steps: dict[int, object] = {}  # step -> a one-row record of it
        self.record = record  # the whole matrix, once made
        if record is not None:
            self.ids, self.prompt_len = record.ids, record.prompt_len
        else:
            self.ids, self.prompt_len = continuation(model, tokenizer, prompt, max_new_tokens)
        n = len(self.ids) - self.prompt_len
        self.step = slider("step", min(step, n - 1), 0, n - 1)
        caption = (
            "The model continues the prompt greedily; each generated token's logit is split among the tokens "
            "before it (their token embeddings; positions stay). Red pushed the token up, blue pushed it down."
        )
        controls = [self.prompt, row(self.new_tokens, self.method), row(self.view, self.step)]
        super().__init__(controls, self._figure(), caption)
        for w in (self.prompt, self.new_tokens, self.method):
            w.observe(self.guarded(self._rerun), names="value")
        for w in (self.view, self.step):
            w.observe(self.guarded(self._redraw), names="value")
        self._describe()

    def step_record(self, step: int):
        """(record, row) of one step: the matrix's row if the matrix exists, else that step alone (made once)."""
        if self.record is not None:
            return self.record, step
        if step not in self._steps:
            t0 = time.perf_counter()
            self._steps[step] = attribution_record(
                self.model,
                self.tokenizer,
                self.ids,
                positions=[self.prompt_len + step],
                prompt_len=self.prompt_len,
                method=self.method.value,
                steps=self.ig_steps,
            )
            self.run_s = time.perf_counter() - t0
        return self._steps[step], 0

    def matrix(self):
        """The record of every step (made once per prompt, length and method)."""
        if self.record is None:
            t0 = time.perf_counter()
            self.record = attribution_record(
                self.model,
                self.tokenizer,
                self.ids,
                prompt_len=self.prompt_len,
                method=self.method.value,
                steps=self.ig_steps,
            )
            self.run_s = time.perf_counter() - t0
        return self.record

    def _figure(self):
        if self.view.value == "matrix":
            return plots.attribution_matrix(self.matrix(), width=self.width)
        return plots.attribution_tokens(*self.step_record(self.step.value), width=self.width)

    def relayout(self) -> None:
        replace_figure(self.figure, self._figure())  # the records are kept: this only redraws

    def _rerun(self, change=None) -> None:
        if not self.prompt.value:
            raise ValueError("the prompt is empty; type at least one character")
        self.record, self._steps = None, {}
        if change is None or change["owner"] is not self.method:
            self.ids, self.prompt_len = continuation(
                self.model, self.tokenizer, self.prompt.value, self.new_tokens.value
            )
        n = len(self.ids) - self.prompt_len
        with self.step.hold_trait_notifications():
            self.step.max = n - 1
            self.step.value = min(self.step.value, n - 1)
        self._redraw()

    def _redraw(self, change=None) -> None:
        replace_figure(self.figure, self._figure())
        self._describe()

    def _describe(self) -> None:
        written = "".join(self.tokenizer.tokens(self.ids[self.prompt_len :].tolist()))
        took = getattr(self, "run_s", None)
        self.set_status(
            f"{len(self.ids) - self.prompt_len} generated: {written!r} · {METHOD_LABELS[self.method.value]}"
            + (f" · computed in {took:.2f} s" if took is not None else "")
        )
