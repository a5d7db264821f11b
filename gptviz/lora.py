"""LoRA, low-rank adapters for fine-tuning: W x + (alpha / r) B A x with W frozen, in one class.

    names = add_lora(gpt, rank=8, alpha=16)   # freezes the GPT, wraps each block's attn.c_attn
    ...train...                               # only lora_A / lora_B (and what you unfreeze) train
    merge_lora(gpt); remove_lora(gpt)         # fold the adapters into W, plain nn.Linear layers again

Written here (~50 lines) rather than taken from `peft`: peft is not installed, gptviz's layer names are fixed,
and students can read the whole idea in `LoRALinear`. Adapters merge into W exactly (what the unmerged
layer computes) and are saved beside the base weights by `gptviz.finetune`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .model import GPT


class LoRALinear(nn.Linear):
    """y = W x + b + (alpha / r) B A x, with W, b frozen (the pre-trained layer's own tensors) and A, B trained.

    B starts at zero, so a fresh adapter changes nothing. `merge()` adds (alpha / r) B A into W (then the
    forward skips the adapter); `unmerge()` takes it out again. State-dict keys stay `weight`, `bias`, plus
    `lora_A` (r, in) and `lora_B` (out, r).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias  # (out, in), (out,): shared, not copied
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha, self.scale, self.merged = rank, alpha, alpha / rank, False
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if not self.merged:
            y = y + (x @ self.lora_A.t()) @ self.lora_B.t() * self.scale  # (..., r) -> (..., out)
        return y

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += self.delta().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta().to(self.weight.dtype)
            self.merged = False

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear holding W (merged or not, as it is now) and b."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight, plain.bias = self.weight, self.bias
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}"


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def add_lora(gpt: GPT, rank: int = 8, alpha: float = 16.0, targets: tuple[str, ...] = ("attn.c_attn",)) -> list[str]:
    """Freeze the whole GPT and wrap each block's `targets` in a LoRALinear; returns the wrapped names."""
    if lora_layers(gpt):
        raise ValueError("this model already has LoRA adapters; merge and remove them first (remove_lora)")
    if not isinstance(rank, int) or rank < 1 or alpha <= 0:
        raise ValueError(f"LoRA needs an integer rank >= 1 and alpha > 0, got rank={rank!r}, alpha={alpha!r}")
    gpt.requires_grad_(False)
    names = []
    for i, block in enumerate(gpt.blocks):
        for target in targets:
            try:
                base = block.get_submodule(target)
            except AttributeError:
                raise ValueError(
                    f"block {i} has no {target} (an attention-only model has no MLP); use lora_mlp=False"
                ) from None
            _set_module(block, target, LoRALinear(base, rank, alpha))
            names.append(f"blocks.{i}.{target}")
    return names


def merge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


def remove_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Put plain nn.Linear layers back (merged first unless merge=False, which drops the adapters)."""
    for name, layer in lora_layers(model).items():
        (layer.merge if merge else layer.unmerge)()
        _set_module(model, name, layer.to_linear())
    return model


@contextmanager
def adapters_detached(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model holds plain nn.Linear layers (W as it is now, merged or not) in place of its
    LoRALinear layers; afterwards the adapters are back, untouched.

        with adapters_detached(gpt):      # e.g. save a checkpoint any GPT loader reads, adapters kept aside
            checkpoint.save(path, gpt, tokenizer)

    The plain layers share W and b with the adapters' layers (nothing is copied), so this is cheap.
    """
    layers = lora_layers(model)
    for name, layer in layers.items():
        _set_module(model, name, layer.to_linear())
    try:
        yield model
    finally:
        for name, layer in layers.items():
            _set_module(model, name, layer)
