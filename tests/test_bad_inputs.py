"""Bad input across the public API, written as users write it: every case must end in a gptviz error (a
GptvizError subclass) whose message names the problem, never in a raw error from a library underneath or in
silence, and nothing on disk may be lost or corrupted on the way.

The command line is in test_bad_inputs_cli.py; kill -9 during a checkpoint save and exact resume in
test_bad_inputs_disk.py. Tiny models, CPU only: the whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gptviz
from gptviz import GPT, GPTConfig
from gptviz.checkpoint import save
from gptviz.data import TokenDataset, load_corpus
from gptviz.errors import (
    CheckpointError,
    ConfigError,
    GptvizError,
    HookNameError,
    HookShapeError,
    InputError,
    MissingFileError,
    NonFiniteError,
    PathExistsError,
    PretrainedError,
    TrainingDiverged,
    UsageError,
)
from gptviz.hooks import capture, hooks
from gptviz.presets import build_trainer, load_preset
from gptviz.tokenizers import BPETokenizer, CharTokenizer, get_tokenizer, load_tokenizer
from gptviz.train import TrainConfig

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n" * 20
FAST = settings(
    max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def refused(kind: type[GptvizError], *words: str):
    """pytest.raises for a gptviz error whose message holds every one of `words` (case-insensitive)."""
    assert issubclass(kind, GptvizError)

    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(kind)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._ctx.__exit__(*exc)
            if not handled:  # another exception: let it propagate as it is
                return False
            message = str(self.info.value).lower()
            missing = [w for w in words if w.lower() not in message]
            assert not missing, f"the message does not name {missing}: {self.info.value}"
            return handled

    return _Check()


def digest(folder) -> dict[str, str]:
    """sha256 of every file under `folder` (to show that nothing there changed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer.from_text(TEXT)


@pytest.fixture(scope="module")
def toks(char_tok):
    return {"char": char_tok, "gpt2": get_tokenizer("gpt2"), "bpe": get_tokenizer("bpe", text=TEXT, vocab_size=300)}


@pytest.fixture
def model(char_tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=char_tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()


# ---- model and training configs -------------------------------------------------------------------------
BAD_MODEL_FIELDS = [
    ({"n_layer": "2"}, "n_layer", "whole number"),
    ({"n_layer": 2.0}, "n_layer", "whole number"),
    ({"n_layer": True}, "n_layer", "whole number"),
    ({"n_layer": 0}, "n_layer", "positive"),
    ({"n_embd": 50, "n_head": 3}, "divisible", "n_embd=51"),
    ({"dropout": 1.0}, "dropout", "[0, 1)"),
    ({"dropout": "a lot"}, "dropout", "number"),
    ({"dropout": float("nan")}, "dropout", "finite"),
    ({"init_std": float("inf")}, "init_std", "finite"),
    ({"layer_norm_epsilon": 0.0}, "layer_norm_epsilon", "(0, 1)"),
    ({"rope_theta": "inf"}, "rope_theta", "finite"),
    ({"bias": "true"}, "bias", "true or false"),
    ({"bias": 1}, "bias", "true or false"),
    ({"pos_encoding": "absolute"}, "pos_encoding", "learned"),
    ({"pos_encoding": None}, "pos_encoding", "string"),
    ({"activation": "gelu_fast"}, "activation", "gelu_exact"),
    ({"norm": "batchnorm"}, "norm", "rmsnorm"),
    ({"n_head": 4, "n_kv_head": 3, "n_embd": 16}, "n_kv_head", "multiple"),
    ({"mlp_gated": True, "mlp": False}, "mlp_gated", "mlp=true"),
    ({"n_layers": 2}, "unknown gptconfig fields", "n_layers"),
]


@pytest.mark.parametrize("case", BAD_MODEL_FIELDS, ids=[str(f[0]) for f in BAD_MODEL_FIELDS])
def test_model_config_refuses(case):
    fields, *words = case
    with refused(ConfigError, *words):
        GPTConfig.from_dict({"vocab_size": 10, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 8, **fields})


BAD_TRAIN_FIELDS = [
    ({"lr": float("inf")}, "lr", "finite"),
    ({"lr": "inf"}, "lr", "finite"),
    ({"lr": "nan"}, "lr", "finite"),
    ({"lr": "fast"}, "lr", "number", "'fast'"),
    ({"lr": None}, "lr", "number", "none"),
    ({"lr": 0.1, "min_lr": 1.0}, "min_lr <= lr"),
    ({"batch_size": "32"}, "batch_size", "whole number", "without quotes"),
    ({"batch_size": 0}, "batch_size", "positive"),
    ({"batch_size": 2.5}, "batch_size", "whole number"),
    ({"max_steps": -1}, "max_steps", "positive"),
    ({"grad_clip": -1.0}, "grad_clip", ">= 0"),
    ({"weight_decay": float("nan")}, "weight_decay", "finite"),
    ({"beta1": 1.0}, "beta1", "[0, 1)"),
    ({"beta2": -0.1}, "beta2", "[0, 1)"),
    ({"compile": "false"}, "compile", "true or false"),
    ({"compile": 0}, "compile", "true or false"),
    ({"tokenizer": "word"}, "tokenizer", "char"),
    ({"dtype": "fp8"}, "dtype", "bfloat16"),
    ({"final_weights_dtype": "int8"}, "final_weights_dtype", "float16"),
    ({"max_minutes": 0}, "max_minutes", "> 0"),
    ({"max_minutes": "inf"}, "max_minutes", "finite"),
    ({"corpus": 3}, "corpus", "string"),
    ({"out_dir": 5}, "out_dir", "string"),
    ({"block_size": 0}, "block_size", "positive"),
    ({"device": " "}, "device", "cpu"),
    ({"learning_rate": 1e-3}, "unknown trainconfig fields", "learning_rate"),
]


@pytest.mark.parametrize("case", BAD_TRAIN_FIELDS, ids=[str(f[0]) for f in BAD_TRAIN_FIELDS])
def test_train_config_refuses(case):
    fields, *words = case
    with refused(ConfigError, *words):
        TrainConfig.from_dict(fields)


def test_numeric_strings_become_floats_in_float_fields_only():
    # the README's rule: a float field takes "3e-3" as argparse's type=float would; ints and bools stay strict
    c = TrainConfig.from_dict({"lr": "3e-3", "min_lr": " 1e-4 ", "weight_decay": 0})
    assert (c.lr, c.min_lr, c.weight_decay) == (3e-3, 1e-4, 0.0) and isinstance(c.weight_decay, float)
    g = GPTConfig.from_dict({"dropout": "0.1", "rope_theta": 10000})
    assert g.dropout == 0.1 and isinstance(g.rope_theta, float)
    assert TrainConfig(lr="2e-3").lr == 2e-3  # the same rule when built in Python
    with refused(ConfigError, "needs a dict"):
        TrainConfig.from_dict(["not_a_dict"])


def write_preset(tmp_path, obj, name="p.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


BAD_PRESETS = [
    ({"model": {}, "train": {"lr": "abc"}}, ConfigError, "lr", "number"),
    ({"model": {"n_layer": "4"}, "train": {}}, ConfigError, "n_layer", "whole number"),
    ({"model": {"n_layers": 4}}, ConfigError, "unknown model fields", "n_layers"),
    ({"model": [4]}, ConfigError, '"model"', "json object"),
    ({"trian": {}}, ConfigError, "unknown top-level keys", "trian"),
    ('{"model": {', ConfigError, "not valid json"),
    ("[1, 2]", ConfigError, "json list"),
]


@pytest.mark.parametrize("case", BAD_PRESETS, ids=[str(p[0])[:30] for p in BAD_PRESETS])
def test_preset_refuses(tmp_path, case):
    obj, kind, *words = case
    with refused(kind, *words):
        load_preset(write_preset(tmp_path, obj))


def test_preset_missing_or_a_folder(tmp_path):
    with refused(MissingFileError, "no preset"):
        load_preset("no-such-preset")
    with refused(ConfigError, "folder"):
        load_preset(tmp_path)


def test_preset_numeric_strings_load_as_numbers(tmp_path):
    model, train = load_preset(write_preset(tmp_path, {"model": {"dropout": "0.1"}, "train": {"lr": "3e-3"}}))
    assert train.lr == 3e-3 and GPTConfig.from_dict({"vocab_size": 10, **model}).dropout == 0.1


def test_finetune_preset_follows_the_same_rule(tmp_path):
    from gptviz.finetune import load_finetune_preset

    config, _ = load_finetune_preset(write_preset(tmp_path, {"finetune": {"lora_alpha": "16"}, "train": {}}))
    assert config.lora_alpha == 16.0
    with refused(ConfigError, "n_layers", "whole number"):
        load_finetune_preset(write_preset(tmp_path, {"finetune": {"n_layers": "2"}, "train": {}}))


# ---- tokenizers -----------------------------------------------------------------------------------------
BAD_TOKENIZER_CALLS = [
    ("encode lone surrogate", lambda t: t.encode("ROMEO\udce9"), InputError, "not valid unicode", "u+dce9"),
    ("call lone surrogate", lambda t: t(["ROMEO", "b\udc80d"]), InputError, "text 1", "surrogate"),
    ("encode high surrogate", lambda t: t.encode("a\ud800"), InputError, "u+d800"),
    ("encode bytes", lambda t: t.encode(b"ROMEO"), InputError, "bytes"),
    ("encode None", lambda t: t.encode(None), InputError, "nonetype"),
    ("call int", lambda t: t(7), InputError, "int"),
    ("call empty list", lambda t: t([]), InputError, "empty list"),
    ("decode text", lambda t: t.decode("ROMEO"), InputError, "got text"),
    ("decode float", lambda t: t.decode([1.5]), InputError, "whole numbers", "1.5"),
    ("decode nan", lambda t: t.decode([float("nan")]), InputError, "whole numbers"),
    ("decode bool", lambda t: t.decode([True]), InputError, "whole numbers"),
    ("decode None", lambda t: t.decode(None), InputError, "sequence of token ids"),
    ("decode negative", lambda t: t.decode([-1]), InputError, "outside the vocabulary"),
    ("decode nested", lambda t: t.decode([[1, 2]]), InputError, "batch_decode"),
    ("unknown keyword", lambda t: t("ROMEO", paddding=True), UsageError, "paddding", "padding"),
    ("padding typo", lambda t: t(["a", "b"], padding="longst"), InputError, "longest"),
    ("tensors tf", lambda t: t("ROMEO", return_tensors="tf"), InputError, "pytorch"),
    ("max_length 0", lambda t: t("ROMEO", max_length=0), InputError, "max_length"),
    ("ragged tensor", lambda t: t(["R", "ROMEO ROMEO"], return_tensors="pt"), InputError, "padding=true"),
]


@pytest.mark.parametrize("kind_name", ["char", "gpt2", "bpe"])
@pytest.mark.parametrize("case", BAD_TOKENIZER_CALLS, ids=[c[0] for c in BAD_TOKENIZER_CALLS])
def test_tokenizer_refuses(toks, kind_name, case):
    _, call, kind, *words = case
    with refused(kind, *words) as info:
        call(toks[kind_name])
    assert "TextEncodeInput" not in str(info.value)  # never the tokenizers library's own words alone


def test_the_library_error_is_kept_as_the_cause(toks):
    with pytest.raises(InputError) as info:
        toks["gpt2"].encode("x\udc80")
    assert isinstance(info.value.__cause__, (TypeError, UnicodeEncodeError))


def test_tokenizers_built_from_invalid_unicode_are_refused():
    with refused(InputError, "not valid unicode"):
        CharTokenizer.from_text("abc\udc80")
    with refused(InputError, "not valid unicode"):
        BPETokenizer.train("hello world " * 30 + "\udc80", 300)
    with refused(InputError, "vocab_size"):
        BPETokenizer.train("hello world " * 30, True)


def test_damaged_tokenizer_files(tmp_path, toks):
    path = toks["bpe"].save(tmp_path / "tok.json")
    path.write_text(json.dumps({"kind": "bpe", "tokenizer": '{"model": 3'}), encoding="utf-8")
    with refused(InputError, "could not be rebuilt"):
        load_tokenizer(path)
    with refused(MissingFileError, "no tokenizer file"):
        load_tokenizer(tmp_path / "none.json")


MIXED_TEXT = st.text(alphabet=st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=30)


@FAST
@given(text=MIXED_TEXT)
def test_any_str_encodes_exactly_or_is_refused_by_name(toks, text):
    valid = not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    for name in ("gpt2", "bpe"):
        tok = toks[name]
        if valid:
            assert tok.decode(tok.encode(text)) == text
        else:
            with refused(InputError, "not valid unicode", "position"):
                tok.encode(text)


@FAST
@given(ids=st.lists(st.one_of(st.integers(-5, 60_000), st.floats(allow_nan=True)), max_size=8))
def test_any_id_list_decodes_or_is_refused_by_name(toks, ids):
    tok = toks["gpt2"]
    ok = all(isinstance(i, int) or (isinstance(i, float) and i.is_integer()) for i in ids)
    ok = ok and all(0 <= i < tok.vocab_size for i in ids)
    if ok:
        assert isinstance(tok.decode(ids), str)
    else:
        with pytest.raises(InputError, match="whole numbers|outside the vocabulary"):
            tok.decode(ids)


# ---- hooks ----------------------------------------------------------------------------------------------
WRONG_RETURNS = [
    ("shorter", lambda a: a[:, :-1], "(1, 4, 16)", "same shape"),
    ("transposed", lambda a: a.transpose(0, 1), "(5, 1, 16)", "same shape"),
    ("not a tensor", lambda a: 3.0, "type float", "return a tensor"),
    ("a list", lambda a: a.tolist(), "type list", "return a tensor"),
    ("float64", lambda a: a.double(), "torch.float64", "torch.float32"),
    ("int64", lambda a: a.long(), "torch.int64", "out.to(torch.float32)"),
    ("meta device", lambda a: torch.empty_like(a, device="meta"), "on meta", "'cpu'"),
]


@pytest.mark.parametrize("case", WRONG_RETURNS, ids=[w[0] for w in WRONG_RETURNS])
def test_a_hook_returning_the_wrong_thing_fails_at_that_hook(model, case):
    _, make, *words = case
    later = []

    def wrong(act, hook):
        return make(act)

    with hooks(model, {"blocks.0.hook_resid_mid": wrong, "blocks.0.hook_resid_post": lambda a, h: later.append(1)}):
        with refused(HookShapeError, "blocks.0.hook_resid_mid", "'wrong'", *words):
            model(torch.zeros(1, 5, dtype=torch.long))
    assert later == []  # refused where it happened, not one block later
    assert all(not p.fns for p in model.hook_dict.values())  # and nothing left attached


def test_hook_names_and_functions(model):
    with refused(HookNameError, "hook_patern", "blocks.0.attn.hook_pattern"):
        with hooks(model, {"blocks.0.attn.hook_patern": lambda a, h: None}):
            pass
    with refused(UsageError, "must be a function"):
        with hooks(model, {"blocks.0.attn.hook_pattern": 3}):
            pass
    with refused(UsageError, "dict"):
        with hooks(model, [("blocks.0.attn.hook_pattern", print)]):
            pass
    with refused(UsageError, "strings"):
        with capture(model, [3]):
            pass
    with refused(InputError, "no hook names"):
        with capture(model, []):
            pass
    with refused(InputError, "keep"):
        with capture(model, "*", keep="first"):
            pass
    for budget in (-1, float("nan"), "512"):
        with refused(InputError, "budget_mb"):
            with capture(model, "*", budget_mb=budget):
                pass
    assert all(not p.fns for p in model.hook_dict.values())


# ---- saving and loading ---------------------------------------------------------------------------------
def test_save_to_a_file_or_a_foreign_folder_writes_nothing(tmp_path, model, char_tok):
    f = tmp_path / "notes.txt"
    f.write_text("precious")
    with refused(PathExistsError, "is a file"):
        save(f, model, char_tok)
    with refused(PathExistsError, "is a file"):
        model.save_pretrained(f)  # transformers would log a warning and return as if it saved
    assert f.read_text() == "precious"
    folder = tmp_path / "homework"
    folder.mkdir()
    (folder / "a.txt").write_text("mine")
    with refused(PathExistsError, "not a gptviz checkpoint"):
        save(folder, model, char_tok)
    assert digest(folder) == {"a.txt": hashlib.sha256(b"mine").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["homework", "notes.txt"]  # no temporary left


def test_save_needs_a_model_and_its_tokenizer(tmp_path, model, char_tok):
    with refused(UsageError, "gptviz gpt"):
        save(tmp_path / "a", {"wte.weight": torch.zeros(2)}, char_tok)
    with refused(UsageError, "tokenizer", "str"):
        save(tmp_path / "b", model, "char")
    assert list(tmp_path.iterdir()) == []


def test_save_pretrained_never_overwrites_a_gptviz_checkpoint(tmp_path, model, char_tok):
    ck = save(tmp_path / "ck", model, char_tok)
    before = digest(ck)
    with refused(PathExistsError, "gptviz checkpoint", "gptviz.save"):
        model.save_pretrained(ck)
    assert digest(ck) == before


@pytest.mark.parametrize("how", ["nan", "inf", "float16 overflow"])
def test_non_finite_weights_are_never_saved(tmp_path, model, char_tok, how):
    ck = save(tmp_path / "ck", model, char_tok)
    before = digest(ck)
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight[0, 0] = {"nan": math.nan, "inf": math.inf, "float16 overflow": 1e6}[how]
    dtype = torch.float16 if how == "float16 overflow" else None
    with refused(NonFiniteError, "blocks.0.mlp.c_fc.weight", "nan or inf"):
        save(ck, model, char_tok, weights_dtype=dtype)
    assert digest(ck) == before and gptviz.load(ck)[0].wte.weight.isfinite().all()
    if how != "float16 overflow":
        with refused(NonFiniteError, "nan or inf"):
            model.save_pretrained(tmp_path / "hf")
        assert not (tmp_path / "hf").exists()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "gpt2"
    GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=8)).save_pretrained(folder)
    return folder


def copy_of(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty file", "no weights"])
def test_from_pretrained_on_damaged_weights(tmp_path, hf_folder, damage):
    folder = copy_of(hf_folder, tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    if damage == "no weights":
        weights.unlink()
    else:
        weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x07" * 64, "empty file": b""}[damage])
    with refused(PretrainedError, "weights", str(folder)) as info:
        GPT.from_pretrained(folder)
    assert info.value.__cause__ is not None  # the library's own error, kept for a debugger
    with refused(PretrainedError, "weights"):
        gptviz.load(folder)


def test_from_pretrained_on_folders_of_another_kind(tmp_path, model, char_tok):
    ck = save(tmp_path / "ck", model, char_tok)
    with refused(PretrainedError, "gptviz checkpoint", "use gptviz.load"):
        GPT.from_pretrained(ck)
    (tmp_path / "empty").mkdir()
    with refused(PretrainedError, "no config.json"):
        GPT.from_pretrained(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"hello": 1}')
    with refused(PretrainedError, "no model_type"):
        GPT.from_pretrained(tmp_path / "other")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": ')
    with refused(PretrainedError, "not valid json"):
        GPT.from_pretrained(tmp_path / "broken")
    with refused(MissingFileError, "no such folder", "it is a file"):
        GPT.from_pretrained(ck / "config.json")
    with refused(MissingFileError, "no such folder"):
        GPT.from_pretrained("./no/such/folder")
    with refused(UsageError, "hub id"):
        GPT.from_pretrained(3)


def test_gptviz_load_bad_names_and_devices(tmp_path, model, char_tok):
    ck = save(tmp_path / "ck", model, char_tok)
    with refused(InputError, "gptviz.load needs"):
        gptviz.load(None)
    with refused(InputError, "gptviz.load needs"):
        gptviz.load("  ")
    with refused(MissingFileError, "no model called", "smollm2-135m"):
        gptviz.load("smollm2-13m")
    with refused(InputError, "device", "gpu9"):
        gptviz.load(ck, device="gpu9")
    (tmp_path / "empty").mkdir()
    with refused(MissingFileError, "no config.json"):
        gptviz.load(tmp_path / "empty")


def test_damaged_checkpoint_tokenizer_is_named(tmp_path, model, toks):
    tok = toks["bpe"]
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    ck = save(tmp_path / "ck", m, tok)
    (ck / "tokenizer.json").write_text(json.dumps({"kind": "bpe", "tokenizer": "{]"}), encoding="utf-8")
    with refused(CheckpointError, "tokenizer.json", "damaged"):
        gptviz.load(ck)


# ---- training -------------------------------------------------------------------------------------------
def train_config(tmp_path, **over):
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(TEXT, encoding="utf-8")
    fields = dict(corpus=str(corpus), batch_size=2, max_steps=4, lr=3e-3, min_lr=3e-4, warmup_steps=1)
    fields.update(eval_interval=0, snapshot_interval=0, device="cpu", seed=3)
    return TrainConfig(**{**fields, **over})


MODEL = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}


def test_corpus_shorter_than_the_block_is_refused_before_training(tmp_path):
    (tmp_path / "short.txt").write_text("to be or not\nto be\n", encoding="utf-8")
    with refused(InputError, "tokens long", "block_size + 1 = 17", "--train.block_size"):
        build_trainer(MODEL, train_config(tmp_path, corpus=str(tmp_path / "short.txt"), out_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:7", "tpu"])
def test_unknown_training_devices(tmp_path, device):
    with refused(ConfigError, "device", device):
        build_trainer(MODEL, train_config(tmp_path, device=device))


def test_resuming_into_a_model_of_another_size(tmp_path):
    t = build_trainer(MODEL, train_config(tmp_path, out_dir=str(tmp_path / "ck")))
    t.train_steps(2)
    t.save_checkpoint()
    from gptviz.checkpoint import load_training_state

    wider = build_trainer({**MODEL, "n_embd": 32}, train_config(tmp_path))
    with refused(CheckpointError, "another size", "shape"):
        wider.load_state(load_training_state(tmp_path / "ck"))
    deeper = build_trainer({**MODEL, "n_layer": 2}, train_config(tmp_path))
    with refused(CheckpointError, "another model"):
        deeper.load_state(load_training_state(tmp_path / "ck"))
    assert deeper.step == 0 and not deeper.optimizer.state  # nothing half-loaded


def test_a_huge_lr_never_reaches_a_checkpoint(tmp_path):
    out = tmp_path / "ck"
    t = build_trainer(MODEL, train_config(tmp_path, out_dir=str(out), checkpoint_interval=2, max_steps=6))
    t.train_steps(2)  # a good checkpoint at step 2
    good = digest(out)
    for group in t.optimizer.param_groups:  # what lr=1e39 would do (finite in Python, inf in float32)
        group["lr"] = 1e39
    t.config.lr = t.config.min_lr = 1e39
    with refused(TrainingDiverged, "step 3", f"last good checkpoint is {out}", "nothing was saved"):
        t.train_steps(4)
    assert digest(out) == good  # the step-4 save was refused: the good checkpoint is what is there
    model, _ = gptviz.load(out)
    assert all(p.isfinite().all() for p in model.parameters())


def test_non_finite_weights_after_the_last_step_of_a_chunk(tmp_path):
    # the loss is checked before each update; an update that leaves inf behind is caught when the chunk ends
    t = build_trainer(MODEL, train_config(tmp_path))
    step = t.optimizer.step

    def overflowing_step(*args, **kwargs):
        step(*args, **kwargs)
        with torch.no_grad():
            t.raw_model.blocks[0].attn.c_proj.weight[0, 0] = math.inf

    t.optimizer.step = overflowing_step
    with refused(TrainingDiverged, "after step 1", "blocks.0.attn.c_proj.weight", "no checkpoint was saved yet"):
        t.train_steps(1)


def test_save_checkpoint_refuses_nan_weights(tmp_path):
    t = build_trainer(MODEL, train_config(tmp_path, out_dir=str(tmp_path / "ck")))
    t.train_steps(1)
    t.save_checkpoint()
    good = digest(tmp_path / "ck")
    with torch.no_grad():
        t.raw_model.ln_f.weight.fill_(math.nan)
    with refused(TrainingDiverged, "ln_f.weight"):
        t.save_checkpoint()
    assert digest(tmp_path / "ck") == good


def test_weights_only_checkpoint_cannot_resume(tmp_path):
    from gptviz.checkpoint import load_training_state

    t = build_trainer(MODEL, train_config(tmp_path, out_dir=str(tmp_path / "ck")))
    t.train_steps(1)
    t.save_checkpoint(include_optimizer=False)
    with refused(CheckpointError, "weights only"):
        t.load_state(load_training_state(tmp_path / "ck"))


# ---- data -----------------------------------------------------------------------------------------------
def test_corpus_problems(tmp_path):
    with refused(MissingFileError, "no corpus"):
        load_corpus(tmp_path / "nope.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    with refused(InputError, "not utf-8", "0xe9"):
        load_corpus(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with refused(InputError, "empty"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "nothing").mkdir()
    with refused(InputError, "no non-empty .txt"):
        load_corpus(tmp_path / "nothing")
    with refused(InputError, "val_fraction"):
        load_corpus("shakespeare", val_fraction=1.5)
    with refused(InputError, "val_docs", "single string"):
        load_corpus("shakespeare", val_docs="hamlet")


def test_token_dataset_problems(tmp_path):
    with refused(InputError, "1-d"):
        TokenDataset([[1, 2], [3, 4]])
    with refused(InputError, "non-negative"):
        TokenDataset([1, -2, 3])
    with refused(InputError, "block_size + 1 = 11", "at most 4"):
        TokenDataset([1, 2, 3, 4, 5]).get_batch(2, 10, torch.Generator().manual_seed(0))
    path = TokenDataset(list(range(10)), vocab_size=10).save(tmp_path / "d")
    path.write_bytes(path.read_bytes()[:-2])
    with refused(InputError, "do not belong together"):
        TokenDataset.load(path)
    with refused(MissingFileError, "no .bin file"):
        TokenDataset.load(tmp_path / "other")


# ---- decoding knobs -------------------------------------------------------------------------------------
# gptviz.logits checks every knob once and raises InputError naming each bad one.
@FAST
@given(
    temperature=st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), st.just(math.inf)),
    top_p=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
)
def test_bad_temperatures_are_refused_by_name(temperature, top_p):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=4)).eval()
    with pytest.raises(InputError, match="temperature"):
        model.generate(torch.tensor([[1, 2]]), do_sample=True, temperature=temperature, top_p=top_p or None)


@FAST
@given(top_p=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0 + 1e-9), st.just(math.nan)))
def test_bad_top_p_is_refused_by_name(top_p):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=4)).eval()
    with pytest.raises(InputError, match="top_p"):
        model.generate(torch.tensor([[1, 2]]), do_sample=True, top_p=top_p)


@pytest.mark.parametrize(
    "knobs, named",
    [
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"repetition_penalty": math.inf}, "repetition_penalty"),
        ({"repetition_penalty": math.nan}, "repetition_penalty"),
        ({"top_p": True}, "top_p"),
        ({"no_repeat_ngram_size": True}, "no_repeat_ngram_size"),
        ({"eos_token_id": 2.0}, "eos_token_id"),
        ({"eos_token_id": True}, "eos_token_id"),
    ],
)
def test_knobs_that_used_to_pass_in_silence_are_refused(knobs, named):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=4)).eval()
    with pytest.raises(InputError, match=named):
        model.generate(torch.tensor([[1, 2]]), do_sample=True, **knobs)
