"""Fine-tuning on top of the training loop: continue pre-training on new text, or put a classifier on a GPT.

    job = build_job(*load_finetune_preset("finetune-genre"))   # checkpoint + labelled data -> a Trainer
    job.train_steps(100)        # gptviz.train.Trainer runs the steps: there is no second training loop here
    job.evaluate()              # accuracy and confusion matrix on the held-out plays
    job.baselines()             # majority class and bag-of-words logistic regression on the same split
    job.save("runs/genre")      # one folder: GPT weights, tokenizer, head, labels, LoRA adapters

Classification fits the Trainer unchanged. `GPTClassifier` maps ids (B, T) to class logits (B, K) and
`LabelledDataset.get_batch` returns x (B, T), right-padded with -1, and labels y (B,), so the Trainer's
`cross_entropy(logits.view(-1, K), y.view(-1))` is the classification loss and its eval works as is.
Causal attention means right padding never changes an earlier position, so a padded row gives exactly the
result of the unpadded text.

Decisions a user may notice:
- What trains (`mode`): "head" (classifier only), "last_n" (top n blocks + ln_f), "full", or "lora"
  (low-rank adapters on attn.c_attn, optionally the MLP; everything else frozen). Frozen = requires_grad
  False before the Trainer builds its optimizer, which only takes trainable parameters.
- LoRA adapters come from `gptviz.lora` (W x + (alpha / r) B A x, written out in one class); they can be
  merged into W (exactly what unmerged computes) and are saved beside the base weights.
- Texts longer than the classifier reads (`max_windows` x block_size tokens) keep their FIRST tokens,
  with a warning: the start of a passage holds its speaker's name, and Hugging Face truncates the same side.
  With max_windows > 1 a text is read in consecutive windows of block_size tokens (no attention across
  windows); "mean" pooling averages every real token, "last" takes the last token of the last window.
- A char tokenizer cannot encode characters it never saw: they are dropped, with a warning naming them.
- The Trainer's attention snapshots and its own checkpoints assume a language model, so classifier jobs run
  with snapshot_interval=0 and out_dir=None; the job saves its folder itself (LM jobs do too, merging LoRA).

What it leaves to others: the loop, LR schedule and eval batches (`train`), checkpoint files (`checkpoint`),
passages and group-aware splits (`data`), figures (`plots`), the lab panel (`widgets.finetune`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sys
import time
import typing
import warnings
from collections import Counter
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ._config import DictConfig
from . import checkpoint, data
from .hooks import capture
from .lora import _adapters_detached, add_lora, lora_layers, remove_lora
from .model import GPT
from .records import ForwardRecord, record_forward
from .train import Trainer, TrainConfig, TrainingDiverged, _field_help, _parser_for

TASKS = ("classify", "lm")
MODES = ("head", "last_n", "full", "lora")
POOLINGS = ("last", "mean")
CLASSIFIER_JSON, CLASSIFIER_WEIGHTS = "classifier.json", "classifier.safetensors"


# ---- what trains ---------------------------------------------------------------------------------------------
def prepare_gpt(gpt: GPT, mode: str, n_layers: int = 2, freeze_embeddings: bool = False, lora_rank: int = 8,
                lora_alpha: float = 16.0, lora_mlp: bool = False) -> None:
    """Set requires_grad for `mode` (and add LoRA adapters for "lora"). Call it before building the Trainer."""
    L = gpt.config.n_layer
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "last_n" and (not isinstance(n_layers, int) or not 1 <= n_layers <= L):
        raise ValueError(f"n_layers={n_layers!r}: last_n trains the top n blocks, 1 <= n <= {L} for this model")
    gpt.requires_grad_(mode == "full")
    if mode == "last_n":
        for block in gpt.blocks[L - n_layers:]:
            block.requires_grad_(True)
        gpt.ln_f.requires_grad_(True)
    elif mode == "full" and freeze_embeddings:  # wte is also the LM head (tied): it stays as it is too
        gpt.wte.requires_grad_(False)
        if hasattr(gpt, "wpe"):
            gpt.wpe.requires_grad_(False)
    elif mode == "lora":
        add_lora(gpt, lora_rank, lora_alpha, ("attn.c_attn", "mlp.c_fc", "mlp.c_proj")[:3 if lora_mlp else 1])


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; a tied tensor counts once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ---- the classifier ------------------------------------------------------------------------------------------
class GPTClassifier(nn.Module):
    """A GPT trunk + a linear head: ids (B, T), right-padded with -1, -> class logits (B, K)."""

    def __init__(self, gpt: GPT, n_classes: int | None = None, pooling: str = "last", labels: list[str] | None = None,
                 max_windows: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        labels = [str(x) for x in labels] if labels is not None else [str(i) for i in range(n_classes or 0)]
        if len(set(labels)) < 2:
            raise ValueError(f"a classifier needs at least two different classes, got labels={labels!r}; "
                             "check that the training data has more than one label")
        if n_classes is not None and n_classes != len(labels):
            raise ValueError(f"n_classes={n_classes} but {len(labels)} labels were given ({labels})")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not isinstance(max_windows, int) or max_windows < 1:
            raise ValueError(f"max_windows must be an integer >= 1, got {max_windows!r}")
        self.gpt, self.labels, self.pooling, self.max_windows = gpt, labels, pooling, max_windows
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(gpt.config.n_embd, len(labels))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):  # the Trainer reads config.block_size
        return self.gpt.config

    @property
    def device(self) -> torch.device:
        return self.gpt.device

    @property
    def max_tokens(self) -> int:
        return self.max_windows * self.gpt.config.block_size

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """Ids (B, T) padded with -1 -> pooled hidden states (B, C)."""
        B, T = idx.shape
        lengths = (idx >= 0).sum(1)  # (B,) right padding: the real tokens are idx[b, :lengths[b]]
        if (idx.device.type == "cpu" or not self.training) and int(lengths.min()) == 0:  # a GPU sync: not in training
            raise ValueError("a row of the batch has no tokens (all padding); drop empty texts")
        bs = self.gpt.config.block_size
        if T > self.max_tokens:
            raise ValueError(f"{T} tokens is longer than this classifier reads ({self.max_tokens} = max_windows "
                             f"{self.max_windows} x block_size {bs}); truncate the ids (LabelledDataset does)")
        nw = -(-T // bs)  # windows per row
        if nw == 1:
            h = self.gpt.trunk(idx.clamp(min=0))  # (B, T, C)
        else:
            win = F.pad(idx, (0, nw * bs - T), value=-1).view(B * nw, bs)  # (B*nw, bs)
            keep = win[:, 0] >= 0  # windows holding real tokens (right padding: they start with one)
            out = self.gpt.trunk(win[keep].clamp(min=0))  # (n_kept, bs, C)
            h = out.new_zeros(B * nw, bs, out.shape[-1])
            h[keep] = out
            h = h.view(B, nw * bs, -1)  # (B, nw*bs, C) windows side by side again
        if self.pooling == "last":
            return h[torch.arange(B, device=h.device), lengths - 1]  # (B, C)
        mask = (torch.arange(h.shape[1], device=h.device)[None] < lengths[:, None]).to(h.dtype)  # (B, T')
        return (h * mask[..., None]).sum(1) / lengths[:, None].to(h.dtype)  # (B, C)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(idx)))  # (B, K)

    @torch.no_grad()
    def predict_proba(self, tokenizer, texts: str | list[str], batch_size: int = 32) -> torch.Tensor:
        """Class probabilities (N, K) of texts, in `self.labels` order (eval mode, CPU result)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = [encode_for(self, tokenizer, t, where=f"text {i}") for i, t in enumerate(texts)]
        was = self.training
        self.eval()
        try:
            out = [F.softmax(self(_pad(ids[i:i + batch_size]).to(self.device)).float(), -1).cpu()
                   for i in range(0, len(ids), batch_size)]
        finally:
            self.train(was)
        return torch.cat(out)

    def predict(self, tokenizer, texts: str | list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(tokenizer, texts).argmax(-1).tolist()]


@torch.no_grad()
def explain(model: GPTClassifier, tokenizer, text: str) -> dict:
    """What the classifier says about `text` and where its pooled token looked, in the text's last window.

    {"probs": (K,), "labels": K names, "tokens": T strings, "attention": (L, nh, T)}: for "last" pooling the
    last token's attention row; for "mean" the mean row of the window's tokens (what the average pools over).
    """
    ids = encode_for(model, tokenizer, text)
    start = (len(ids) - 1) // model.config.block_size * model.config.block_size  # the last window
    T = len(ids) - start
    was = model.training
    model.eval()
    try:
        with capture(model.gpt, "blocks.*.attn.hook_pattern", to_cpu=True) as cap:
            logits = model(torch.tensor([ids], device=model.device))  # (1, K)
    finally:
        model.train(was)
    att = torch.stack([cap[f"blocks.{l}.attn.hook_pattern"][-1, :, :T, :T]  # (nh, T, T) of the last window
                       for l in range(model.config.n_layer)]).float()  # (L, nh, T, T)
    rows = att[:, :, T - 1] if model.pooling == "last" else att.mean(2)  # (L, nh, T)
    return {"probs": F.softmax(logits[0].float(), -1).cpu(), "labels": list(model.labels),
            "tokens": tokenizer.tokens(ids[start:]), "attention": rows}


def _pad(rows: list[list[int]]) -> torch.Tensor:
    T = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (T - len(r)) for r in rows], dtype=torch.long)  # (B, T)


def encode_lenient(tokenizer, text: str) -> tuple[list[int], str]:
    """(ids, characters dropped): a char tokenizer skips characters outside its vocabulary."""
    try:
        return list(tokenizer.encode(text)), ""
    except ValueError:
        if getattr(tokenizer, "kind", "") != "char":
            raise
    known = set(tokenizer.chars)
    return list(tokenizer.encode("".join(c for c in text if c in known))), "".join(c for c in text if c not in known)


def encode_for(model: GPTClassifier, tokenizer, text: str, where: str = "the text") -> list[int]:
    """Ids of one text for `model`: unknown characters dropped, the first max_tokens kept (both with a warning)."""
    ids, dropped = encode_lenient(tokenizer, text)
    if dropped:
        warnings.warn(f"{where}: dropped characters the tokenizer does not know: {''.join(sorted(set(dropped)))!r}",
                      stacklevel=3)
    if not ids:
        raise ValueError(f"{where} has no tokens to classify (empty, or only unknown characters); type some text")
    if len(ids) > model.max_tokens:
        warnings.warn(f"{where} has {len(ids)} tokens; the classifier reads the first {model.max_tokens} "
                      f"(max_windows {model.max_windows} x block_size {model.config.block_size})", stacklevel=3)
    return ids[:model.max_tokens]


# ---- labelled data ---------------------------------------------------------------------------------------------
class LabelledDataset:
    """Tokenised examples and their label indices; `get_batch` draws random examples as the Trainer asks."""

    def __init__(self, examples: list[data.Example], tokenizer, labels: list[str], max_tokens: int,
                 name: str = "train") -> None:
        if not examples:
            raise ValueError(f"the {name} set is empty; give labelled examples (text, label)")
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted({e.label for e in examples} - set(index))
        if unknown:
            raise ValueError(f"{name} labels {unknown} are not among the classifier's labels {labels}; "
                             "every label needs training examples (split by group keeps each label on both sides)")
        self.examples, self.labels, self.name = list(examples), list(labels), name
        self.ids, dropped, cut = [], set(), 0
        for i, e in enumerate(self.examples):
            ids, gone = encode_lenient(tokenizer, e.text)
            dropped.update(gone)
            if not ids:
                raise ValueError(f"{name} example {i} (group {e.group!r}) has no tokens: {e.text[:40]!r}; remove it")
            cut += len(ids) > max_tokens
            self.ids.append(ids[:max_tokens])
        if dropped:
            warnings.warn(f"{name} set: dropped characters the tokenizer does not know: {''.join(sorted(dropped))!r}",
                          stacklevel=2)
        if cut:
            warnings.warn(f"{cut} of {len(self.ids)} {name} texts are longer than the classifier reads "
                          f"({max_tokens} tokens); kept the first {max_tokens} tokens of each. Use shorter passages "
                          "(passage_chars) or more windows (max_windows)", stacklevel=2)
        self.y = torch.tensor([index[e.label] for e in self.examples])  # (N,)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> np.ndarray:  # the Trainer's fallback probe text: the first example
        return np.asarray(self.ids[0])

    def collate(self, index: list[int], device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T) right-padded with -1 to the longest of these examples, y (B,)."""
        return _pad([self.ids[i] for i in index]).to(device), self.y[index].to(device)

    def get_batch(self, batch_size: int, block_size: int, generator: torch.Generator,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Random examples (with replacement) drawn with `generator`. `block_size` is unused: the text length
        was fixed when the set was built (max_windows x the model's block_size)."""
        return self.collate(torch.randint(0, len(self), (batch_size,), generator=generator).tolist(), device)


# ---- evaluation and baselines ----------------------------------------------------------------------------------
@dataclass
class ClassifierEval:
    accuracy: float
    confusion: torch.Tensor  # (K, K) counts: row = true label, column = predicted
    labels: list[str]
    predictions: torch.Tensor  # (N,) label indices, in the dataset's order
    probs: torch.Tensor  # (N, K)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "confusion": self.confusion.tolist(), "labels": self.labels}


@torch.no_grad()
def evaluate_classifier(model: GPTClassifier, dataset: LabelledDataset, batch_size: int = 64,
                        index: list[int] | None = None) -> ClassifierEval:
    """Accuracy and confusion matrix on every example (or `index`); batches of similar length, eval mode."""
    index = list(range(len(dataset))) if index is None else list(index)
    order = sorted(index, key=lambda i: len(dataset.ids[i]))  # less padding
    was = model.training
    model.eval()
    probs = torch.zeros(len(dataset), len(model.labels))
    try:
        for s in range(0, len(order), batch_size):
            x, _ = dataset.collate(order[s:s + batch_size], model.device)
            probs[order[s:s + batch_size]] = F.softmax(model(x).float(), -1).cpu()
    finally:
        model.train(was)
    probs, y, K = probs[index], dataset.y[index], len(model.labels)
    pred = probs.argmax(-1)
    confusion = torch.bincount(y * K + pred, minlength=K * K).view(K, K)  # (K, K) row = true, column = predicted
    return ClassifierEval(float((pred == y).double().mean()), confusion, list(model.labels), pred, probs)


def baselines(train: list[data.Example], test: list[data.Example]) -> dict:
    """Majority class and bag-of-words logistic regression (scikit-learn), fitted on train, scored on test."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    counts = Counter(e.label for e in train)
    majority = max(sorted(counts), key=counts.get)  # ties: alphabetical
    y = np.array([e.label for e in test])
    vectorizer = CountVectorizer(token_pattern=r"(?u)\b\w+\b")  # words of any length, lowercased
    try:
        X = vectorizer.fit_transform([e.text for e in train])
    except ValueError:  # no word characters at all: no bag of words to fit
        bow = None
    else:
        clf = LogisticRegression(max_iter=2000).fit(X, [e.label for e in train])
        bow = float((clf.predict(vectorizer.transform([e.text for e in test])) == y).mean())
    return {"majority_baseline": float((y == majority).mean()), "majority_label": majority, "bow_baseline": bow}


# ---- checkpoint diff -------------------------------------------------------------------------------------------
@dataclass
class CheckpointDiff:
    """The same prompt through two models: records, per-head attention change, next-token distribution shift."""

    before: ForwardRecord
    after: ForwardRecord
    head_change: torch.Tensor  # (L, nh) mean |attention after - before| over causal (query, key) pairs
    next_token_shift: torch.Tensor  # (T,) total-variation distance of the next-token distributions, 0..1

    def top_heads(self, n: int = 5) -> list[tuple[int, int, float]]:
        """The n heads whose attention changed most: (layer, head, change)."""
        nh = self.head_change.shape[1]
        vals, idx = self.head_change.flatten().topk(min(n, self.head_change.numel()))
        return [(int(i) // nh, int(i) % nh, float(v)) for v, i in zip(vals, idx)]

    def figure(self):
        from . import plots

        return plots.checkpoint_diff(self.before, self.after)


@torch.no_grad()
def checkpoint_diff(model_before: nn.Module, model_after: nn.Module, tokenizer, text: str,
                    k: int = 10) -> CheckpointDiff:
    """Run `text` through both models (GPTs, or classifiers' trunks) and say what changed."""
    before_gpt, after_gpt = (getattr(m, "gpt", m) for m in (model_before, model_after))
    if (before_gpt.config.n_layer, before_gpt.config.n_head) != (after_gpt.config.n_layer, after_gpt.config.n_head):
        raise ValueError("checkpoint_diff compares two versions of one model; these differ in layers or heads")
    before = record_forward(before_gpt, tokenizer, text, k=k)
    after = record_forward(after_gpt, tokenizer, text, k=k)
    T = before.T
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
    change = ((after.attention - before.attention).abs() * causal).sum((-1, -2)) / causal.sum()  # (L, nh)
    idx = before.ids[None]
    p, q = (F.softmax(g(idx.to(g.device))[0].float(), -1).cpu() for g in (before_gpt, after_gpt))  # (T, V)
    return CheckpointDiff(before, after, change, 0.5 * (p - q).abs().sum(-1))


# ---- saving and loading a classifier -------------------------------------------------------------------------
def save_classifier(model: GPTClassifier, tokenizer, path: str | os.PathLike,
                    training: checkpoint.TrainingState | None = None) -> Path:
    """Write one folder: a gptviz checkpoint of the GPT (config.json, model.safetensors, tokenizer.json), plus
    classifier.json (labels, pooling, LoRA settings) and classifier.safetensors (head and adapters).

    The GPT weights are stored as they are (LoRA merged or not, as the json says), so loading gives identical
    predictions; `gptviz.load(path)` also opens the folder as a plain GPT. Written beside the target and
    swapped in by renames, so a crash never leaves a half-written folder.
    """
    path = Path(path)  # checkpoint.save refuses to replace a folder that is not a checkpoint
    layers = lora_layers(model.gpt)
    merged = {layer.merged for layer in layers.values()}
    if len(merged) > 1:
        raise ValueError("some LoRA layers are merged and some not; call merge_lora or unmerge_lora first")
    first = next(iter(layers.values()), None)
    info = {"format": "gptviz-classifier", "version": 1, "labels": model.labels, "pooling": model.pooling,
            "max_windows": model.max_windows, "head_dropout": model.dropout.p,
            "lora": None if first is None else {"rank": first.rank, "alpha": first.alpha, "merged": first.merged,
                                                "layers": sorted(layers)}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if k.startswith("head.") or ".lora_" in k}
    def write_head(folder: Path) -> None:
        save_file(tensors, str(folder / CLASSIFIER_WEIGHTS))
        (folder / CLASSIFIER_JSON).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")

    with _adapters_detached(model.gpt):  # one atomic write: the base checkpoint and the head together
        checkpoint.save(path, model.gpt, tokenizer, training, include_optimizer=False, extra_files=write_head)
    return path


def load_classifier(path: str | os.PathLike, device: str | torch.device | None = None):
    """(GPTClassifier in eval mode, tokenizer) from a folder written by `save_classifier`."""
    path = Path(path)
    if not (path / CLASSIFIER_JSON).is_file():
        checkpoint.read_config(path)  # says what is wrong when it is not a checkpoint at all
        raise checkpoint.CheckpointError(f"{path} is a language-model checkpoint without a classifier head "
                                         f"({CLASSIFIER_JSON} is missing); fine-tune one first: "
                                         "gptviz finetune --config finetune-genre")
    try:
        info = json.loads((path / CLASSIFIER_JSON).read_text(encoding="utf-8"))
        labels, lora = info["labels"], info["lora"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path / CLASSIFIER_JSON} is damaged ({e}); save the classifier again") \
            from None
    gpt, tokenizer = checkpoint.load(path)
    if lora:
        targets = tuple(sorted({name.split(".", 2)[2] for name in lora["layers"]}))
        add_lora(gpt, lora["rank"], lora["alpha"], targets)
        for layer in lora_layers(gpt).values():
            layer.merged = lora["merged"]
    model = GPTClassifier(gpt, pooling=info["pooling"], labels=labels, max_windows=info.get("max_windows", 1),
                          dropout=info.get("head_dropout", 0.0))
    tensors = load_file(str(path / CLASSIFIER_WEIGHTS))
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("head.") or ".lora_" in k}
    wrong = sorted(set(expected) ^ set(tensors)) + [k for k in expected if k in tensors
                                                    and tensors[k].shape != expected[k].shape]
    if wrong:
        raise checkpoint.CheckpointError(f"{path / CLASSIFIER_WEIGHTS} does not match {CLASSIFIER_JSON} "
                                         f"(keys or shapes: {wrong[:4]}); the files come from different saves")
    model.load_state_dict(tensors, strict=False)
    return model.to(device or "cpu").eval(), tokenizer


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
    passage_chars: int = 400  # shakespeare classify: characters per passage (consecutive speeches)
    max_per_play: int | None = None  # shakespeare classify: at most this many passages per play, evenly spaced
    test_fraction: float = 0.25  # classify: share of each label's groups (plays) held out for the test set
    test_groups: list[str] | None = None  # classify: held-out groups by name instead of test_fraction
    split_seed: int = 0  # classify: which groups test_fraction picks
    val_plays: list[str] | None = None  # lm on shakespeare: held-out plays (default: the lab's held-out ones there)

    def __post_init__(self) -> None:
        problems = []
        for name, allowed in (("task", TASKS), ("mode", MODES), ("pooling", POOLINGS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.task == "lm" and self.mode == "head":
            problems.append("mode 'head' trains a classifier head; for task 'lm' use last_n, full or lora")
        if not 0.0 <= self.head_dropout < 1.0:
            problems.append(f"head_dropout must be in [0, 1), got {self.head_dropout!r}")
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
        from .paths import repo_root

        if (repo_root() / path).exists():
            path = repo_root() / path
    config = path / "config.json"
    if config.is_file():
        info = json.loads(config.read_text(encoding="utf-8"))
        if "format_version" in info:
            return checkpoint.load(path, device)
    if config.is_file() or (not path.exists() and re.fullmatch(r"([\w-]+/)?(distil)?gpt2(-\w+)?", str(init))):
        from .tokenizers import get_tokenizer

        gpt, tok = GPT.from_pretrained(init), get_tokenizer("gpt2")
        if gpt.config.vocab_size < tok.vocab_size:
            raise ValueError(f"{init} has vocab_size {gpt.config.vocab_size}, but GPT-2's tokenizer needs "
                             f"{tok.vocab_size} ids; Hugging Face folders are paired with GPT-2's tokenizer")
        return gpt.to(device or "cpu"), tok
    raise FileNotFoundError(f"nothing to fine-tune at {init!r}: give a gptviz checkpoint folder (the lab's is "
                            "lab/models/shakespeare-char; make it with `gptviz train --config shakespeare-char`) or "
                            "a Hugging Face GPT-2 folder")


def _genres(spec: str) -> tuple[str, ...] | None:
    """"shakespeare:comedies,tragedies" -> ("comedies", "tragedies"); "shakespeare" -> all; a path -> None."""
    s = spec.strip().lower()
    if s == "shakespeare":
        return data.GENRES
    if not s.startswith("shakespeare:"):
        return None
    genres = tuple(g.strip() for g in s.split(":", 1)[1].split(",") if g.strip())
    unknown = [g for g in genres if g not in data.GENRES]
    if unknown or not genres:
        raise ValueError(f"data={spec!r}: unknown genres {unknown}; choose from {', '.join(data.GENRES)}, "
                         "e.g. shakespeare:comedies,histories,tragedies")
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
    return data.Corpus("shakespeare:" + ",".join(genres), "\n".join(p.text for p in train),  # a blank line between
                       "\n".join(p.text for p in val), [p.name for p in train], [p.name for p in val])  # plays


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

    def __init__(self, gpt: GPT, tokenizer, train: list[data.Example], test: list[data.Example],
                 config: FinetuneConfig | None = None, train_config: TrainConfig | None = None,
                 meta: dict | None = None) -> None:
        config = config or FinetuneConfig()
        train_config = train_config or TrainConfig()
        if config.task != "classify":
            raise ValueError(f"ClassifierJob needs task='classify', got {config.task!r}")
        if not train or not test:
            raise ValueError("a classifier needs labelled train and test examples; both sets must be non-empty")
        labels = sorted({e.label for e in train})
        if len(labels) < 2:
            raise ValueError(f"the training examples have only the label(s) {labels}; a classifier needs at least "
                             "two different classes")
        torch.manual_seed(train_config.seed)  # head and adapter initialisation
        prepare_gpt(gpt, config.mode, config.n_layers, config.freeze_embeddings, config.lora_rank,
                    config.lora_alpha, config.lora_mlp)
        self.model = GPTClassifier(gpt, pooling=config.pooling, labels=labels, max_windows=config.max_windows,
                                   dropout=config.head_dropout)
        self.config, self.tokenizer, self.train_examples, self.test_examples = config, tokenizer, train, test
        self.train_set = LabelledDataset(train, tokenizer, labels, self.model.max_tokens, "train")
        self.test_set = LabelledDataset(test, tokenizer, labels, self.model.max_tokens, "test")
        # The Trainer's snapshots and checkpoints assume a language model: off; `save` writes the folder.
        tc = replace(train_config, snapshot_interval=0, out_dir=None, corpus=config.data, tokenizer=tokenizer.kind)
        self.out_dir = train_config.out_dir
        self.trainer = Trainer(self.model, tokenizer, self.train_set, self.test_set, tc,
                               meta={"finetune": config.to_dict(), **(meta or {})})
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
        return {"task": "classify", **ev.to_dict(), **self.baselines(), "n_train": len(self.train_set),
                "n_test": len(self.test_set), "test_groups": sorted({e.group for e in self.test_examples}),
                "mode": self.config.mode, "trainable_params": trainable, "total_params": total,
                "steps": self.trainer.step}


class LMJob(_Job):
    """Next-token training of a GPT on new text, with the model before it kept for `diff`."""

    def __init__(self, gpt: GPT, tokenizer, corpus: data.Corpus, config: FinetuneConfig | None = None,
                 train_config: TrainConfig | None = None, meta: dict | None = None, keep_before: bool = True) -> None:
        config = config or FinetuneConfig(task="lm")
        train_config = train_config or TrainConfig()
        if config.task != "lm":
            raise ValueError(f"LMJob needs task='lm', got {config.task!r}")
        self.config, self.tokenizer, self.corpus = config, tokenizer, corpus
        self.before = copy.deepcopy(gpt).eval() if keep_before else None
        torch.manual_seed(train_config.seed)
        prepare_gpt(gpt, config.mode, config.n_layers, config.freeze_embeddings, config.lora_rank,
                    config.lora_alpha, config.lora_mlp)
        self.model = gpt
        try:
            sets = [data.TokenDataset.from_text(t, tokenizer) for t in (corpus.train_text, corpus.val_text)]
        except ValueError as e:
            raise ValueError(f"the base model's tokenizer cannot encode the new text ({e})") from None
        tc = replace(train_config, out_dir=None, corpus=corpus.name, tokenizer=tokenizer.kind)
        self.out_dir = train_config.out_dir
        self.trainer = Trainer(gpt, tokenizer, sets[0], sets[1], tc,
                               meta={"finetune": config.to_dict(), "corpus": corpus.name,
                                     "held_out": corpus.val_docs, **(meta or {})})
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
        return checkpoint.save(target, gpt, self.tokenizer, self.trainer.training_state(False),
                               include_optimizer=False)

    def summary(self, after: dict | None = None) -> dict:
        after = after or self.evaluate()
        trainable, total = count_parameters(self.model)
        out = {"task": "lm", "val_loss_before": self.loss_before["val"], "val_loss_after": after["val"],
               "train_loss_before": self.loss_before["train"], "train_loss_after": after["train"],
               "n_train_tokens": len(self.trainer.train_data), "n_val_tokens": len(self.trainer.val_data),
               "held_out": self.corpus.val_docs, "mode": self.config.mode, "trainable_params": trainable,
               "total_params": total, "steps": self.trainer.step}
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
    genres = _genres(config.data)
    corpus = genre_corpus(genres, config.val_plays) if genres is not None else data.load_corpus(config.data)
    return LMJob(gpt, tokenizer, corpus, config, train_config, meta)


def load_finetune_preset(name_or_path: str | os.PathLike) -> tuple[FinetuneConfig, TrainConfig]:
    """(FinetuneConfig, TrainConfig) from {"finetune": {...}, "train": {...}} (a name in lab/configs or a path)."""
    from .paths import preset_path

    path = preset_path(str(name_or_path))
    try:
        preset = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    unknown = sorted(set(preset) - {"finetune", "train", "description"})
    if unknown or "finetune" not in preset:
        raise ValueError(f"{path}: a fine-tuning preset has 'finetune' and 'train' (and 'description'); "
                         f"unknown keys {unknown}" + ("" if "finetune" in preset else ", 'finetune' missing"))
    return FinetuneConfig.from_dict(preset["finetune"]), TrainConfig.from_dict(preset.get("train", {}))


# ---- command line --------------------------------------------------------------------------------------------
def _parse_value(tp) -> typing.Callable[[str], object]:
    """train's field parser, plus comma-separated lists ("--test_groups hamlet,macbeth")."""
    if not any(typing.get_origin(a) is list for a in typing.get_args(tp)):
        return _parser_for(tp)

    def parse(text: str) -> list[str] | None:
        return None if text.lower() in ("none", "null") else [t.strip() for t in text.split(",") if t.strip()]

    parse.__name__ = "list"
    return parse


def _build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="gptviz finetune", allow_abbrev=False,
                                description="Fine-tune a checkpoint from a preset (a "
                                "classifier, or more language-model training on new text). Every field can be "
                                "changed with --FIELD (or --finetune.FIELD / --train.FIELD). The last line printed "
                                "is one JSON object with the results.")
    p.add_argument("--config", required=True, help="preset name or path, e.g. lab/configs/finetune-genre.json")
    p.add_argument("--out", metavar="DIR", help="output folder (default: train.out_dir, else runs/<preset>)")
    for section, cls in (("finetune", FinetuneConfig), ("train", TrainConfig)):
        group, hints, helps = p.add_argument_group(f"{section} fields"), typing.get_type_hints(cls), _field_help(cls)
        for f in fields(cls):
            parse = _parse_value(hints[f.name])
            group.add_argument(f"--{section}.{f.name}", f"--{f.name}", dest=f"{section}.{f.name}", type=parse,
                               default=argparse.SUPPRESS, metavar=parse.__name__.upper(), help=helps.get(f.name, ""))
    return p


def cli(argv: list[str]) -> int:
    """`gptviz finetune --config PRESET [--FIELD VALUE ...]`: train, evaluate, save; the last line is JSON."""
    args = vars(_build_parser().parse_args(argv))
    over = {s: {k.split(".", 1)[1]: v for k, v in args.items() if k.startswith(s + ".")} for s in ("finetune", "train")}
    command = "gptviz finetune " + shlex.join(argv)
    try:
        config, train_config = load_finetune_preset(args["config"])
        config = FinetuneConfig.from_dict({**config.to_dict(), **over["finetune"]})
        train_fields = {**train_config.to_dict(), **over["train"]}
        train_fields["out_dir"] = args.get("out") or train_fields["out_dir"] or f"runs/{Path(args['config']).stem}"
        train_config = TrainConfig.from_dict(train_fields)
        if train_config.num_threads:
            torch.set_num_threads(train_config.num_threads)
        job = build_job(config, train_config, meta={"command": command})
    except (ValueError, FileNotFoundError, checkpoint.CheckpointError) as e:
        print(f"gptviz finetune: error: {e}", file=sys.stderr)
        return 2
    trainable, total = count_parameters(job.model)
    if isinstance(job, ClassifierJob):
        print(f"classify {config.data}: {len(job.train_set)} train / {len(job.test_set)} test examples, labels "
              f"{job.labels}, held-out groups: {', '.join(sorted({e.group for e in job.test_examples}))}", flush=True)
        base = job.baselines()
        print(f"baselines on the same split: majority ({base['majority_label']}) {base['majority_baseline']:.3f}, "
              f"bag-of-words {base['bow_baseline']:.3f}", flush=True)
    else:
        print(f"lm {job.corpus.name}: {len(job.trainer.train_data):,} train / {len(job.trainer.val_data):,} val "
              f"tokens (held out: {', '.join(job.corpus.val_docs)}); val loss before {job.loss_before['val']:.4f}",
              flush=True)
    print(f"model {config.init}: mode {config.mode}, {trainable:,} of {total:,} parameters train; "
          f"{train_config.max_steps} steps of {train_config.batch_size}", flush=True)

    def log(trainer, s) -> None:
        every = train_config.log_interval
        if s.val_loss is not None or s.step == 1 or (every and s.step % every == 0):
            val = f" val {s.val_loss:.4f}" if s.val_loss is not None else ""
            print(f"step {s.step:>5}/{train_config.max_steps}: loss {s.loss:.4f}{val} lr {s.lr:.2e} "
                  f"{s.elapsed:.0f} s", flush=True)

    job.trainer.on_step = log
    t0 = time.perf_counter()
    try:
        job.trainer.run()
    except TrainingDiverged as e:
        print(f"gptviz finetune: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    summary = job.summary()
    path = job.save(train_config.out_dir)
    summary.update(checkpoint=str(path), train_seconds=round(seconds, 1), command=command,
                   interrupted=job.trainer.interrupted)
    print(json.dumps(summary))
    return 130 if job.trainer.interrupted else 0
