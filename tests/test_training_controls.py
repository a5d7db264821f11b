"""The training dashboard's controls tell the truth while a notebook cell trains.

In a real kernel (jupyter_client, no browser): a cell that awaits `dashboard.train(n)` leaves the kernel free,
so a Stop click sent as the browser sends it (a comm message) stops the run mid-cell; Kernel > Interrupt during
that cell says "interrupted" and offers Resume; a cell that runs `dashboard.run(n)` disables the buttons and says
why. Without a kernel: the status names the run's target while training, tokens/s is wall-time speed, and the
loss plot keeps the learning rate away from the uniform-guess line.
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest
import torch

from gptviz import GPT, GPTConfig, get_tokenizer
from gptviz.data import TokenDataset
from gptviz.errors import InputError
from gptviz.plots import loss_curves
from gptviz.train import TrainConfig, Trainer
from gptviz.widgets import TrainingDashboard

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n" * 8

SETUP = textwrap.dedent(
    """
    import time, torch
    from gptviz import GPT, GPTConfig, get_tokenizer
    from gptviz.data import TokenDataset
    from gptviz.train import Trainer, TrainConfig
    from gptviz.widgets import TrainingDashboard
    text = {text!r}
    tok = get_tokenizer("char", text=text)
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    data = TokenDataset.from_text(text, tok)
    cfg = TrainConfig(batch_size=2, block_size=16, max_steps=10_000, warmup_steps=2, eval_interval=0,
                      snapshot_interval=0, device="cpu", probe_text="ROMEO:")
    tr = Trainer(m, tok, data, data, cfg, on_step=lambda t, s: time.sleep(0.02))  # ~50 steps/s at most
    d = TrainingDashboard(tr, chunk=5, sample_every=10**6, sample_tokens=4)
    print("STOP_COMM", d.stop_button.comm.comm_id)
    """
).format(text=TEXT)


def tiny_trainer(steps: int = 40, pause: float = 0.0) -> Trainer:
    tok = get_tokenizer("char", text=TEXT)
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    data = TokenDataset.from_text(TEXT, tok)
    cfg = TrainConfig(
        batch_size=2,
        block_size=16,
        max_steps=steps,
        warmup_steps=2,
        eval_interval=10,
        eval_batches=1,
        snapshot_interval=0,
        device="cpu",
        probe_text="ROMEO:",
    )
    return Trainer(m, tok, data, data, cfg, on_step=(lambda t, s: time.sleep(pause)) if pause else None)


# --------------------------------------------------------------------------------------------- a real kernel


@pytest.fixture()
def kernel():
    jc = pytest.importorskip("jupyter_client")
    km = jc.KernelManager(kernel_name="python3")
    km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"], env={"OMP_NUM_THREADS": "1"})
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc, code: str, timeout: float = 120) -> tuple[dict, str]:
    """Run `code`, return (execute_reply content, everything it printed)."""
    msg_id = kc.execute(code)
    return collect(kc, msg_id, timeout)


def collect(kc, msg_id: str, timeout: float = 120) -> tuple[dict, str]:
    out = []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=max(1, deadline - time.monotonic()))
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=max(1, deadline - time.monotonic()))
    return reply["content"], "".join(out)


def click(kc, comm_id: str) -> None:
    """What the browser sends when a Button is clicked (ipywidgets' custom "click" event)."""
    kc.shell_channel.send(
        kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}})
    )


def wait_for_step(kc, at_least: int, timeout: float = 60) -> None:
    """Block until the kernel's trainer has passed `at_least` steps (read from a second, concurrent view: the
    iopub status updates the dashboard publishes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=max(1, deadline - time.monotonic()))
        state = msg["content"].get("data", {}).get("state", {}) if msg["msg_type"] == "comm_msg" else {}
        value = str(state.get("value", ""))
        if "step " in value and "training" in value:
            step = int(value.split("step ")[1].split(" ")[0])
            if step >= at_least:
                return
    raise AssertionError(f"the dashboard never reported step {at_least} within {timeout} s")


def test_stop_works_while_a_cell_awaits_training(kernel):
    km, kc = kernel
    reply, out = execute(kc, SETUP)
    assert reply["status"] == "ok", out
    stop_comm = out.split("STOP_COMM ")[1].split()[0]
    msg_id = kc.execute("stats = await d.train(5000)\nprint('TRAINED', len(stats), tr.step)")
    wait_for_step(kc, 5)
    t_click = time.monotonic()
    click(kc, stop_comm)  # the cell is still running: this must reach the kernel now, not when it ends
    reply, out = collect(kc, msg_id, timeout=120)
    assert reply["status"] == "ok", out
    n = int(out.split("TRAINED ")[1].split()[0])
    assert 5 <= n < 1000, f"Stop did not stop the run during the cell: {n} of 5000 steps trained"
    assert time.monotonic() - t_click < 30
    reply, out = execute(kc, "print(d.status.value)\nprint(d.resume_button.disabled, d.stop_button.disabled)")
    assert "stopped" in out and "press Resume" in out and "of 5000" in out, out
    assert "True True" not in out and "False True" in out  # Resume on, Stop off


def test_kernel_interrupt_during_await_says_interrupted_and_offers_resume(kernel):
    km, kc = kernel
    reply, out = execute(kc, SETUP)
    assert reply["status"] == "ok", out
    msg_id = kc.execute("stats = await d.train(5000)")
    wait_for_step(kc, 5)
    km.interrupt_kernel()
    reply, out = collect(kc, msg_id, timeout=120)
    assert reply["status"] == "error"  # the cell ends (CancelledError): Run All stops here
    reply, out = execute(kc, "print(d.status.value)\nprint(d.running, d.resume_button.disabled, tr.step)")
    assert "interrupted" in out and "press Resume" in out, out
    running, resume_disabled, step = out.strip().splitlines()[-1].split()
    assert running == "False" and resume_disabled == "False" and 5 <= int(step) < 5000


def test_a_cell_running_run_disables_the_buttons_and_says_why(kernel):
    km, kc = kernel
    reply, out = execute(kc, SETUP)
    assert reply["status"] == "ok", out
    code = (
        "seen = []\n"
        "tr.on_step = lambda t, s: seen.append((d.stop_button.disabled, d.save_button.disabled, d.note.value,"
        " d.status.value)) if t.step == 3 else None\n"
        "d.run(6)\n"
        "import json; print('SEEN', json.dumps(seen[0]))\n"
        "print('AFTER', json.dumps([d.stop_button.disabled, d.start_button.disabled, d.note.value]))"
    )
    reply, out = execute(kc, code)
    assert reply["status"] == "ok", out
    stop_off, save_off, note, status = json.loads(out.split("SEEN ")[1].splitlines()[0])
    assert stop_off and save_off and "Kernel ▸ Interrupt" in note
    assert status.count("training in this cell") == 1 and "of 6" in status
    assert json.loads(out.split("AFTER ")[1].splitlines()[0]) == [True, False, ""]


# ------------------------------------------------------------------------------------------ without a kernel


def test_status_while_training_names_the_target_and_wall_speed():
    tr = tiny_trainer(steps=400, pause=0.01)
    d = TrainingDashboard(tr, chunk=5, sample_every=10**6, sample_tokens=4)
    seen = []
    tr.on_step = lambda t, s: seen.append(d.status.value) if t.step == 2 else None
    t0 = time.perf_counter()
    d.run(20)
    wall = time.perf_counter() - t0
    assert "training in this cell" in seen[0] and "step 1 of 20" not in seen[0] and "of 20" in seen[0]
    assert "ready" not in seen[0]
    assert d.status.value.startswith("<div") and "done" in d.status.value and "step 20 of 20" in d.status.value
    shown = float(d.status.value.split(" tokens/s")[0].split("·")[-1].replace(",", ""))
    wall_rate = 20 * 2 * 16 / wall  # steps x batch x block tokens over the run's wall time
    per_step = max(s.tokens_per_s for s in tr.history)
    assert shown == pytest.approx(wall_rate, rel=0.35)
    assert shown < 0.8 * per_step  # the pauses and redraws count: not the speed of the fastest step


def test_the_steps_box_shows_what_a_call_trains_and_bad_step_counts_are_refused():
    d = TrainingDashboard(tiny_trainer(steps=10), chunk=5, sample_every=10**6, sample_tokens=4)
    assert d.steps.value == 10  # what Start would train
    d.run(3)
    assert d.steps.value == 3 and d.trainer.step == 3  # the box says what this run trained, not the preset's 10
    d.start(20_000_000)  # more than the box's maximum: the box grows instead of clamping silently
    assert d.steps.value == 20_000_000
    d.stop()
    d.wait(60)
    for bad in (0, -5, 2.5, "100", True):
        with pytest.raises(InputError, match="whole number >= 1"):
            d.run(bad)
    with pytest.raises(InputError, match=r"train\(\) for the number in the steps box"):
        d.start(0)  # 0 used to mean "the box's number" without a word
    assert d.steps.value == 20_000_000 and not d.running


def test_stop_when_nothing_runs_leaves_the_status_true():
    d = TrainingDashboard(tiny_trainer(steps=10), chunk=5, sample_every=10**6, sample_tokens=4)
    d.run(10)
    before = d.status.value
    d.stop_button.click()  # e.g. a click that waited for the training cell to end
    assert d.status.value == before and "stopping" not in d.status.value and d.last_error is None


def test_learning_rate_keeps_below_the_uniform_guess_line_and_has_no_ticks_before_data():
    empty = loss_curves([], vocab_size=65)
    assert empty.layout.yaxis2.visible is False
    tr = tiny_trainer(steps=12)
    tr.train_steps(12)
    fig = loss_curves(tr.history, vocab_size=65)
    lo, hi = fig.layout.yaxis2.range
    peak = max(s.lr for s in tr.history)
    assert lo == 0 and peak / hi <= 0.5  # the LR peak sits in the lower half; ln V's line and label at the top
    assert fig.layout.yaxis2.visible is True
