"""Fine-tuning runs: what trains, the configs, the base model, the data, and the jobs that hold a Trainer.

    job = build_job(*load_finetune_preset("finetune-genre"))   # checkpoint + labelled data -> a Trainer
    job.train_steps(100)        # gptviz.train.Trainer runs the steps: there is no second training loop here
    job.evaluate()              # accuracy and confusion matrix on the held-out plays
    job.baselines()             # majority class and bag-of-words logistic regression on the same split
    job.save("runs/genre")      # one folder: GPT weights, tokenizer, head, labels, LoRA adapters

A job is a model, its data and the Trainer that fits it: `ClassifierJob` (a GPTClassifier on labelled
texts) or `LMJob` (more next-token training on new text, keeping the model from before for `diff`).

Decisions a user may notice:
- What trains (`mode`): "head" (classifier only), "last_n" (top n blocks + ln_f), "full", or "lora"
  (low-rank adapters on attn.c_attn, optionally the MLP; everything else frozen). Frozen = requires_grad
  False before the Trainer builds its optimizer, which only takes trainable parameters.
- LoRA adapters come from `gptviz.lora`; they can be merged into W (exactly what unmerged computes). A
  classifier saves them beside the base weights; an LM job saves a plain checkpoint with them merged.
- With the lower blocks frozen ("head", "last_n"), a classifier computes their output once per text window and
  keeps it (`finetune.frozen`, up to feature_cache_mb): the same numbers, the work of the blocks that train only.
- The Trainer's attention snapshots and its own checkpoints assume a language model, so classifier jobs run
  with snapshot_interval=0 and out_dir=None; the job saves its folder itself (LM jobs do too, merging LoRA).

What it leaves to others: the classifier, its data and evaluation (`finetune.classifier`), before/after
comparison (`finetune.diff`), the loop (`train`), reading preset files (`presets`), passages and
group-aware splits (`data`), checkpoint files (`checkpoint`), the command (`commands.finetune`).
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint, data
from .._config import DictConfig
from ..lora import add_lora, lora_layers, remove_lora
from ..model import GPT
from ..paths import repo_root
from ..presets import read_preset
from ..train import TrainConfig, Trainer
from .classifier import (
    POOLINGS,
    ClassifierEval,
    GPTClassifier,
    LabelledDataset,
    baselines,
    evaluate_classifier,
    save_classifier,
)
from .diff import CheckpointDiff, checkpoint_diff

TASKS = ("classify", "lm")
MODES = ("head", "last_n", "full", "lora")


# ---- what trains ---------------------------------------------------------------------------------------------
def prepare_gpt(
    gpt: GPT,
    mode: str,
    n_layers: int = 2,
    freeze_embeddings: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    lora_mlp: bool = False,
) -> None:
    """Set requires_grad for `mode` (and add LoRA adapters for "lora"). Call it before building the Trainer."""
    L = gpt.config.n_layer
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "last_n" and (not isinstance(n_layers, int) or not 1 <= n_layers <= L):
        raise ValueError(f"n_layers={n_layers!r}: last_n trains the top n blocks, 1 <= n <= {L} for this model")
    gpt.requires_grad_(mode == "full")
    if mode == "last_n":
        for block in gpt.blocks[L - n_layers :]:
            block.requires_grad_(True)
        gpt.ln_f.requires_grad_(True)
    elif mode == "full" and freeze_embeddings:  # wte is also the LM head (tied): it stays as it is too
        gpt.wte.requires_grad_(False)
        if hasattr(gpt, "wpe"):
            gpt.wpe.requires_grad_(False)
    elif mode == "lora":
        add_lora(gpt, lora_rank, lora_alpha, ("attn.c_attn", "mlp.c_fc", "mlp.c_proj")[: 3 if lora_mlp else 1])


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; a tied tensor counts once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ---- configs and jobs ------------------------------------------------------------------------------------------
@dataclass
class FinetuneConfig(DictConfig):
    task: str = "classify"  # "classify" (a head on the GPT) | "lm" (more next-token training on new text)
    init: str = "lab/models/shakespeare-char"  # a gptviz checkpoint folder, or a Hugging Face GPT-2 folder / id
    data: str = "shakespeare:comedies,histories,tragedies"  # "shakespeare:GENRE,..." | CSV (classify) | text (lm)
    mode: str = "full"  # what trains: "head" (classify only) | "last_n" | "full" | "lora"
    n_layers: int = 2  # last_n: the top n blocks (and ln_f) train, lower blocks and embeddings stay frozen
    freeze_embeddings: bool = False  # full: keep wte/wpe fixed (wte is tied to the LM head, which stays too)
    lora_rank: int = 8  # r of the adapters B (out, r) A (r, in)
    lora_alpha: float = 16.0  # the adapter's output is scaled by alpha / r
    lora_mlp: bool = False  # adapters on mlp.c_fc and mlp.c_proj too (always on attn.c_attn)
    pooling: str = "mean"  # classify: "mean" of all real tokens | "last" real token (it has seen the whole window)
    max_windows: int = 1  # classify: read texts in up to this many block_size windows; longer ones keep their start
    head_dropout: float = 0.0  # dropout on the pooled features, before the head
    feature_cache_mb: float = 512.0  # classify: memory for the frozen lower blocks' output per text (0 = off)
    passage_chars: int = 400  # shakespeare classify: characters per passage (consecutive speeches)
    max_per_play: int | None = None  # shakespeare classify: at most this many passages per play, evenly spaced
    test_fraction: float = 0.25  # classify: share of each label's groups (plays) held out for the test set
    test_groups: list[str] | None = None  # classify: held-out groups by name instead of test_fraction
    split_seed: int = 0  # classify: which groups test_fraction picks
    val_plays: list[str] | None = None  # lm on shakespeare: held-out plays (default: the lab's held-out ones there)
    val_fraction: float = 0.2  # lm on one play ("shakespeare-play:NAME"): the share at its end held out

    def __post_init__(self) -> None:
        problems = []
        for name, allowed in (("task", TASKS), ("mode", MODES), ("pooling", POOLINGS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.task == "lm" and self.mode == "head":
            problems.append("mode 'head' trains a classifier head; for task 'lm' use last_n, full or lora")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"val_fraction must be between 0 and 1 (e.g. 0.2), got {self.val_fraction!r}")
        if not 0.0 <= self.head_dropout < 1.0:
            problems.append(f"head_dropout must be in [0, 1), got {self.head_dropout!r}")
        if not (isinstance(self.feature_cache_mb, (int, float)) and self.feature_cache_mb >= 0):
            problems.append(f"feature_cache_mb must be >= 0 (0 turns the cache off), got {self.feature_cache_mb!r}")
        for name in ("n_layers", "lora_rank", "max_windows", "passage_chars"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if problems:
            raise ValueError("invalid FinetuneConfig: " + "; ".join(problems))


def load_base(init: str, device: str | None = None):
    """(GPT, tokenizer) to start from: a gptviz checkpoint folder, a Hugging Face GPT-2 folder, or a hub id."""
    path = Path(init).expanduser()
    if not path.is_absolute() and not path.exists():
        # presets name lab paths relative to the repository; notebooks run from notebooks/
        if (repo_root() / path).exists():
            path = repo_root() / path
    config = path / "config.json"
    if config.is_file():
        info = json.loads(config.read_text(encoding="utf-8"))
        if "format_version" in info:
            return checkpoint.load(path, device)
    if config.is_file() or (not path.exists() and re.fullmatch(r"([\w-]+/)?(distil)?gpt2(-\w+)?", str(init))):
        from ..tokenizers import get_tokenizer  # imported here: only Hugging Face bases need GPT-2's BPE

        gpt, tok = GPT.from_pretrained(init), get_tokenizer("gpt2")
        if gpt.config.vocab_size < tok.vocab_size:
            raise ValueError(
                f"{init} has vocab_size {gpt.config.vocab_size}, but GPT-2's tokenizer needs "
                f"{tok.vocab_size} ids; Hugging Face folders are paired with GPT-2's tokenizer"
            )
        return gpt.to(device or "cpu"), tok
    raise FileNotFoundError(
        f"nothing to fine-tune at {init!r}: give a gptviz checkpoint folder (the lab's is "
        "lab/models/shakespeare-char; make it with `gptviz train --config shakespeare-char`) or "
        "a Hugging Face GPT-2 folder"
    )


def _genres(spec: str) -> tuple[str, ...] | None:
    """ "shakespeare:comedies,tragedies" -> ("comedies", "tragedies"); "shakespeare" -> all; a path -> None."""
    s = spec.strip().lower()
    if s == "shakespeare":
        return data.GENRES
    if not s.startswith("shakespeare:"):
        return None
    genres = tuple(g.strip() for g in s.split(":", 1)[1].split(",") if g.strip())
    unknown = [g for g in genres if g not in data.GENRES]
    if unknown or not genres:
        raise ValueError(
            f"data={spec!r}: unknown genres {unknown}; choose from {', '.join(data.GENRES)}, "
            "e.g. shakespeare:comedies,histories,tragedies"
        )
    return genres


def genre_corpus(genres: tuple[str, ...], val_plays: list[str] | None = None) -> data.Corpus:
    """The plays of some genres as a Corpus, split by play (default: the lab's held-out plays in them)."""
    plays = [p for p in data.shakespeare_plays() if p.genre in genres]
    names = [p.name for p in plays]
    if val_plays is None:
        val_plays = [n for n in data.SHAKESPEARE_VAL_PLAYS if n in names] or names[-1:]
    bad = [v for v in val_plays if v not in names]
    if bad or not val_plays or len(set(val_plays)) >= len(names):
        raise ValueError(f"val_plays {list(val_plays)}: need one or more (not all) of these plays: {', '.join(names)}")
    train, val = [p for p in plays if p.name not in val_plays], [p for p in plays if p.name in val_plays]
    return data.Corpus(
        "shakespeare:" + ",".join(genres),
        "\n".join(p.text for p in train),  # a blank line between
        "\n".join(p.text for p in val),
        [p.name for p in train],
        [p.name for p in val],
    )  # plays


def play_corpus(name: str, val_fraction: float = 0.2) -> data.Corpus:
    """One play as a Corpus: its first part to train on, the last `val_fraction` held out, cut between speeches.

    Fine-tuning on the start of a play the base model never read, and measuring on its end, shows what
    fine-tuning adds: the new play's names, turns of phrase and speakers (lesson 05)."""
    plays = {p.name: p for p in data.shakespeare_plays()}
    if name not in plays:
        import difflib

        close = [n for n in plays if name.lower() in n] or difflib.get_close_matches(name, list(plays), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close[:3])}?" if close else f"the plays are: {', '.join(sorted(plays))}"
        raise ValueError(f"no play {name!r} in the Shakespeare corpus (names are file stems like 'hamlet'); {hint}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (e.g. 0.2), got {val_fraction!r}")
    text = plays[name].text
    cut = text.find("\n\n", int(len(text) * (1 - val_fraction)))  # the blank line after a speech
    cut = len(text) - int(len(text) * val_fraction) if cut < 0 else cut + 2
    return data.Corpus(f"shakespeare-play:{name}", text[:cut], text[cut:], [name], [name])


def corpus_for(config: FinetuneConfig) -> data.Corpus:
    """The LM corpus `config.data` names: "shakespeare:GENRE,..." (split by play), "shakespeare-play:NAME"
    (one play, its end held out) or a text file / folder (`data.load_corpus`)."""
    spec = config.data.strip()
    if spec.lower().startswith("shakespeare-play:"):
        return play_corpus(spec.split(":", 1)[1].strip(), config.val_fraction)
    genres = _genres(spec)
    return genre_corpus(genres, config.val_plays) if genres is not None else data.load_corpus(spec)


def labelled_split(config: FinetuneConfig) -> tuple[list[data.Example], list[data.Example]]:
    """(train, test) examples for `config.data`, split so that no play (group) is on both sides."""
    genres = _genres(config.data)
    if genres is not None:
        examples = data.shakespeare_genre_passages(genres, config.passage_chars, config.max_per_play)
    else:
        examples = data.load_labelled_csv(config.data)
    return data.split_by_group(examples, config.test_groups, config.test_fraction, config.split_seed)


class _Job:
    trainer: Trainer

    def train_steps(self, n: int) -> list:
        return self.trainer.train_steps(n)

    @property
    def step(self) -> int:
        return self.trainer.step


class ClassifierJob(_Job):
    """A GPTClassifier, its train/test sets, and the Trainer that fits it."""

    def __init__(
        self,
        gpt: GPT,
        tokenizer,
        train: list[data.Example],
        test: list[data.Example],
        config: FinetuneConfig | None = None,
        train_config: TrainConfig | None = None,
        meta: dict | None = None,
    ) -> None:
        config = config or FinetuneConfig()
        train_config = train_config or TrainConfig()
        if config.task != "classify":
            raise ValueError(f"ClassifierJob needs task='classify', got {config.task!r}")
        if not train or not test:
            raise ValueError("a classifier needs labelled train and test examples; both sets must be non-empty")
        labels = sorted({e.label for e in train})
        if len(labels) < 2:
            raise ValueError(
                f"the training examples have only the label(s) {labels}; a classifier needs at least "
                "two different classes"
            )
        torch.manual_seed(train_config.seed)  # head and adapter initialisation
        prepare_gpt(
            gpt,
            config.mode,
            config.n_layers,
            config.freeze_embeddings,
            config.lora_rank,
            config.lora_alpha,
            config.lora_mlp,
        )
        self.model = GPTClassifier(
            gpt,
            pooling=config.pooling,
            labels=labels,
            max_windows=config.max_windows,
            dropout=config.head_dropout,
            feature_cache_mb=config.feature_cache_mb,
        )
        self.config, self.tokenizer, self.train_examples, self.test_examples = config, tokenizer, train, test
        self.train_set = LabelledDataset(train, tokenizer, labels, self.model.max_tokens, "train")
        self.test_set = LabelledDataset(test, tokenizer, labels, self.model.max_tokens, "test")
        # The Trainer's snapshots and checkpoints assume a language model: off; `save` writes the folder.
        tc = replace(train_config, snapshot_interval=0, out_dir=None, corpus=config.data, tokenizer=tokenizer.kind)
        self.out_dir = train_config.out_dir
        self.trainer = Trainer(
            self.model,
            tokenizer,
            self.train_set,
            self.test_set,
            tc,
            meta={"finetune": config.to_dict(), **(meta or {})},
        )
        self._baselines: dict | None = None

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def evaluate(self, index: list[int] | None = None) -> ClassifierEval:
        """Accuracy and confusion matrix on the test set (or the test examples at `index`)."""
        return evaluate_classifier(self.model, self.test_set, index=index)

    def baselines(self) -> dict:
        if self._baselines is None:
            self._baselines = baselines(self.train_examples, self.test_examples)
        return self._baselines

    def predict_proba(self, texts: str | list[str]) -> torch.Tensor:
        return self.model.predict_proba(self.tokenizer, texts)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        target = path or self.out_dir
        if not target:
            raise ValueError("no folder to save to: pass a path or set train.out_dir")
        return save_classifier(self.model, self.tokenizer, target, self.trainer.training_state(False))

    def summary(self, evaluation: ClassifierEval | None = None) -> dict:
        ev = evaluation or self.evaluate()
        trainable, total = count_parameters(self.model)
        return {
            "task": "classify",
            **ev.to_dict(),
            **self.baselines(),
            "n_train": len(self.train_set),
            "n_test": len(self.test_set),
            "test_groups": sorted({e.group for e in self.test_examples}),
            "mode": self.config.mode,
            "trainable_params": trainable,
            "total_params": total,
            "steps": self.trainer.step,
        }


class LMJob(_Job):
    """Next-token training of a GPT on new text, with the model before it kept for `diff`."""

    def __init__(
        self,
        gpt: GPT,
        tokenizer,
        corpus: data.Corpus,
        config: FinetuneConfig | None = None,
        train_config: TrainConfig | None = None,
        meta: dict | None = None,
        keep_before: bool = True,
    ) -> None:
        config = config or FinetuneConfig(task="lm")
        train_config = train_config or TrainConfig()
        if config.task != "lm":
            raise ValueError(f"LMJob needs task='lm', got {config.task!r}")
        self.config, self.tokenizer, self.corpus = config, tokenizer, corpus
        self.before = copy.deepcopy(gpt).eval() if keep_before else None
        torch.manual_seed(train_config.seed)
        prepare_gpt(
            gpt,
            config.mode,
            config.n_layers,
            config.freeze_embeddings,
            config.lora_rank,
            config.lora_alpha,
            config.lora_mlp,
        )
        self.model = gpt
        try:
            sets = [data.TokenDataset.from_text(t, tokenizer) for t in (corpus.train_text, corpus.val_text)]
        except ValueError as e:
            raise ValueError(f"the base model's tokenizer cannot encode the new text ({e})") from None
        tc = replace(train_config, out_dir=None, corpus=corpus.name, tokenizer=tokenizer.kind)
        self.out_dir = train_config.out_dir
        self.trainer = Trainer(
            gpt,
            tokenizer,
            sets[0],
            sets[1],
            tc,
            meta={"finetune": config.to_dict(), "corpus": corpus.name, "held_out": corpus.val_docs, **(meta or {})},
        )
        self.loss_before = self.trainer.evaluate()  # {"train", "val"} on the Trainer's fixed eval batches

    def evaluate(self) -> dict[str, float]:
        return self.trainer.evaluate()

    def diff(self, text: str | None = None) -> CheckpointDiff:
        if self.before is None:
            raise ValueError("this job did not keep the model from before fine-tuning (keep_before=False)")
        return checkpoint_diff(self.before, self.model, self.tokenizer, text or self.probe_text())

    def probe_text(self) -> str:
        """The Trainer's probe prompt, or (when the tokenizer cannot encode it) the start of the val text."""
        try:
            self.tokenizer.encode(self.trainer.config.probe_text)
            return self.trainer.config.probe_text
        except ValueError:
            n = min(64, self.model.config.block_size)
            return self.tokenizer.decode([int(i) for i in self.trainer.val_data.tokens[:n]])

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """A plain gptviz checkpoint (LoRA merged into the weights), loadable by every lab panel."""
        target = path or self.out_dir
        if not target:
            raise ValueError("no folder to save to: pass a path or set train.out_dir")
        gpt = remove_lora(copy.deepcopy(self.model)) if lora_layers(self.model) else self.model
        return checkpoint.save(target, gpt, self.tokenizer, self.trainer.training_state(False), include_optimizer=False)

    def summary(self, after: dict | None = None) -> dict:
        after = after or self.evaluate()
        trainable, total = count_parameters(self.model)
        out = {
            "task": "lm",
            "val_loss_before": self.loss_before["val"],
            "val_loss_after": after["val"],
            "train_loss_before": self.loss_before["train"],
            "train_loss_after": after["train"],
            "n_train_tokens": len(self.trainer.train_data),
            "n_val_tokens": len(self.trainer.val_data),
            "held_out": self.corpus.val_docs,
            "mode": self.config.mode,
            "trainable_params": trainable,
            "total_params": total,
            "steps": self.trainer.step,
        }
        if self.before is not None:
            out["most_changed_heads"] = [list(h) for h in self.diff().top_heads(3)]
        return out


def build_job(config: FinetuneConfig, train_config: TrainConfig, meta: dict | None = None) -> ClassifierJob | LMJob:
    """Load `config.init`, prepare `config.data`, and return the job (its Trainer built, no step taken)."""
    gpt, tokenizer = load_base(config.init)
    meta = {"base": str(config.init), **(meta or {})}
    if config.task == "classify":
        train, test = labelled_split(config)
        return ClassifierJob(gpt, tokenizer, train, test, config, train_config, meta)
    return LMJob(gpt, tokenizer, corpus_for(config), config, train_config, meta)


def load_finetune_preset(name_or_path: str | os.PathLike) -> tuple[FinetuneConfig, TrainConfig]:
    """(FinetuneConfig, TrainConfig) from {"finetune": {...}, "train": {...}} (a name in lab/configs or a path)."""
    path, preset = read_preset(name_or_path)
    unknown = sorted(set(preset) - {"finetune", "train", "description"})
    if unknown or "finetune" not in preset:
        raise ValueError(
            f"{path}: a fine-tuning preset has 'finetune' and 'train' (and 'description'); "
            f"unknown keys {unknown}" + ("" if "finetune" in preset else ", 'finetune' missing")
        )
    return FinetuneConfig.from_dict(preset["finetune"]), TrainConfig.from_dict(preset.get("train", {}))
