"""Assembling a training run: a preset file -> configs -> corpus, tokenizer, datasets, a fresh GPT -> a Trainer.

    model_fields, config = load_preset("tiny")       # lab/configs/tiny.json: {"model": {...}, "train": {...}}
    trainer = build_trainer(model_fields, config)   # corpus -> tokenizer -> datasets -> GPT (seeded) -> Trainer
    trainer = resume_trainer("runs/tiny")           # the same run, continued from its checkpoint

A preset is a JSON object in lab/configs (or any path): "model" holds GPTConfig fields (vocab_size is set
from the tokenizer), "train" holds TrainConfig fields. `read_preset` is the one reader of those files; the
fine-tuning presets ({"finetune": ..., "train": ...}) use it too, from `gptviz.finetune.jobs`.

What it leaves to others: the loop itself (`gptviz.train.Trainer`), corpora (`gptviz.data`), tokenizers
(`gptviz.tokenizers`), checkpoint files (`gptviz.checkpoint`), where presets live (`gptviz.paths`), and the
command line (`gptviz.commands.train`).
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import torch

from . import checkpoint
from .config import GPTConfig
from .errors import ConfigError, GptvizError, MissingFileError
from .model import GPT
from .paths import preset_path
from .train import TrainConfig, Trainer


def read_preset(name_or_path: str | os.PathLike) -> tuple[Path, dict]:
    """(path, the preset's JSON object) for a preset name in lab/configs or a path; errors say what is wrong."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"a preset is a name in lab/configs or a path, got {type(name_or_path).__name__}")
    if Path(name_or_path).is_dir():
        raise ConfigError(f"{name_or_path} is a folder; a preset is one JSON file (e.g. lab/configs/tiny.json)")
    try:
        path = preset_path(str(name_or_path))
        text = Path(path).read_text(encoding="utf-8")
    except GptvizError:
        raise
    except FileNotFoundError as e:
        raise MissingFileError(str(e)) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name_or_path} is not UTF-8 text ({e}); a preset is a JSON file") from e
    try:
        preset = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f'{path} is not valid JSON ({e}); a preset is {{"model": {{...}}, "train": {{...}}}} '
            '(fine-tuning: {"finetune": {...}, "train": {...}})'
        ) from None
    if not isinstance(preset, dict):
        raise ConfigError(
            f"{path} holds a JSON {type(preset).__name__}; a preset is a JSON object "
            '{"model": {...}, "train": {...}}'
        )
    return Path(path), preset


def load_preset(name_or_path: str | os.PathLike) -> tuple[dict, TrainConfig]:
    """(model config fields, TrainConfig) from a preset: {"model": {...GPTConfig}, "train": {...TrainConfig}}."""
    path, preset = read_preset(name_or_path)
    unknown = sorted(set(preset) - {"model", "train", "description"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level keys {unknown}; a preset has 'model', 'train' (and 'description')"
        )
    for section in ("model", "train"):
        if not isinstance(preset.get(section, {}), dict):
            raise ConfigError(f'{path}: "{section}" must be a JSON object of fields, got {preset[section]!r}')
    model = dict(preset.get("model", {}))
    bad = sorted(set(model) - {f.name for f in fields(GPTConfig)})
    if bad:
        raise ConfigError(f"{path}: unknown model fields {bad}; known: {[f.name for f in fields(GPTConfig)]}")
    try:
        # every field's type now, so "n_layer": "4" is named here, not when the model is built after the corpus
        GPTConfig.from_dict({"vocab_size": 256, **model})
        return model, TrainConfig.from_dict(preset.get("train", {}))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def prepare_data(config: TrainConfig, tokenizer=None) -> tuple:
    """(tokenizer, train TokenDataset, val TokenDataset, Corpus) for `config.corpus`.

    A char vocabulary is built from train + val text (so no validation character is unknown); a "bpe"
    tokenizer is trained on the train text only. Pass `tokenizer` to reuse one (resuming does).
    """
    # imported here: reading a preset should not load the corpora or the tokenizer libraries
    from .data import TokenDataset, load_corpus
    from .tokenizers import get_tokenizer

    corpus = load_corpus(config.corpus)
    if tokenizer is None:
        if config.tokenizer == "char":
            tokenizer = get_tokenizer("char", text=corpus.train_text + corpus.val_text)
        elif config.tokenizer == "bpe":
            tokenizer = get_tokenizer("bpe", text=corpus.train_text, vocab_size=config.bpe_vocab_size)
        else:
            tokenizer = get_tokenizer(config.tokenizer)
    return (
        tokenizer,
        TokenDataset.from_text(corpus.train_text, tokenizer),
        TokenDataset.from_text(corpus.val_text, tokenizer),
        corpus,
    )


def build_trainer(model_config: GPTConfig | dict, config: TrainConfig, **trainer_kwargs) -> Trainer:
    """Corpus -> tokenizer -> datasets -> a fresh GPT (seeded) -> Trainer. vocab_size comes from the tokenizer."""
    tokenizer, train_data, val_data, corpus = prepare_data(config)
    fields_ = model_config.to_dict() if isinstance(model_config, GPTConfig) else dict(model_config)
    vocab = fields_.get("vocab_size")
    if isinstance(model_config, dict) and isinstance(vocab, int) and vocab < tokenizer.vocab_size:
        raise ConfigError(
            f"model.vocab_size={fields_['vocab_size']} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} ids; leave vocab_size out of the preset (it is set for you)"
        )
    if isinstance(model_config, GPTConfig) or "vocab_size" not in fields_:
        fields_["vocab_size"] = tokenizer.vocab_size
    gpt_config = GPTConfig.from_dict(fields_)
    torch.manual_seed(config.seed)
    model = GPT(gpt_config)
    meta = {
        "corpus": corpus.name,
        "held_out": corpus.val_docs,
        "train_tokens": len(train_data),
        "val_tokens": len(val_data),
        **trainer_kwargs.pop("meta", {}),
    }
    return Trainer(model, tokenizer, train_data, val_data, config, meta=meta, **trainer_kwargs)


def resume_trainer(path: str | os.PathLike, overrides: dict | None = None, **trainer_kwargs) -> Trainer:
    """A Trainer that continues the run saved at `path`; `overrides` change train fields (e.g. max_steps)."""
    training = checkpoint.load_training_state(path)
    if training.train_config is None:
        raise ConfigError(f"{path} has no train config (it was not written by a Trainer); it cannot be resumed")
    config = TrainConfig.from_dict({**training.train_config, **(overrides or {})})
    model, tokenizer = checkpoint.load(path)
    _, train_data, val_data, corpus = prepare_data(config, tokenizer)
    keep = {
        k: v for k, v in training.state.items() if k in ("corpus", "held_out", "train_tokens", "val_tokens", "commands")
    }
    meta = {**keep, **trainer_kwargs.pop("meta", {})}
    trainer = Trainer(model, tokenizer, train_data, val_data, config, meta=meta, **trainer_kwargs)
    trainer.load_state(training)
    return trainer
