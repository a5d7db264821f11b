"""Plain records of what a model did: one forward pass (`ForwardRecord`), kept as CPU tensors.

A record is what plots, widgets and the bertviz export read; none of them runs the model again. Records
save to a folder (safetensors + JSON, nothing pickled) so a view can be rebuilt later or on another machine.
Generation step records live in `gptviz.sampling`, beside the generator that yields them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .heads import head_metrics
from .hooks import capture
from .model import evaluating


@dataclass
class ForwardRecord:
    """One forward pass over T tokens of a model with L layers and nh heads."""

    ids: torch.Tensor  # (T,) int64
    tokens: list[str]  # T display strings
    attention: torch.Tensor  # (L, nh, T, T) float32, post-softmax
    top_ids: torch.Tensor  # (T, k) most likely next tokens after each position
    top_probs: torch.Tensor  # (T, k)
    top_tokens: list[list[str]]  # (T, k) display strings of top_ids
    text: str | None = None
    meta: dict = field(default_factory=dict)  # model config, cropping, anything a view should say

    @property
    def n_layer(self) -> int:
        return self.attention.shape[0]

    @property
    def n_head(self) -> int:
        return self.attention.shape[1]

    @property
    def T(self) -> int:
        return self.attention.shape[-1]

    def head_metrics(self) -> dict[str, torch.Tensor]:
        """previous_token / first_token / entropy / induction per head, each (L, nh)."""
        return head_metrics(self.attention, self.ids)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "ids": self.ids.contiguous(),
                "attention": self.attention.contiguous(),
                "top_ids": self.top_ids.contiguous(),
                "top_probs": self.top_probs.contiguous(),
            },
            str(directory / "record.safetensors"),
        )
        (directory / "record.json").write_text(
            json.dumps(
                {
                    "kind": "forward",
                    "version": 1,
                    "tokens": self.tokens,
                    "top_tokens": self.top_tokens,
                    "text": self.text,
                    "meta": self.meta,
                },
                ensure_ascii=False,
                indent=1,
            ),
            encoding="utf-8",
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ForwardRecord:
        directory = Path(directory)
        try:
            info = json.loads((directory / "record.json").read_text(encoding="utf-8"))
            tensors = load_file(str(directory / "record.safetensors"))
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{directory} is not a saved ForwardRecord (needs record.json and "
                "record.safetensors, as written by ForwardRecord.save)"
            ) from e
        if info.get("kind") != "forward" or info.get("version") != 1:
            raise ValueError(
                f"{directory}/record.json is not a version-1 forward record: "
                f"kind={info.get('kind')!r}, version={info.get('version')!r}"
            )
        return cls(
            ids=tensors["ids"],
            tokens=info["tokens"],
            attention=tensors["attention"],
            top_ids=tensors["top_ids"],
            top_probs=tensors["top_probs"],
            top_tokens=info["top_tokens"],
            text=info["text"],
            meta=info["meta"],
        )


def record_forward(
    model, tokenizer, text_or_ids: str | list[int] | torch.Tensor, k: int = 10, max_tokens: int | None = None
) -> ForwardRecord:
    """Run the model once on a text (or ids) and record every attention pattern and the top-k next tokens.

    Inputs longer than the model's block size (or `max_tokens`) keep their last tokens, with a warning
    that says how many were cut.
    """
    if isinstance(text_or_ids, str):
        if not text_or_ids:
            raise ValueError("the text is empty; type at least one character")
        text, ids = text_or_ids, list(tokenizer.encode(text_or_ids))
    else:
        text, ids = None, torch.as_tensor(text_or_ids).flatten().tolist()
    if not ids:
        raise ValueError("no tokens to run; give a non-empty text or id list")
    limit = min(model.config.block_size, max_tokens or model.config.block_size)
    meta: dict = {"config": model.config.to_dict(), "cropped": 0}
    if len(ids) > limit:
        meta["cropped"] = len(ids) - limit
        warnings.warn(
            f"input has {len(ids)} tokens; kept the last {limit} (the model's context is "
            f"{model.config.block_size}), {len(ids) - limit} left out",
            stacklevel=2,
        )
        ids = ids[-limit:]
    idx = torch.tensor([ids], dtype=torch.long, device=model.device)
    with evaluating(model), torch.no_grad(), capture(model, "blocks.*.attn.hook_pattern", to_cpu=True) as cap:
        logits = model(idx)  # (1, T, V)
    attention = cap.stack("blocks.*.attn.hook_pattern")[:, 0]  # (L, nh, T, T)
    probs = torch.softmax(logits[0].float(), dim=-1).cpu()  # (T, V)
    top_probs, top_ids = probs.topk(min(k, probs.shape[-1]), dim=-1)  # (T, k)
    return ForwardRecord(
        ids=torch.tensor(ids),
        tokens=tokenizer.tokens(ids),
        attention=attention.float(),
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=[tokenizer.tokens(row) for row in top_ids.tolist()],
        text=text,
        meta=meta,
    )


def head_change(before: ForwardRecord, after: ForwardRecord) -> torch.Tensor:
    """(L, nh) mean |attention after - before| over the causal (query, key) pairs of two records of one input.

    The number a checkpoint diff ranks heads by (float32, CPU); later keys, which a query never sees, are left out.
    """
    if before.ids.tolist() != after.ids.tolist():
        raise ValueError(
            "a checkpoint diff needs both records made from the same token ids; record the same "
            "prompt with the same tokenizer before and after"
        )
    if before.attention.shape != after.attention.shape:
        raise ValueError(
            f"attention shapes differ: {tuple(before.attention.shape)} vs "
            f"{tuple(after.attention.shape)} (different L or nh?)"
        )
    T = before.attention.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
    d = (after.attention - before.attention).abs().float().cpu()  # (L, nh, T, T)
    return (d * causal).sum((-1, -2)) / causal.sum()
