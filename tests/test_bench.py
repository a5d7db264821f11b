"""The benchmark harness: the report's shape and honesty, never its timings.

One smoke run goes through the CLI's own code path (`cli(["--smoke", ...])`) with tiny shapes and 2 repeats.
A broken measurement must cost its row, not the report, and a run that dies late must leave its rows on disk.
"""

import dataclasses
import json
import math
import multiprocessing

import pytest
import torch

import gptviz.bench
import gptviz.bench.peak_memory
import gptviz.bench.real_model
import gptviz.bench.rows
from gptviz import GPT, GPTConfig, capture, pretrained
from gptviz.bench import (
    HIGHER_IS_BETTER,
    Bench,
    MeasurementError,
    make_comparison,
    make_plan,
    measure_pair,
    memory_probe,
    memory_workload,
    oriented_ratio,
    peak_bf16_flops,
    run_memory_probe,
    smollm2_rows,
    train_flops_per_token,
    without_hooks,
)
from gptviz.bench.memory import _probe_in_child, smollm2_probe
from gptviz.commands.bench import cli

COMPARISON_KEYS = {
    "name",
    "ours",
    "peer",
    "unit",
    "ratio",
    "ours_min",
    "ours_max",
    "peer_min",
    "peer_max",
    "repeats",
    "notes",
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    assert cli(["--smoke", "--device", "cpu", "--out", str(out)]) == 0
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_oriented_ratio_means_bigger_is_better_for_gptviz():
    assert oriented_ratio(200.0, 100.0, "tokens/s") == 2.0  # twice the throughput
    assert oriented_ratio(50.0, 100.0, "ms") == 2.0  # half the time
    assert oriented_ratio(50.0, 100.0, "MB") == 2.0  # half the memory
    with pytest.raises(ValueError, match="unknown unit"):
        oriented_ratio(1.0, 1.0, "furlongs")


def test_a_zero_measurement_says_so_instead_of_dividing_by_it():
    # issue 15: a peer's 0 ended a full run with ZeroDivisionError, and no JSON was written
    for ours, peer, side in ((100.0, 0.0, "peer"), (0.0, 100.0, "gptviz"), (math.nan, 1.0, "gptviz")):
        for unit in HIGHER_IS_BETTER:
            with pytest.raises(MeasurementError, match=f"{side} measured"):
                oriented_ratio(ours, peer, unit)
    with pytest.raises(MeasurementError):
        make_comparison("x", [10.0, 10.0], [10.0, 0.0], "tokens/s")


def test_a_broken_measurement_is_a_skipped_row_with_its_reason():
    bench = Bench(make_plan("smoke"), "cpu", log=lambda line: None)
    assert bench.record("memory row", lambda: make_comparison("memory row", [5.0], [0.0], "MB")) is None

    def peer_that_raises():
        raise RuntimeError("peer exploded")

    assert bench.compare("timed row", lambda: None, peer_that_raises, 1) is None
    ok = bench.compare("fine row", lambda: None, lambda: None, 1)
    assert [c.name for c in bench.comparisons] == ["fine row"] and ok is bench.comparisons[0]
    reasons = {s["name"]: s["reason"] for s in bench.skipped}
    assert reasons["memory row"].startswith("MeasurementError: peer measured 0.0 MB")
    assert reasons["timed row"] == "RuntimeError: peer exploded"


def test_run_writes_the_report_as_it_goes_and_survives_a_section_that_raises(tmp_path, monkeypatch):
    out, on_disk = tmp_path / "partial.json", []

    def train_steps(self):
        self.record("fake row", lambda: make_comparison("fake row", [2.0], [1.0], "tokens/s"))

    def forwards(self):
        raise ZeroDivisionError("float division by zero")

    def generation(self):
        on_disk.append(json.loads(out.read_text()))  # what a crash from here on would leave behind
        raise KeyboardInterrupt  # not a measurement failure: it stops the run

    monkeypatch.setattr(Bench, "train_steps", train_steps)
    monkeypatch.setattr(Bench, "forwards", forwards)
    monkeypatch.setattr(Bench, "generation", generation)
    with pytest.raises(KeyboardInterrupt):
        gptviz.bench.run("smoke", "cpu", log=lambda line: None, out=out)
    for report in (on_disk[0], json.loads(out.read_text())):
        assert report["complete"] is False and [c["name"] for c in report["comparisons"]] == ["fake row"]
        assert report["skipped"] == [
            {"name": "forward section", "reason": "stopped by ZeroDivisionError: float division by zero"}
        ]
    assert "**partial**" in out.with_suffix(".md").read_text()

    monkeypatch.setattr(Bench, "generation", lambda self: None)
    report = gptviz.bench.run("smoke", "cpu", log=lambda line: None, out=out)
    assert report["complete"] is True and json.loads(out.read_text()) == report
    assert [s["name"] for s in report["skipped"]][0] == "forward section"


def test_a_zero_timing_in_a_run_costs_its_row_and_the_json_is_still_written(tmp_path, monkeypatch):
    # issue 15 through `gptviz bench --out`: a peer's 0 ended the run in oriented_ratio and no JSON was written
    real, calls = gptviz.bench.rows.measure_pair, []

    def first_peer_reads_zero(ours, peer, work, *args):
        o, q = real(ours, peer, work, *args)
        calls.append(1)
        return (o, [0.0] * len(q)) if len(calls) == 1 else (o, q)

    monkeypatch.setattr(gptviz.bench.rows, "measure_pair", first_peer_reads_zero)
    out = tmp_path / "results.json"
    assert cli(["--smoke", "--device", "cpu", "--only", "forward", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"] is True and len(calls) >= 3
    (broken,) = [s for s in report["skipped"] if s["reason"].startswith("MeasurementError")]
    assert broken["name"].startswith("forward ") and "peer measured 0.0 tokens/s" in broken["reason"]
    names = [c["name"] for c in report["comparisons"]]
    assert broken["name"] not in names and len(names) == len(calls) - 1  # every later row was measured
    assert broken["name"] in out.with_suffix(".md").read_text()


def test_memory_probes_that_read_zero_or_die_are_skipped_rows_in_the_report(tmp_path, monkeypatch):
    def probe(spec, device):
        if spec["impl"] == "ours":
            return 5.0
        if spec["kind"] == "attention":
            raise RuntimeError("memory probe died without a result (exit code -9)")
        return 0.0 if spec["kind"] == "train" else 4.0

    monkeypatch.setattr(gptviz.bench.peak_memory, "run_memory_probe", probe)
    out = tmp_path / "memory.json"
    gptviz.bench.run("smoke", "cpu", only="memory", memory=True, log=lambda line: None, out=out)
    report = json.loads(out.read_text())
    reasons = {s["name"].split(" ")[2]: s["reason"] for s in report["skipped"]}
    assert reasons["train"].startswith("MeasurementError: peer measured 0.0 MB")
    assert reasons["forward"] == "RuntimeError: memory probe died without a result (exit code -9)"
    (row,) = report["comparisons"]
    assert row["name"].startswith("peak memory: generate") and row["ratio"] == 0.8 and report["complete"] is True


def test_only_help_lists_every_section_and_an_unknown_section_is_an_error(tmp_path, capsys):
    assert list(gptviz.bench.SECTIONS) == [
        "train",
        "forward",
        "generate",
        "families",
        "decode",
        "memory",
        "cuda",
        "smollm2",
    ]
    assert cli(["--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "whose name contains this: train, forward, generate, families, decode, memory, cuda, smollm2 (" in help_text
    out = tmp_path / "r.json"
    assert cli(["--smoke", "--device", "cpu", "--only", "famlies", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no bench section is named like 'famlies'" in err and "families, decode" in err and not out.exists()


def test_make_comparison_uses_medians_and_pairs():
    c = make_comparison("x", [10.0, 30.0, 20.0], [10.0, 10.0, 10.0], "tokens/s")
    assert (c.ours, c.peer, c.ratio) == (20.0, 10.0, 2.0)
    assert (c.ours_min, c.ours_max, c.peer_min, c.peer_max, c.repeats) == (10.0, 30.0, 10.0, 10.0, 3)
    assert c.paired_ratio == 2.0


def test_measure_pair_alternates_and_counts_work():
    calls = []
    ours, peer = measure_pair(
        lambda: calls.append("A"), lambda: calls.append("B"), work=5, repeats=4, warmup=1, min_time=0.0, device="cpu"
    )
    assert len(ours) == len(peer) == 4 and all(s > 0 for s in ours + peer)
    timed = calls[4:]  # after warm-up and calibration (2 calls each)
    assert timed == list("ABBAABBA")


LLAMA_TINY = dict(
    bias=False, pos_encoding="rotary", norm="rmsnorm", activation="silu", mlp_gated=True, n_inner=24, n_kv_head=1
)


@pytest.mark.parametrize("family", [{}, LLAMA_TINY], ids=["gpt2", "llama"])
def test_without_hooks_is_the_same_function_and_never_calls_a_hook(family):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16, **family)).eval()
    bare = without_hooks(model)
    x = torch.randint(0, 30, (2, 8))
    with torch.no_grad():
        assert torch.equal(bare(x), model(x))
        with capture(bare, "*") as cap:  # hook points still exist on the copy, but nothing reaches them
            bare(x)
        assert len(cap) == 0
        cache_a, cache_b = model.new_kv_cache(1, 9), bare.new_kv_cache(1, 9)
        model(x[:1], cache_a), bare(x[:1], cache_b)
        assert torch.equal(model(x[:1, :1], cache_a), bare(x[:1, :1], cache_b))


def test_flops_and_peaks():
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16))
    n = model.num_parameters(exclude_embeddings=True)
    assert train_flops_per_token(model, 16) == 6 * n + 12 * 2 * 16 * 16
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("a toaster") is None


def test_memory_probe_and_each_workload_run():
    # in-process here (the bench runs each probe in a fresh process, where the number means something)
    mb = memory_probe(dict(kind="attention", impl="ours", shape="tiny", B=1, T=4, n=2))
    assert mb >= 0 and math.isfinite(mb)
    for kind, impl in (("train", "ours"), ("train", "hf"), ("generate", "ours"), ("generate", "hf")):
        memory_workload(dict(kind=kind, impl=impl, shape="tiny", B=1, T=4, n=2), "cpu")()


@pytest.mark.slow  # a fresh process imports torch and transformers: ~15 s on 2 busy cores
def test_cpu_memory_probe_measures_its_own_process_not_the_parents_peak():
    # A child's getrusage peak starts at its parent's (kernel: kept across exec), so with a parent bigger than
    # the workload every probe read 0 MB. Make this process's peak high first; the probe must still see growth.
    ballast = torch.ones(64 * 2**20)  # 256 MB, every page touched
    mb = run_memory_probe(dict(kind="train", impl="ours", shape="small", B=2, T=16, n=2), "cpu")
    del ballast
    assert mb > 1, mb  # weights + AdamW state of ~0.8M parameters, at least


def test_a_failed_memory_probe_sends_back_its_traceback():
    # the spawned process's body, run here: the parent raises with this text (run_memory_probe)
    receive, send = multiprocessing.Pipe(duplex=False)
    _probe_in_child(send, dict(kind="train", impl="ours", shape="no such shape", B=1, T=4, n=2), "cpu", 1)
    ok, text = receive.recv()
    assert not ok and "KeyError: 'no such shape'" in text


def test_smoke_report_is_well_formed(smoke):
    report, _ = smoke
    assert report["mode"] == "smoke" and report["complete"] is True
    for key in ("cpu", "cores", "torch_threads", "date", "device"):
        assert key in report["machine"]
    for key in ("python", "torch", "transformers", "gptviz", "transformer_lens"):
        assert key in report["versions"]
    assert len(report["load_before"]) == len(report["load_after"]) == 3
    assert isinstance(report["warnings"], list) and isinstance(report["skipped"], list)
    names = [c["name"] for c in report["comparisons"]]
    assert len(names) == len(set(names)) >= 5
    for section in ("train step", "forward", "idle hooks", "generate"):
        assert any(n.startswith(section) for n in names), section
    for c in report["comparisons"]:
        assert COMPARISON_KEYS <= set(c)
        assert c["unit"] in HIGHER_IS_BETTER
        for key in ("ours", "peer", "ratio", "ours_min", "ours_max", "peer_min", "peer_max"):
            assert math.isfinite(c[key]) and c[key] > 0, (c["name"], key)
        assert c["ours_min"] <= c["ours"] <= c["ours_max"] and c["peer_min"] <= c["peer"] <= c["peer_max"]
        assert c["ratio"] == pytest.approx(oriented_ratio(c["ours"], c["peer"], c["unit"]))
        assert c["repeats"] >= 1
    # no GPU here: the CUDA section says why it did not run, it does not vanish
    if report["machine"]["device"] == "cpu":
        assert any("CUDA" in s["name"] for s in report["skipped"])
    # skipped only by design (optional peer, mode, device), never because something broke
    for s in report["skipped"]:
        assert s["name"].startswith(("TransformerLens", "peak memory", "CUDA", "SmolLM2", "compiled decode")), s
    # the model families against their transformers classes, the same greedy tokens
    for family in ("llama", "gpt_neox"):
        (gen,) = [c for c in report["comparisons"] if c["name"].startswith(f"{family} generate greedy")]
        assert "same tokens as HF: True" in gen["notes"]
        assert any(n.startswith(f"{family} forward") for n in names)
    # the real model's rows are listed, skipped in smoke mode (they take minutes), never run
    smol = {s["name"]: s["reason"] for s in report["skipped"] if s["name"].startswith("SmolLM2")}
    assert list(smol) == list(smollm2_rows(make_plan("smoke")).values())
    assert all("smoke mode" in r and "--only smollm2" in r for r in smol.values())
    assert report["settings"]["smollm2"] is False


def test_smoke_markdown_has_a_row_per_comparison(smoke):
    report, md = smoke
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| comparison")]
    assert len(rows) == len(report["comparisons"])
    for c in report["comparisons"]:
        assert any(row.startswith(f"| {c['name']} |") and f"{c['ratio']:.3f}" in row for row in rows)
    for s in report["skipped"]:
        assert s["name"] in md


def test_mixed_precision_section_runs_without_a_gpu():
    # the CUDA section's body (bf16 autocast training step + MFU bookkeeping), eager only, on the CPU
    bench = Bench(make_plan("smoke"), "cpu", log=lambda line: None)
    bench.mixed_precision_steps((False,))
    (c,) = bench.comparisons
    assert c.name.startswith("train step bf16 autocast") and c.ratio > 0
    assert bench.extra["mfu"][0]["flops_per_token"] > 0 and bench.extra["mfu"][0]["ours_mfu"] is None


def test_compiled_decode_row_without_the_slow_compiler(monkeypatch):
    # the section's bookkeeping with torch.compile's front end only (the C++ back end takes minutes on 2 cores)
    import gptviz.decode
    from gptviz.bench.decoding import compiled_decode

    real = torch.compile
    monkeypatch.setattr(gptviz.decode.torch, "compile", lambda fn, **kw: real(fn, backend="eager", fullgraph=True))
    plan = make_plan("smoke")
    bench = Bench(plan, "cpu", log=lambda line: None)
    compiled_decode(bench)
    assert bench.skipped[0]["name"] == "compiled decode step vs eager" and not bench.comparisons
    plan.compile_decode = True
    compiled_decode(bench)
    (c,) = bench.comparisons
    assert c.name.startswith("generate greedy, compiled decode step vs eager") and "same tokens: True" in c.notes
    assert "first call" in c.notes and "pays" in c.notes


# ---- SmolLM2-135M: planned, selectable, skipped with a reason; never run here (minutes of a real model) ------
def test_smollm2_rows_are_planned_for_the_full_mode_only():
    rows = smollm2_rows(make_plan("full"))
    assert set(rows) == {"forward", "generate", "recording", "memory load", "memory generate"}
    assert rows["forward"] == "SmolLM2-135M forward B1 T128"
    assert rows["generate"] == "SmolLM2-135M generate greedy 100 tokens"
    assert "records + attention rows vs plain gptviz" in rows["recording"]
    assert make_plan("full").smollm2 and not make_plan("quick").smollm2 and not make_plan("smoke").smollm2
    smol = make_plan("full").smol
    assert (smol.forward_T, smol.gen_tokens) == (128, 100)


def test_only_smollm2_selects_the_section_in_any_mode(monkeypatch):
    seen = []
    monkeypatch.setattr(Bench, "smollm2", lambda self: seen.append((self.plan.smollm2, self.plan.smollm2_memory)))
    report = gptviz.bench.run("smoke", "cpu", only="smollm2", log=lambda line: None)
    assert seen == [(True, True)] and report["comparisons"] == []  # nothing else ran
    gptviz.bench.run("quick", "cpu", only="smol", memory=False, log=lambda line: None)
    assert seen[-1] == (True, False)  # --no-memory also switches off its memory rows
    gptviz.bench.run("smoke", "cpu", only="cuda", log=lambda line: None)
    assert len(seen) == 2  # not selected: not run


def test_smollm2_rows_are_skipped_with_the_install_hint_when_the_package_is_missing(monkeypatch):
    spec = pretrained.NAMED["smollm2-135m"]
    monkeypatch.setitem(pretrained.NAMED, "smollm2-135m", dataclasses.replace(spec, package="no_such_smollm2_pkg"))

    def must_not_load(*a, **kw):
        raise AssertionError("the model must not be loaded when its package is missing")

    monkeypatch.setattr(gptviz.bench.real_model, "build_smollm2", must_not_load)
    bench = Bench(make_plan("full"), "cpu", log=lambda line: None)
    bench.smollm2()
    assert bench.comparisons == []
    rows = smollm2_rows(bench.plan)
    assert [s["name"] for s in bench.skipped] == list(rows.values())
    for s in bench.skipped:
        assert "no_such_smollm2_pkg" in s["reason"] and "not installed" in s["reason"]
        assert spec.install in s["reason"]


def test_smollm2_memory_probe_refuses_to_measure_a_conversion(tmp_path, monkeypatch):
    # without the cached checkpoint the probe would time transformers' GGUF conversion, not a loaded model
    monkeypatch.setenv("GPTVIZ_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="no cached gptviz checkpoint"):
        smollm2_probe(dict(kind="smollm2-load", n=0), "cpu")
