"""The classifier: a linear head on a GPT trunk, its labelled data, its evaluation, baselines, and its files.

    model = GPTClassifier(gpt, labels=["comedy", "tragedy"], pooling="mean")   # ids (B, T) -> logits (B, K)
    train_set = LabelledDataset(examples, tokenizer, model.labels, model.max_tokens)
    evaluate_classifier(model, test_set).accuracy
    explain(model, tokenizer, "ROMEO: ...")        # probabilities + where the pooled token looked
    save_classifier(model, tokenizer, "runs/genre"); load_classifier("runs/genre")

`GPTClassifier` fits the Trainer unchanged: `LabelledDataset.get_batch` returns x (B, T), right-padded
with -1, and labels y (B,), so the Trainer's `cross_entropy(logits.view(-1, K), y.view(-1))` is the
classification loss and its eval works as is. Causal attention means right padding never changes an earlier
position, so a padded row gives exactly the result of the unpadded text.

Decisions a user may notice:
- Texts longer than the classifier reads (`max_windows` x block_size tokens) keep their FIRST tokens,
  with a warning: the start of a passage holds its speaker's name, and Hugging Face truncates the same side.
  With max_windows > 1 a text is read in consecutive windows of block_size tokens (no attention across
  windows); "mean" pooling averages every real token, "last" takes the last token of the last window.
- A char tokenizer cannot encode characters it never saw: they are dropped, with a warning naming them.
- When the GPT's lower blocks are frozen, their output for each window is computed once and kept
  (`GPTClassifier.frozen`, a `finetune.frozen.FrozenPrefix` of up to `feature_cache_mb`): the same logits,
  less work. `model.frozen.hits` / `.misses` count windows taken from it / computed; `feature_cache_mb=0` is off.
- A saved classifier is one folder: a plain gptviz checkpoint of the GPT (so `gptviz.load` opens it) plus
  classifier.json and classifier.safetensors (the head and any LoRA adapters).

What it leaves to others: what trains and the jobs around a run (`finetune.jobs`), the loop (`train`),
passages and group-aware splits (`data`), checkpoint files (`checkpoint`), adapters (`lora`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .. import checkpoint, data
from ..hooks import capture
from ..lora import adapters_detached, add_lora, lora_layers
from ..model import GPT, evaluating
from .frozen import FrozenPrefix

POOLINGS = ("last", "mean")
CLASSIFIER_JSON, CLASSIFIER_WEIGHTS = "classifier.json", "classifier.safetensors"


# ---- the classifier ------------------------------------------------------------------------------------------
class GPTClassifier(nn.Module):
    """A GPT trunk + a linear head: ids (B, T), right-padded with -1, -> class logits (B, K)."""

    def __init__(
        self,
        gpt: GPT,
        n_classes: int | None = None,
        pooling: str = "last",
        labels: list[str] | None = None,
        max_windows: int = 1,
        dropout: float = 0.0,
        feature_cache_mb: float = 512.0,
    ) -> None:
        super().__init__()
        labels = [str(x) for x in labels] if labels is not None else [str(i) for i in range(n_classes or 0)]
        if len(set(labels)) < 2:
            raise ValueError(
                f"a classifier needs at least two different classes, got labels={labels!r}; "
                "check that the training data has more than one label"
            )
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
        self.frozen = FrozenPrefix(gpt, feature_cache_mb)  # the frozen lower blocks' output, per window

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
            raise ValueError(
                f"{T} tokens is longer than this classifier reads ({self.max_tokens} = max_windows "
                f"{self.max_windows} x block_size {bs}); truncate the ids (LabelledDataset does)"
            )
        nw = -(-T // bs)  # windows per row
        if nw == 1:
            h = self._trunk(idx)  # (B, T, C)
        else:
            win = F.pad(idx, (0, nw * bs - T), value=-1).view(B * nw, bs)  # (B*nw, bs)
            keep = win[:, 0] >= 0  # windows holding real tokens (right padding: they start with one)
            out = self._trunk(win[keep])  # (n_kept, bs, C)
            h = out.new_zeros(B * nw, bs, out.shape[-1])
            h[keep] = out
            h = h.view(B, nw * bs, -1)  # (B, nw*bs, C) windows side by side again
        if self.pooling == "last":
            return h[torch.arange(B, device=h.device), lengths - 1]  # (B, C)
        mask = (torch.arange(h.shape[1], device=h.device)[None] < lengths[:, None]).to(h.dtype)  # (B, T')
        return (h * mask[..., None]).sum(1) / lengths[:, None].to(h.dtype)  # (B, C)

    def _trunk(self, ids: torch.Tensor) -> torch.Tensor:
        """Windows (N, T), right-padded with -1 -> hidden states (N, T, C): the frozen lower blocks from the
        cache when they may be (`FrozenPrefix.depth`), else the whole GPT."""
        k = self.frozen.depth(self.training)
        return self.frozen.trunk(ids, k) if k else self.gpt.trunk(ids.clamp(min=0))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(idx)))  # (B, K)

    @torch.no_grad()
    def predict_proba(self, tokenizer, texts: str | list[str], batch_size: int = 32) -> torch.Tensor:
        """Class probabilities (N, K) of texts, in `self.labels` order (eval mode, CPU result)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = [encode_for(self, tokenizer, t, where=f"text {i}") for i, t in enumerate(texts)]
        with evaluating(self):
            out = [
                F.softmax(self(_pad(ids[i : i + batch_size]).to(self.device)).float(), -1).cpu()
                for i in range(0, len(ids), batch_size)
            ]
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
    with evaluating(model), capture(model.gpt, "blocks.*.attn.hook_pattern", to_cpu=True) as cap:
        logits = model(torch.tensor([ids], device=model.device))  # (1, K)
    # (L, B*nw, nh, bs, bs) -> the last window's (L, nh, T, T)
    att = cap.stack("blocks.*.attn.hook_pattern")[:, -1, :, :T, :T].float()
    rows = att[:, :, T - 1] if model.pooling == "last" else att.mean(2)  # (L, nh, T)
    return {
        "probs": F.softmax(logits[0].float(), -1).cpu(),
        "labels": list(model.labels),
        "tokens": tokenizer.tokens(ids[start:]),
        "attention": rows,
    }


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
        warnings.warn(
            f"{where}: dropped characters the tokenizer does not know: {''.join(sorted(set(dropped)))!r}", stacklevel=3
        )
    if not ids:
        raise ValueError(f"{where} has no tokens to classify (empty, or only unknown characters); type some text")
    if len(ids) > model.max_tokens:
        warnings.warn(
            f"{where} has {len(ids)} tokens; the classifier reads the first {model.max_tokens} "
            f"(max_windows {model.max_windows} x block_size {model.config.block_size})",
            stacklevel=3,
        )
    return ids[: model.max_tokens]


# ---- labelled data ---------------------------------------------------------------------------------------------
class LabelledDataset:
    """Tokenised examples and their label indices; `get_batch` draws random examples as the Trainer asks."""

    def __init__(
        self, examples: list[data.Example], tokenizer, labels: list[str], max_tokens: int, name: str = "train"
    ) -> None:
        if not examples:
            raise ValueError(f"the {name} set is empty; give labelled examples (text, label)")
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted({e.label for e in examples} - set(index))
        if unknown:
            raise ValueError(
                f"{name} labels {unknown} are not among the classifier's labels {labels}; "
                "every label needs training examples (split by group keeps each label on both sides)"
            )
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
            warnings.warn(
                f"{name} set: dropped characters the tokenizer does not know: {''.join(sorted(dropped))!r}",
                stacklevel=2,
            )
        if cut:
            warnings.warn(
                f"{cut} of {len(self.ids)} {name} texts are longer than the classifier reads "
                f"({max_tokens} tokens); kept the first {max_tokens} tokens of each. Use shorter passages "
                "(passage_chars) or more windows (max_windows)",
                stacklevel=2,
            )
        self.y = torch.tensor([index[e.label] for e in self.examples])  # (N,)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> np.ndarray:  # the Trainer's fallback probe text: the first example
        return np.asarray(self.ids[0])

    def collate(self, index: list[int], device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T) right-padded with -1 to the longest of these examples, y (B,)."""
        return _pad([self.ids[i] for i in index]).to(device), self.y[index].to(device)

    def get_batch(
        self, batch_size: int, block_size: int, generator: torch.Generator, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
    loss: float  # mean cross-entropy of the true labels (nats), the loss the Trainer minimises

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "confusion": self.confusion.tolist(),
            "labels": self.labels,
        }


@torch.no_grad()
def evaluate_classifier(
    model: GPTClassifier, dataset: LabelledDataset, batch_size: int = 64, index: list[int] | None = None
) -> ClassifierEval:
    """Accuracy, loss and confusion matrix on every example (or `index`); batches of similar length, eval mode."""
    index = list(range(len(dataset))) if index is None else list(index)
    order = sorted(index, key=lambda i: len(dataset.ids[i]))  # less padding
    logp = torch.zeros(len(dataset), len(model.labels))
    with evaluating(model):
        for s in range(0, len(order), batch_size):
            x, _ = dataset.collate(order[s : s + batch_size], model.device)
            logp[order[s : s + batch_size]] = F.log_softmax(model(x).float(), -1).cpu()
    logp, y, K = logp[index], dataset.y[index], len(model.labels)
    pred = logp.argmax(-1)
    confusion = torch.bincount(y * K + pred, minlength=K * K).view(K, K)  # (K, K) row = true, column = predicted
    loss = float(F.nll_loss(logp, y))  # what cross_entropy on the logits gives
    return ClassifierEval(float((pred == y).double().mean()), confusion, list(model.labels), pred, logp.exp(), loss)


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


# ---- saving and loading a classifier -------------------------------------------------------------------------
def save_classifier(
    model: GPTClassifier, tokenizer, path: str | os.PathLike, training: checkpoint.TrainingState | None = None
) -> Path:
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
    info = {
        "format": "gptviz-classifier",
        "version": 1,
        "labels": model.labels,
        "pooling": model.pooling,
        "max_windows": model.max_windows,
        "head_dropout": model.dropout.p,
        "lora": None
        if first is None
        else {"rank": first.rank, "alpha": first.alpha, "merged": first.merged, "layers": sorted(layers)},
    }
    tensors = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if k.startswith("head.") or ".lora_" in k
    }

    def write_head(folder: Path) -> None:
        save_file(tensors, str(folder / CLASSIFIER_WEIGHTS))
        (folder / CLASSIFIER_JSON).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")

    with adapters_detached(model.gpt):  # one atomic write: the base checkpoint and the head together
        checkpoint.save(path, model.gpt, tokenizer, training, include_optimizer=False, extra_files=write_head)
    return path


def load_classifier(path: str | os.PathLike, device: str | torch.device | None = None):
    """(GPTClassifier in eval mode, tokenizer) from a folder written by `save_classifier`."""
    path = Path(path)
    if not (path / CLASSIFIER_JSON).is_file():
        checkpoint.read_config(path)  # says what is wrong when it is not a checkpoint at all
        raise checkpoint.CheckpointError(
            f"{path} is a language-model checkpoint without a classifier head "
            f"({CLASSIFIER_JSON} is missing); fine-tune one first: "
            "gptviz finetune --config finetune-genre"
        )
    try:
        info = json.loads((path / CLASSIFIER_JSON).read_text(encoding="utf-8"))
        labels, lora = info["labels"], info["lora"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise checkpoint.CheckpointError(
            f"{path / CLASSIFIER_JSON} is damaged ({e}); save the classifier again"
        ) from None
    gpt, tokenizer = checkpoint.load(path)
    if lora:
        targets = tuple(sorted({name.split(".", 2)[2] for name in lora["layers"]}))
        add_lora(gpt, lora["rank"], lora["alpha"], targets)
        for layer in lora_layers(gpt).values():
            layer.merged = lora["merged"]
    model = GPTClassifier(
        gpt,
        pooling=info["pooling"],
        labels=labels,
        max_windows=info.get("max_windows", 1),
        dropout=info.get("head_dropout", 0.0),
    )
    tensors = load_file(str(path / CLASSIFIER_WEIGHTS))
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("head.") or ".lora_" in k}
    wrong = sorted(set(expected) ^ set(tensors)) + [
        k for k in expected if k in tensors and tensors[k].shape != expected[k].shape
    ]
    if wrong:
        raise checkpoint.CheckpointError(
            f"{path / CLASSIFIER_WEIGHTS} does not match {CLASSIFIER_JSON} "
            f"(keys or shapes: {wrong[:4]}); the files come from different saves"
        )
    model.load_state_dict(tensors, strict=False)
    return model.to(device or "cpu").eval(), tokenizer
