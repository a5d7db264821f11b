"""The one-token decode step (gptviz.decode) and the attention rows recorded beside SDPA.

Invariants: the eager step's logits are the module path's bit for bit; greedy tokens are identical on every
path (module path, eager step, static/compiled step, no cache); recorded rows equal the explicit attention
path's rows (float tolerance), sum to 1, and cost one host copy per step.
"""

import pytest
import torch
from conftest import LLAMA_PARTS

from gptviz import GPT, GPTConfig, capture, hooks
from gptviz import steps as steps_module
from gptviz.decode import DecodeStep, DecodeWindow, NewestQueries, fast_path_reason, want_compile
from gptviz.sampling import generate
from gptviz.steps import generate_steps

FAMILIES = {
    "gpt2": dict(),
    "llama-gqa": dict(n_kv_head=2, **LLAMA_PARTS),
    "neox-parallel": dict(pos_encoding="rotary", rotary_dim=4, parallel_residual=True, activation="gelu_exact"),
    "sinusoidal": dict(pos_encoding="sinusoidal"),
}


def make(family: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=61, block_size=48, n_layer=2, n_head=4, n_embd=32, **FAMILIES[family])
    model = GPT(config).eval()
    with torch.no_grad():  # random init leaves norms at identity and biases at 0, which would hide mistakes
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def prompt(n: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 61, (1, n), generator=torch.Generator().manual_seed(seed))


def idle_listener(x, hook):  # a hook that changes nothing, but makes generation take the module path
    return None


@pytest.mark.parametrize("family", FAMILIES)
def test_the_eager_step_is_the_module_path_bit_for_bit(family):
    model = make(family)
    assert fast_path_reason(model) is None
    ids = prompt()
    caches = [model.new_kv_cache(1, 16) for _ in range(2)]
    step = DecodeStep(model)
    with torch.no_grad():
        for cache in caches:
            model(ids, cache)
        tok = ids[:, -1:]
        for _ in range(5):
            via_modules = model(tok, caches[0])[:, -1].float()
            via_step, rows = step(tok, caches[1])
            assert rows is None
            assert torch.equal(via_modules, via_step)
            assert caches[0].pos == caches[1].pos
            tok = via_step.argmax(-1, keepdim=True)
    assert torch.equal(caches[0].k[:, :, :, : caches[0].pos], caches[1].k[:, :, :, : caches[1].pos])


def test_a_full_cache_is_refused_before_any_position_is_read():
    model = make("gpt2")  # learned positions: reading row block_size of the table would fail less clearly
    cache = model.new_kv_cache(1, 48)
    with torch.no_grad():
        model(prompt(48), cache)
        with pytest.raises(ValueError, match="KV cache holds 48 positions; cannot add one at 48"):
            DecodeStep(model)(prompt(1), cache)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_are_identical_on_every_path(family):
    model = make(family)
    ids = prompt()
    fast = generate(model, ids, 30)
    no_cache = generate(model, ids, 30, use_cache=False)
    with hooks(model, {"blocks.0.hook_resid_pre": idle_listener}):  # a listener: the module path runs
        modules = generate(model, ids, 30)
    assert torch.equal(fast, modules) and torch.equal(fast, no_cache)
    recorded = [r.token_id for r in generate_steps(model, ids, 30, record_attention=True)]
    assert recorded == fast[0, ids.shape[1] :].tolist()


def test_a_replaced_linear_or_a_listener_sends_decoding_through_the_modules():
    from gptviz.lora import add_lora

    model = make("gpt2")
    assert fast_path_reason(model) is None
    add_lora(model, rank=2)
    assert "replaced" in fast_path_reason(model)
    ids = prompt()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # LoRA's B starts at 0: make the adapter change the output
                p.add_(0.5)
    plain = generate(model, ids, 12)
    with hooks(model, {"blocks.0.hook_resid_pre": idle_listener}):
        assert torch.equal(generate(model, ids, 12), plain)


@pytest.mark.parametrize("family", ["gpt2", "llama-gqa"])
def test_recorded_rows_match_the_explicit_path_and_sum_to_one(family):
    model = make(family)
    ids = prompt(5)
    records = list(generate_steps(model, ids, 12, record_attention=True))
    seq = torch.cat([ids[0], torch.tensor([r.token_id for r in records])])[None]
    with torch.no_grad(), capture(model, "blocks.*.attn.hook_pattern") as cap:
        model(seq)  # one explicit forward over the whole sequence: row i is position i's attention
    explicit = torch.stack([cap[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(2)])  # (L, nh, T, T)
    for r in records:
        q = r.position - 1  # the query whose row chose this token
        assert r.attention.shape == (2, 4, q + 1)
        torch.testing.assert_close(r.attention, explicit[:, :, q, : q + 1], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(r.attention.sum(-1), torch.ones(2, 4))


def test_rows_from_a_listening_layer_are_what_the_listener_left():
    model = make("gpt2")

    def uniform(pattern, hook):  # an intervention on layer 0: every key gets the same weight
        return torch.full_like(pattern, 1.0) / pattern.shape[-1]

    with hooks(model, {"blocks.0.attn.hook_pattern": uniform}):
        r = next(iter(generate_steps(model, prompt(6), 1, record_attention=True)))
    torch.testing.assert_close(r.attention[0], torch.full((4, 6), 1 / 6))


def test_output_attentions_rows_per_step_and_layer():
    model = make("llama-gqa")
    ids = prompt(4)
    out = generate(model, ids, 6, output_attentions=True, return_dict_in_generate=True)
    assert len(out.attentions) == 6 and len(out.attentions[0]) == 2
    for t, step in enumerate(out.attentions):
        assert step[0].shape == (1, 4, 1, 4 + t)
        torch.testing.assert_close(step[1].sum(-1), torch.ones(1, 4, 1))


def test_one_host_copy_per_chunk_of_steps(monkeypatch):
    """Records are summarised one step first, then in chunks of up to CHUNK steps: one host copy per chunk; a slow step
    flushes its chunk early (MAX_WAIT_S) so a live view never waits long."""
    model = make("gpt2")
    calls = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self, *a, **kw):
        calls.append(tuple(self.shape))
        return real_cpu(self, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    monkeypatch.setattr(steps_module, "MAX_WAIT_S", 1e9)
    monkeypatch.setattr(steps_module, "CHUNK", 8)
    records = list(generate_steps(model, prompt(5), 20, k=5, record_attention=True))
    assert len(records) == 20 and [r.step for r in records] == list(range(20))
    assert len(calls) == 4  # chunks of 1, 8, 8 and the last 3
    calls.clear()
    monkeypatch.setattr(steps_module, "MAX_WAIT_S", -1.0)  # every step is "slow": one record per copy
    assert len(list(generate_steps(model, prompt(5), 6, k=5))) == 6 and len(calls) == 6


@pytest.mark.parametrize(
    "knobs",
    [
        dict(),  # greedy: one stage per step
        dict(do_sample=True, temperature=1.7, top_k=20, top_p=0.9, seed=3),  # several stages; picks off the top-k
        dict(repetition_penalty=1.3, min_new_tokens=5, eos_token_id=[7, 11]),  # the min_new_tokens stage ends at 5
    ],
)
def test_chunked_records_equal_one_by_one_records(monkeypatch, knobs):
    """A chunk summarises many steps at once (stages counted per step, rows of one product); every field must be what
    summarising each step alone gives."""
    model = make("llama-gqa")

    def records(chunk: int):
        monkeypatch.setattr(steps_module, "CHUNK", chunk)
        monkeypatch.setattr(steps_module, "MAX_WAIT_S", 1e9 if chunk > 1 else -1.0)
        return list(generate_steps(model, prompt(5), 24, k=4, record_attention=True, **knobs))

    alone, chunked = records(1), records(64)
    assert len(alone) == len(chunked) == 24
    assert len({len(r.stages) for r in alone}) == (2 if "min_new_tokens" in knobs else 1)
    if knobs.get("do_sample"):
        assert any(r.token_id not in r.candidates[:-1].tolist() for r in alone)  # the last-slot rule is exercised
    for a, b in zip(alone, chunked, strict=True):
        assert (a.step, a.position, a.token_id, a.context_start) == (b.step, b.position, b.token_id, b.context_start)
        assert a.prob == pytest.approx(b.prob, abs=1e-6) and a.entropy == pytest.approx(b.entropy, abs=1e-5)
        assert [s.name for s in a.stages] == [s.name for s in b.stages]
        for sa, sb in zip(a.stages, b.stages, strict=True):
            assert torch.equal(sa.ids, sb.ids) and sa.kept == sb.kept
            torch.testing.assert_close(sa.probs, sb.probs, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a.attention, b.attention, atol=1e-6, rtol=1e-5)


def test_records_stream_the_first_token_at_once():
    model = make("gpt2")
    fed = []
    real = DecodeWindow.next_logits

    def counting(self, seqs):
        fed.append(seqs.size(1))
        return real(self, seqs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DecodeWindow, "next_logits", counting)
        it = iter(generate_steps(model, prompt(5), 30, record_attention=True))
        first = next(it)
        assert first.step == 0 and len(fed) == 1  # one forward, one record: nothing waits for a chunk
        rest = list(it)
    assert [r.position for r in rest] == list(range(6, 35)) and len(fed) == 30


# ---- the static (compiled) step -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_the_static_step_agrees_with_the_eager_step(family):
    model = make(family)
    ids = prompt()
    step = DecodeStep(model)
    eager_cache = model.new_kv_cache(1, 48)
    static_cache = model.new_kv_cache(1, 48)  # the full block size: the compiled step's one shape
    with torch.no_grad():
        model(ids, eager_cache)
        model(ids, static_cache)
        tok = ids[:, -1:]
        queries, static_rows = [], []
        for _ in range(6):
            want, pending = step(tok, eager_cache, True)
            pos = torch.tensor([static_cache.pos])
            got, got_rows = step.static_step(tok, pos, static_cache.k, static_cache.v, True)
            static_cache.advance(1)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            assert int(got.argmax()) == int(want.argmax())
            Tk = eager_cache.pos
            assert float(got_rows[:, :, :, Tk:].abs().sum()) == 0.0  # keys past the position weigh nothing
            queries.append(pending)
            static_rows.append(got_rows[:, :, :, :Tk])
            tok = want.argmax(-1, keepdim=True)
        # the eager steps' rows, all six from one product after the fact, are each step's own row
        for rows, expected in zip(NewestQueries.rows(queries), static_rows, strict=True):
            torch.testing.assert_close(rows, expected, atol=1e-6, rtol=1e-5)


def test_the_static_step_traces_as_one_graph():
    # torch.compile's front end (dynamo, fullgraph) on the static step, without the slow C++ back end
    model = make("llama-gqa")
    step = DecodeStep(model)
    step.compiled = torch.compile(DecodeStep.static_step, backend="eager", fullgraph=True)
    ids = prompt()
    ref = generate(model, ids, 10)
    cache = model.new_kv_cache(1, 48)
    with torch.no_grad():
        logits = model(ids, cache)[:, -1]
        out = []
        for _ in range(10):
            tok = logits.argmax(-1, keepdim=True)
            out.append(int(tok))
            logits, rows = step(tok, cache, True)
            assert rows.shape == (1, 2, 4, cache.pos)
    assert out == ref[0, ids.shape[1] :].tolist()


def test_the_compile_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert want_compile(None, cpu, 10_000) is False  # a CPU compile takes longer than it saves (see README)
    assert want_compile(None, cuda, 20) is False and want_compile("auto", cuda, 500) is True
    assert want_compile(True, cpu, 1) is True and want_compile(False, cuda, 10_000) is False
    with pytest.raises(ValueError, match="compile must be"):
        want_compile("yes", cpu, 1)


@pytest.mark.slow
def test_compiled_generation_gives_the_same_tokens():
    # the real thing: inductor's C++ back end on the CPU (a minute on 2 cores; the records' graph is traced above
    # with the eager back end, and compiled on a GPU by tests/test_decode_cuda.py)
    model = make("gpt2")
    ids = prompt()
    eager = generate(model, ids, 20, compile=False)
    assert torch.equal(generate(model, ids, 20, compile=True), eager)
    assert torch.equal(model.generate(ids, max_new_tokens=20, compile=True), eager)  # the compiled graph, reused


def test_generation_takes_the_step_unless_someone_listens(monkeypatch):
    model = make("gpt2")
    calls = []
    real = DecodeStep.__call__
    monkeypatch.setattr(DecodeStep, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    generate(model, prompt(), 9)
    assert len(calls) == 8  # the prompt goes through the modules, every later token through the step
    with hooks(model, {"ln_final.hook_normalized": idle_listener}):
        generate(model, prompt(), 9)
    assert len(calls) == 8


def test_a_model_without_positions_decodes_through_the_step_too():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=61, block_size=48, n_layer=2, n_head=4, n_embd=32, pos_encoding="none")).eval()
    ids = prompt()
    with hooks(model, {"blocks.0.hook_resid_pre": idle_listener}):
        modules = generate(model, ids, 12)
    assert torch.equal(generate(model, ids, 12), modules)
