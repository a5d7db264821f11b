"""transformers interop: read a GPT-2, Llama, Qwen2 or GPT-NeoX checkpoint as a GPTConfig + gptviz weights, and
write gptviz weights back as the family transformers knows.

This module reads and writes model folders (or hub ids, when online); the per-family translations of configs and
parameter names are `gptviz.hf_families`' (`config_from_hf`, `family_of`, `hf_config_for`, `state_dict_from_hf`,
`state_dict_to_hf`, all importable from here too). It never imports `gptviz.model` (GPT.from_pretrained calls it)
and knows nothing about tokenizers; `transformers` is imported only when a function that needs it runs. It is the
one place where gptviz calls transformers' (and safetensors') readers and writers for a model, so it is where
their errors become gptviz's: a folder that is not a transformers model (a gptviz checkpoint: "use gptviz.load"),
damaged or truncated weights, no internet for a hub id -> PretrainedError (an OSError) saying which and what to
do, with the library's error as its `__cause__`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import GPTConfig
from .errors import (
    CheckpointError,
    MissingFileError,
    NonFiniteError,
    PathExistsError,
    PretrainedError,
    UsageError,
)
from .errors import UnsupportedModelError as UnsupportedModelError  # re-exported: `from gptviz.hf import ...`
from .hf_families import FAMILIES as FAMILIES  # re-exported, as the translations below
from .hf_families import SKIP_SUFFIXES, config_from_hf, family_of, hf_config_for, state_dict_from_hf, state_dict_to_hf

# ---- reading and writing folders ------------------------------------------------------------------------
# from_pretrained keywords that say how to load (they go to the model's from_pretrained); every other keyword
# overrides a config field (AutoConfig takes those)
DTYPE_KEYWORDS = ("torch_dtype", "dtype")
LOADING_KEYWORDS = (
    *DTYPE_KEYWORDS,
    "gguf_file",
    "revision",
    "cache_dir",
    "force_download",
    "local_files_only",
    "token",
    "subfolder",
    "trust_remote_code",
    "use_safetensors",
    "variant",
    "proxies",
    "low_cpu_mem_usage",
    "attn_implementation",
    "device_map",
    "ignore_mismatched_sizes",
)


def read_pretrained(name_or_dir: str | Path, **hf_kwargs) -> tuple[GPTConfig, dict[str, torch.Tensor], torch.dtype]:
    """(GPTConfig, gptviz weights, dtype) of a transformers checkpoint: a local folder, or a hub id when online.

    The config is checked before any weight is read, so an unsupported model fails in a second, by name.
    `hf_kwargs` go to transformers (e.g. `gguf_file=` for a GGUF file in the folder, `revision=`).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if not isinstance(name_or_dir, (str, Path)):
        raise UsageError(
            f"expected a folder path or a hub id (a str), got {type(name_or_dir).__name__}: {name_or_dir!r}"
        )
    path = Path(name_or_dir).expanduser()
    if (str(name_or_dir).startswith((".", "/", "~")) or path.exists()) and not path.is_dir():
        raise MissingFileError(
            f"no such folder: {path}{' (it is a file)' if path.is_file() else ''}; give a folder with config.json "
            "+ model.safetensors (from save_pretrained) or a hub id such as 'gpt2' when online"
        )
    if path.is_dir() and "gguf_file" not in hf_kwargs:  # a GGUF file carries its config inside
        _check_folder(path)
    target = str(path) if path.is_dir() else str(name_or_dir)
    for key in ("output_attentions", "output_hidden_states", "return_dict"):
        if key in hf_kwargs:
            raise UsageError(
                f"gptviz models take {key} per call, not at load time: model(ids, {key}=...) (e.g. "
                "model(ids, output_attentions=True).attentions); a plain model(ids) stays the logits tensor"
            )
    # with config= given, transformers hands every other keyword to the model's __init__: only loading options go
    load_kwargs = {k: v for k, v in hf_kwargs.items() if k in LOADING_KEYWORDS}
    try:
        hf_config = AutoConfig.from_pretrained(
            target, **{k: v for k, v in hf_kwargs.items() if k not in DTYPE_KEYWORDS}
        )
    except Exception as e:  # OSError offline, ValueError for an unknown model_type, JSON errors, ...
        raise PretrainedError(
            f"could not read a transformers config from {str(name_or_dir)!r}: {e}\nOffline, pass a local "
            "folder written by save_pretrained (config.json + model.safetensors); hub ids like 'gpt2' "
            "need internet the first time."
        ) from e
    config = config_from_hf(hf_config)  # refuses unsupported settings before loading any weight
    family = hf_config.model_type
    try:
        hf = AutoModelForCausalLM.from_pretrained(target, config=hf_config, **load_kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        overrides = sorted(set(hf_kwargs) - set(load_kwargs) - {"gguf_file"})
        if isinstance(e, (TypeError, ValueError)) and set(load_kwargs) - {"gguf_file"}:
            raise UsageError(f"transformers refused the loading options {sorted(load_kwargs)}: {e}") from e
        if overrides:
            raise UsageError(
                f"the config overrides {overrides} do not fit this checkpoint's weights ({type(e).__name__}: {e}); "
                "load it without them"
            ) from e
        raise PretrainedError(_damaged(name_or_dir, e)) from e
    except Exception as e:  # safetensors' header errors on a truncated file, OSError for a missing one, ...
        raise PretrainedError(_damaged(name_or_dir, e)) from e
    dtype = next(hf.parameters()).dtype
    weights = state_dict_from_hf(hf.state_dict(), config, family)
    return config, weights, dtype


def _damaged(name_or_dir, e: Exception) -> str:
    return (
        f"could not load the weights of {str(name_or_dir)!r} ({type(e).__name__}: {e}). The weights file is "
        "damaged, truncated or missing: copy the folder again, or write it again with save_pretrained"
    )


def _check_folder(path: Path) -> None:
    """PretrainedError when a local folder is plainly not a transformers model (before transformers reads it)."""
    import json

    config = path / "config.json"
    if not config.is_file():
        raise PretrainedError(
            f"{path} has no config.json, so it is not a transformers model folder; give the folder written by "
            "save_pretrained (config.json + model.safetensors)"
        )
    try:
        info = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PretrainedError(f"{config} is damaged (not valid JSON: {e}); copy the model folder again") from e
    if isinstance(info, dict) and "format_version" in info and "model_type" not in info:
        raise PretrainedError(
            f"{path} is a gptviz checkpoint, not a transformers folder; use gptviz.load({str(path)!r}) for this "
            "folder (GPT.from_pretrained reads what transformers' save_pretrained writes)"
        )
    if not isinstance(info, dict) or "model_type" not in info:
        raise PretrainedError(
            f"{config} has no model_type, so {path} is not a transformers model folder; give the folder written "
            "by save_pretrained"
        )


def read_generation_config(name_or_dir: str | Path) -> dict:
    """The checkpoint's generation defaults: its generation_config.json, else what its config.json implies.

    transformers' GenerationConfig fields as a dict (eos/bos/pad ids, and sampling defaults where a model ships
    them); empty when neither file says anything.
    """
    from transformers import AutoConfig, GenerationConfig

    path = Path(name_or_dir).expanduser()
    target = str(path) if path.is_dir() else str(name_or_dir)
    try:
        return GenerationConfig.from_pretrained(target).to_diff_dict()
    except (OSError, ValueError):
        try:
            return GenerationConfig.from_model_config(AutoConfig.from_pretrained(target)).to_diff_dict()
        except (OSError, ValueError):
            return {}


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy translated weights into a gptviz GPT built from the same config; every parameter must be covered."""
    tied = model.config.tie_embeddings
    if tied:  # the LM head is the embedding: a checkpoint may or may not list it separately
        weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [m for m in missing if not (tied and m == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not match the model's layout: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; was the config read from the same checkpoint?"
        )


def write_pretrained(
    config: GPTConfig,
    state_dict: dict[str, torch.Tensor],
    directory: str | Path,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
) -> Path:
    """Write config.json + model.safetensors of the config's transformers family (see family_of)."""
    from transformers import AutoModelForCausalLM

    family = family_of(config)  # refuses before anything is written
    directory = Path(directory)
    _check_target(directory)
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteError(
            f"not saving {directory}: the weights {bad[:4]}{' ...' if len(bad) > 4 else ''} hold NaN or inf "
            "(training diverged?); a model folder of them could not be used"
        )
    hf_config = hf_config_for(config, eos_token_id=eos_token_id, bos_token_id=bos_token_id)
    hf = AutoModelForCausalLM.from_config(hf_config)
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in state_dict.items()}
    if config.tie_embeddings:
        sd.pop("lm_head.weight", None)
    missing, unexpected = hf.load_state_dict(state_dict_to_hf(sd, config, family), strict=False)
    missing = [
        m for m in missing if not m.endswith(SKIP_SUFFIXES) and not (config.tie_embeddings and m == "lm_head.weight")
    ]
    if missing or unexpected:  # pragma: no cover - would be a mapping bug
        raise RuntimeError(f"internal mapping error: missing {missing[:5]}, unexpected {unexpected[:5]}")
    hf.save_pretrained(directory)
    return directory


def _check_target(directory: Path) -> None:
    """PathExistsError where save_pretrained would write nothing (a file) or overwrite a gptviz checkpoint."""
    if directory.exists() and not directory.is_dir():
        raise PathExistsError(
            f"{directory} is a file; save_pretrained writes a folder (config.json + model.safetensors). "
            "Choose another path"
        )
    config = directory / "config.json"
    if config.is_file():
        import json

        try:
            info = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            info = None
        if isinstance(info, dict) and "format_version" in info and "model_type" not in info:
            raise PathExistsError(
                f"{directory} holds a gptviz checkpoint; save_pretrained would overwrite its config.json and "
                "weights. Choose another folder (or gptviz.save to replace the checkpoint)"
            )
