"""Checkpoints: a folder of safetensors + JSON that a crash can never leave half-written.

    <checkpoint>/
        config.json            {"format_version": 1, "model": GPTConfig, "train": TrainConfig | null,
                                "tokenizer": {"kind", "vocab_size"}, "state": {step, val_loss, command, ...},
                                "files": {name: byte size}}
        model.safetensors      weights; the LM head is tied to wte, so it is stored once (as wte.weight)
        tokenizer.json         Tokenizer.to_dict()
        optimizer.safetensors  optional, for resuming: optimizer moments ("state.{i}.{name}") and RNG states
        optimizer.json         ("rng.{name}"); the small rest (param_groups, scalar state, AMP scaler) as JSON

`save` writes everything into a temporary folder beside the target, fsyncs it, then swaps it in with
renames; the temporary folder of a save that was killed outright is removed by the next `save` or `load` of the
same checkpoint, once its writer is gone (`gptviz.files`). Loading never unpickles: tensors come from
safetensors, everything else from JSON.

This module knows nothing about the training loop: `gptviz.train` decides what goes into `TrainingState`
and how to restore it. Hugging Face folders are read and written by `gptviz.hf` (GPT.from_pretrained).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError, InputError, MissingFileError, NonFiniteError, PathExistsError, UsageError
from .files import atomic_folder, remove_stale_temps
from .model import GPT, GPTConfig, default_device, store_weights_transposed, transposed_names
from .tokenizers import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1
READ_BLOCK_BYTES = 8 << 20  # a linear weight is read in row blocks of about this size (_read_transposed)
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
TIED = ("lm_head.weight", "wte.weight")  # (the alias, the tensor that is stored)


@dataclass
class TrainingState:
    """What a checkpoint holds beyond the weights, so training can resume exactly where it stopped."""

    train_config: dict | None = None  # TrainConfig fields
    state: dict = field(default_factory=dict)  # step, val_loss, best_val_loss, tokens_seen, wall_time, command, ...
    optimizer: dict | None = None  # torch `optimizer.state_dict()`, tensors on CPU
    rng: dict[str, torch.Tensor] = field(default_factory=dict)  # uint8 RNG states: "batch", "torch", "cuda"
    scaler: dict | None = None  # torch.amp.GradScaler.state_dict() (fp16 training only)


# ---- writing ---------------------------------------------------------------------------------------------
def save(
    path: str | os.PathLike,
    model: GPT,
    tokenizer: Tokenizer,
    training: TrainingState | None = None,
    include_optimizer: bool = True,
    weights_dtype: torch.dtype | None = None,
    extra_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write a checkpoint folder at `path` (replacing an earlier checkpoint there) and return its path.

    `training` adds the train config and state to config.json; with `include_optimizer` (and an optimizer
    state in `training`) the optimizer and RNG states are written too, which `--resume` needs. Pass
    `include_optimizer=False` for a small weights-only checkpoint, e.g. one to commit. `weights_dtype`
    (e.g. torch.float16) stores the weights smaller; `load` casts them back to the model's float32.
    `extra_files(folder)` writes more files into the same atomic write (e.g. a classifier head).
    Nothing is written when the weights hold NaN or inf (NonFiniteError), or when `path` is a file or a folder
    of other files (PathExistsError).
    """
    model = unwrap(model)
    if not all(hasattr(tokenizer, a) for a in ("vocab_size", "kind", "save")):  # a Tokenizer, or one like it
        raise UsageError(
            f"gptviz.save(path, model, tokenizer) needs the model's gptviz tokenizer, got {type(tokenizer).__name__}; "
            "a checkpoint keeps its tokenizer (gptviz.load returns both)"
        )
    path = Path(path)
    if model.config.vocab_size < tokenizer.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}; "
            "they do not belong together"
        )
    weights = _weights_to_store(model, weights_dtype)
    _refuse_non_finite(weights, path)
    optimizer_tensors: dict[str, torch.Tensor] = {}
    optimizer_meta: dict | None = None
    if training is not None and include_optimizer and training.optimizer is not None:
        optimizer_tensors, optimizer_meta = _split_optimizer_state(training.optimizer)
        optimizer_tensors.update(
            {f"rng.{k}": v.detach().cpu().to(torch.uint8).contiguous() for k, v in training.rng.items()}
        )
        optimizer_meta["scaler"] = training.scaler

    with atomic_folder(path, check=_refuse_non_checkpoint) as tmp:
        save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "gptviz", "format_version": str(FORMAT_VERSION)})
        tokenizer.save(tmp / TOKENIZER_FILE)
        if optimizer_meta is not None:
            save_file(optimizer_tensors, str(tmp / OPTIMIZER_FILE))
            _write_json(tmp / OPTIMIZER_JSON, optimizer_meta)
        if extra_files is not None:
            extra_files(tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        _write_json(
            tmp / CONFIG_FILE,
            {
                "format_version": FORMAT_VERSION,
                "model": model.config.to_dict(),
                "train": training.train_config if training is not None else None,
                "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "file": TOKENIZER_FILE},
                "state": training.state if training is not None else {},
                "weights_dtype": str(next(iter(weights.values())).dtype).replace("torch.", ""),
                "files": files,
            },
        )
    return path


def export_for_lab(
    src: str | os.PathLike, dst: str | os.PathLike | None = None, weights_dtype: torch.dtype | None = None
) -> Path:
    """Rewrite a checkpoint without its optimizer state (weights, tokenizer, config only: a few MB).

    `dst=None` rewrites `src` in place (atomically). Use it on a finished training run before committing it;
    `weights_dtype=torch.float16` halves the size again (inference changes by ~1e-4 in the loss).
    """
    src = Path(src)
    info = read_config(src)
    model, tokenizer = load(src)
    training = TrainingState(train_config=info.get("train"), state=info.get("state") or {})
    return save(
        src if dst is None else dst, model, tokenizer, training, include_optimizer=False, weights_dtype=weights_dtype
    )


def unwrap(model: torch.nn.Module) -> GPT:
    """The plain GPT inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, GPT):
            return model
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise UsageError(f"expected a gptviz GPT (or a DDP/compiled wrapper of one), got {type(model).__name__}")
        model = inner


def _weights_to_store(model: GPT, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    alias, stored = TIED
    if alias in sd and stored in sd and sd[alias].data_ptr() == sd[stored].data_ptr():
        del sd[alias]  # safetensors refuses tensors that share memory; the tie is restored by GPT() itself
    cast = (lambda v: v.to(dtype) if v.is_floating_point() else v) if dtype is not None else (lambda v: v)
    return {k: cast(v.detach().cpu()).contiguous() for k, v in sd.items()}


def _refuse_non_finite(weights: dict[str, torch.Tensor], path: Path) -> None:
    """NonFiniteError naming the parameters that hold NaN or inf: such weights are never written.

    Checked after the cast to `weights_dtype`, so float16 storage that would overflow to inf is refused too.
    """
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteError(
            f"not saving {path}: the weights {bad[:4]}{' ...' if len(bad) > 4 else ''} hold NaN or inf (training "
            "diverged, or an edit of the weights went wrong). A checkpoint of them could not be used; resume from "
            "an earlier checkpoint with a lower learning rate"
        )


def _split_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict -> (tensors for safetensors, the JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, per_param in sd["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _write_json(path: Path, obj: dict) -> None:
    try:
        text = json.dumps(obj, indent=1, ensure_ascii=False)
    except TypeError as e:
        raise TypeError(
            f"cannot write {path.name}: {e}; checkpoint metadata must be plain JSON values "
            "(numbers, strings, lists, dicts)"
        ) from None
    path.write_text(text + "\n", encoding="utf-8")


def _refuse_non_checkpoint(target: Path) -> None:
    if target.is_file():
        raise PathExistsError(f"{target} is a file; a checkpoint is a folder. Choose another path.")
    if target.is_dir() and any(target.iterdir()) and not (target / CONFIG_FILE).is_file():
        raise PathExistsError(
            f"{target} exists and is not a gptviz checkpoint (no {CONFIG_FILE}); refusing to "
            "replace it. Choose a new folder name."
        )


# ---- reading ---------------------------------------------------------------------------------------------
def read_config(path: str | os.PathLike) -> dict:
    """The checkpoint's config.json, checked: format version, model config, tokenizer entry."""
    path = Path(path)
    if not path.is_dir():
        leftovers = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
        if leftovers:
            raise MissingFileError(
                f"no checkpoint at {path}, but a save was interrupted and left the previous "
                f"one at {leftovers[-1]}; rename that folder to {path.name} to use it"
            )
        hint = f" (a file, not a folder: give the folder that holds {CONFIG_FILE})" if path.is_file() else ""
        raise MissingFileError(
            f"no checkpoint folder at {path}{hint}; a gptviz checkpoint is a folder with "
            f"{CONFIG_FILE}, {MODEL_FILE} and {TOKENIZER_FILE}, written by gptviz.save or "
            "`gptviz train --out DIR`"
        )
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise MissingFileError(
            f"{path} has no {CONFIG_FILE}, so it is not a complete gptviz checkpoint; "
            "use the folder written by `gptviz train --out DIR` or gptviz.save"
        )
    try:
        info = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path} is damaged (not valid JSON: {e}); use an earlier checkpoint") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{config_path} should hold a JSON object, got {type(info).__name__}")
    if "format_version" not in info:
        if "model_type" in info or "architectures" in info or (path / "pytorch_model.bin").exists():
            raise CheckpointError(
                f"{path} looks like a Hugging Face transformers folder, not a gptviz checkpoint; "
                f"load it with gptviz.GPT.from_pretrained({str(path)!r})"
            )
        raise CheckpointError(f"{config_path} has no format_version, so it is not a gptviz checkpoint")
    if info["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format_version {info['format_version']!r}; this gptviz "
            f"reads version {FORMAT_VERSION}. Use the gptviz version that wrote it, or upgrade"
        )
    for key in ("model", "tokenizer"):
        if not isinstance(info.get(key), dict):
            raise CheckpointError(f"{config_path} lacks its {key!r} entry; the checkpoint is damaged")
    return info


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> tuple[GPT, Tokenizer]:
    """(model in eval mode, tokenizer) from a checkpoint folder. `device`: None = CPU, "auto" = best there is.

    Temporary folders that a killed save left beside it are removed on the way (`files.remove_stale_temps`).
    """
    path = Path(path)
    remove_stale_temps(path)  # never raises: a read-only checkpoint loads as before
    info = read_config(path)
    try:
        config = GPTConfig.from_dict(info["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE} holds an invalid model config: {e}") from None
    tokenizer = _load_tokenizer(path, info)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{config.vocab_size}; {TOKENIZER_FILE} belongs to another model"
        )
    to_device(None, device)  # an unknown device name fails before the weights are read
    model = GPT.empty(config)  # _load_weights checks that every parameter is in the file
    weights = _read_safetensors(path, MODEL_FILE, info, as_stored_by=model)
    _load_weights(model, weights, path)
    return to_device(model, device).eval(), tokenizer


def to_device(model: GPT | None, device: str | torch.device | None) -> GPT | None:
    """`model` moved to `device` (None: CPU, "auto": the best there is); InputError for a device torch lacks.

    With `model=None` only the device is checked, so a loader can refuse a bad name before reading any file.
    """
    try:
        where = torch.device(default_device() if device == "auto" else device or "cpu")
    except (RuntimeError, TypeError) as e:
        raise InputError(
            f"device={device!r} is not a device torch knows ({e}); use 'cpu', 'cuda', 'mps' or 'auto'"
        ) from e
    if where.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device!r} but torch sees no GPU here; use device='cpu' or device='auto'")
    if where.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device={device!r} but this machine has no Apple GPU (MPS); use 'cpu' or 'auto'")
    return None if model is None else model.to(where)


def load_training_state(path: str | os.PathLike) -> TrainingState:
    """Train config, state, optimizer and RNG states of a checkpoint (optimizer None if it was not saved)."""
    path = Path(path)
    info = read_config(path)
    training = TrainingState(train_config=info.get("train"), state=info.get("state") or {})
    if not (path / OPTIMIZER_FILE).exists():
        return training
    if not (path / OPTIMIZER_JSON).is_file():
        raise CheckpointError(f"{path} has {OPTIMIZER_FILE} but no {OPTIMIZER_JSON}; the checkpoint is damaged")
    try:
        meta = json.loads((path / OPTIMIZER_JSON).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / OPTIMIZER_JSON} is damaged ({e}); resume from an earlier checkpoint") from None
    tensors = _read_safetensors(path, OPTIMIZER_FILE, info)
    try:
        state: dict[int, dict] = {int(pid): dict(values) for pid, values in meta.get("scalars", {}).items()}
        for name, value in tensors.items():
            kind, rest = name.split(".", 1)
            if kind == "rng":
                training.rng[rest] = value
            elif kind == "state":
                pid, key = rest.split(".", 1)
                state.setdefault(int(pid), {})[key] = value
        training.optimizer = {"state": state, "param_groups": list(meta["param_groups"])}
        training.scaler = meta.get("scaler")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}'s optimizer files are damaged ({type(e).__name__}: {e}); resume from an earlier checkpoint, "
            "or start a new run from its weights"
        ) from e
    if training.train_config is not None and not isinstance(training.train_config, dict):
        raise CheckpointError(f"{path / CONFIG_FILE}: its 'train' entry is not a JSON object; the file is damaged")
    return training


def _load_tokenizer(path: Path, info: dict) -> Tokenizer:
    file = path / TOKENIZER_FILE
    if not file.is_file():
        raise MissingFileError(
            f"{path} has no {TOKENIZER_FILE}; a checkpoint needs the tokenizer it was trained "
            "with. Copy it from the training run's folder"
        )
    try:
        return tokenizer_from_dict(json.loads(file.read_text(encoding="utf-8")))
    except Exception as e:  # JSON, or the tokenizers library refusing a damaged vocabulary
        raise CheckpointError(f"{file} is damaged ({type(e).__name__}: {e}); use an earlier checkpoint") from e


def _read_safetensors(path: Path, name: str, info: dict, as_stored_by: GPT | None = None) -> dict[str, torch.Tensor]:
    """The file's tensors; with `as_stored_by`, each as that model holds the parameter: in its dtype, and a linear
    weight transposed in memory (_read_transposed).

    Tensors are read into memory of their own (safetensors' pread backend, where it has one) rather than mapped
    from the file, so no page of the file stays mapped once the load is done.
    """
    file = path / name
    if not file.is_file():
        raise MissingFileError(
            f"{path} has no {name}; the checkpoint is incomplete. Use an earlier checkpoint "
            "or the folder written by `gptviz train --out DIR`"
        )
    expected = (info.get("files") or {}).get(name)
    size = file.stat().st_size
    if expected is not None and size != expected:
        raise CheckpointError(
            f"{file} is damaged: {size} bytes, but {expected} were written (a truncated copy?). "
            "Copy it again or use an earlier checkpoint"
        )
    try:
        try:
            opened = safe_open(str(file), framework="pt", backend="pread")
        except TypeError:  # a safetensors without the pread backend: memory-mapped
            opened = safe_open(str(file), framework="pt")
        with opened as f:
            if as_stored_by is None:
                return {k: f.get_tensor(k) for k in f.keys()}
            dtype, transpose = next(as_stored_by.parameters()).dtype, transposed_names(as_stored_by)
            with open(file, "rb") as raw:
                entries, data_start = _header(raw)  # safe_open has checked it: shapes, dtypes, offsets
                out = {}
                for k in f.keys():
                    entry = entries[k]
                    if (
                        k in transpose
                        and entry["dtype"] in _FILE_DTYPES
                        and len(entry["shape"]) == 2
                        and min(entry["shape"])
                    ):
                        start = data_start + entry["data_offsets"][0]
                        out[k] = _read_transposed(raw, start, entry["shape"], _FILE_DTYPES[entry["dtype"]], dtype)
                    else:
                        v = f.get_tensor(k)
                        out[k] = v.to(dtype) if v.is_floating_point() and v.dtype != dtype else v
                return out
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is damaged and cannot be read ({e}); use an earlier checkpoint") from e


_FILE_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _header(raw) -> tuple[dict, int]:
    """A safetensors file's header (name -> dtype, shape, data_offsets) and where its data begins."""
    raw.seek(0)
    n = int.from_bytes(raw.read(8), "little")
    return json.loads(raw.read(n)), 8 + n


def _read_transposed(raw, start: int, shape: list[int], file_dtype: torch.dtype, dtype: torch.dtype) -> torch.Tensor:
    """A (rows, cols) matrix stored row-major at byte `start`, cast to `dtype`, in memory as its transpose (how GPT()
    stores linear weights: model.store_weights_transposed). Read in ~READ_BLOCK_BYTES row blocks straight into
    that layout, so a load never holds a second copy of a matrix (SmolLM2's 113 MB embedding: a fifth of the
    model's size), nor maps the file."""
    rows, cols = shape
    out = torch.empty((cols, rows), dtype=dtype).t()
    row_bytes = cols * file_dtype.itemsize
    step = max(1, READ_BLOCK_BYTES // max(1, row_bytes))
    buffer = bytearray(min(step, rows) * row_bytes)
    raw.seek(start)
    for i in range(0, rows, step):
        j = min(i + step, rows)
        block = memoryview(buffer)[: (j - i) * row_bytes]
        if raw.readinto(block) != len(block):
            raise ValueError(f"the file ends inside a tensor of shape {tuple(shape)}")
        out[i:j].copy_(torch.frombuffer(block, dtype=file_dtype).view(j - i, cols))
    return out


def _load_weights(model: GPT, weights: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    alias, stored = TIED
    if alias not in weights and model.config.tie_embeddings:
        expected.pop(alias, None)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [
        f"{k}: file {tuple(weights[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in sorted(set(weights) & set(expected))
        if weights[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shapes differ: " + "; ".join(wrong[:4]) + (" ..." if len(wrong) > 4 else ""))
        if missing:
            parts.append(f"missing weights {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected weights {unexpected[:5]}")
        raise CheckpointError(
            f"{path / MODEL_FILE} does not match the model in {CONFIG_FILE} ("
            + "; ".join(parts)
            + "). The two files come from different models"
        )
    # assign=True: the model (GPT.empty) takes the file's tensors as its parameters instead of copying them, so a
    # load holds one copy of the weights, not two. `weights` come from _read_safetensors(as_stored_by=model): in the
    # model's dtype, linear weights laid out as GPT() stores them. The tied head is tied again afterwards.
    model.load_state_dict(weights, strict=False, assign=True)
    if model.config.tie_embeddings:
        model.lm_head.weight = model.wte.weight
    store_weights_transposed(model)  # a check: finds nothing to do after the reader
