"""The frozen lower blocks of a classifier's GPT, run once per text window and remembered.

When fine-tuning trains only the top n blocks (mode "last_n") or only the head, the embeddings and the blocks
below those compute the same hidden states for a window of text every time it is read. `FrozenPrefix` keeps
them: the residual stream entering the first block that trains, keyed by the window's token ids. A window read
again (the test set at every evaluation, a training passage drawn twice) then runs only the blocks that train.
The numbers are the ones the whole model computes, up to float rounding of a different batch make-up (a test
checks it); only the work is saved.

It stands aside, and the whole GPT runs as usual, when:
- a hook listens anywhere in the GPT (capture and `explain` must see every layer run);
- dropout is on in training mode (the lower blocks are then random), or the embeddings train;
- no lower block is frozen (modes "full" and "lora"), or `max_mb` is 0.
It forgets what it holds when a frozen weight changes (a parameter replaced, moved to another device, or edited
in place: torch's version counter sees `copy_`, `load_state_dict`, a LoRA merge), or when the depth that is
frozen changes. Windows are stored under their precision (autocast on or off), so mixed-precision training and
float32 evaluation never share an entry. Once `max_mb` is full it stops storing, and later windows are computed
each time as they would be without it.

What it leaves to others: windows and pooling (`finetune.classifier`), what trains (`finetune.jobs`), the model
itself (`model`): the embeddings and RoPE tables are `GPT.embed_input` / `GPT.rope_tables`, what `GPT.trunk`
feeds its blocks; `test_frozen_prefix_matches_the_whole_model` holds the two paths together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import GPT


class FrozenPrefix:
    """Hidden states after the frozen lower blocks of `gpt`, per window of token ids, up to `max_mb` megabytes."""

    def __init__(self, gpt: GPT, max_mb: float = 512.0) -> None:
        if not max_mb >= 0:  # also refuses NaN
            raise ValueError(f"max_mb must be >= 0 (0 turns the cache off), got {max_mb!r}")
        self.gpt, self.max_mb = gpt, float(max_mb)
        self._store: dict[tuple, torch.Tensor] = {}  # (precision, window ids as bytes) -> (n, C)
        self._stamp: tuple | None = None  # what the stored states were computed with
        self.nbytes = 0
        self.hits = self.misses = 0  # windows found / computed since the last clear

    # ---- when it may be used ------------------------------------------------------------------------------
    def depth(self, training: bool) -> int:
        """How many lower blocks can be taken from the cache now (0: run the whole model)."""
        gpt = self.gpt
        if self.max_mb == 0 or any(point.fns for point in gpt.hook_dict.values()):
            return 0
        if training and gpt.config.dropout:
            return 0
        if any(p.requires_grad for p in self._embedding_params()):
            return 0
        k = 0
        for block in gpt.blocks:
            if any(p.requires_grad for p in block.parameters()):
                break
            k += 1
        return k

    def _embedding_params(self) -> list[nn.Parameter]:
        return list(self.gpt.wte.parameters()) + (list(self.gpt.wpe.parameters()) if hasattr(self.gpt, "wpe") else [])

    def _current_stamp(self, k: int) -> tuple:
        """The identity, storage and in-place version of every tensor the first k blocks read."""
        gpt = self.gpt
        tensors = self._embedding_params() + [p for block in gpt.blocks[:k] for p in block.parameters()]
        tensors += [getattr(gpt, name) for name in ("pe", "rope_cos", "rope_sin") if hasattr(gpt, name)]
        # `_version` is autograd's in-place counter: the one public-enough sign that a tensor was edited in place
        return (k, tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors))

    def clear(self) -> None:
        self._store.clear()
        self.nbytes = self.hits = self.misses = 0

    def __getstate__(self) -> dict:
        # a deep copy or a pickle starts empty: a copied GPT's tensors are new, so the states would be dropped at
        # its first forward anyway, after having doubled the memory (hundreds of MB for lesson 05)
        return {**self.__dict__, "_store": {}, "_stamp": None, "nbytes": 0, "hits": 0, "misses": 0}

    # ---- the split forward --------------------------------------------------------------------------------
    def trunk(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        """Ids (N, T), right-padded with -1, -> hidden states (N, T, C) after ln_f, like `gpt.trunk(ids.clamp(min=0))`
        at every real position (padded positions hold other values; causal attention never lets them reach a
        real one). The first k blocks come from the cache; k >= 1 and k <= depth(...)."""
        N, T = ids.shape
        stamp = self._current_stamp(k)
        if stamp != self._stamp:
            self.clear()
            self._stamp = stamp
        precision = (torch.is_autocast_enabled(ids.device.type), torch.get_autocast_dtype(ids.device.type))
        host = ids.cpu()
        lengths = (host >= 0).sum(1).tolist()
        keys = [(precision, host[i, :n].numpy().tobytes()) for i, n in enumerate(lengths)]
        rows: list = [self._store.get(key) for key in keys]  # (n, C) each, or None: not stored
        missing = [i for i, row in enumerate(rows) if row is None]
        self.hits += N - len(missing)
        self.misses += len(missing)
        for width, group in _by_width(missing, lengths, T).items():
            with torch.no_grad():  # frozen: nothing below block k needs a gradient
                fresh = self._lower(ids[group, :width].clamp(min=0), k)  # (M, width, C)
            for j, i in enumerate(group):
                rows[i] = row = fresh[j, : lengths[i]]
                size = row.nelement() * row.element_size()
                if self.nbytes + size <= self.max_mb * 2**20:
                    self._store[keys[i]] = row.clone()  # a copy: a view would keep the whole batch alive
                    self.nbytes += size
        out, order = [], []
        for group in _by_width(range(N), lengths, T).values():
            x = nn.utils.rnn.pad_sequence([rows[i] for i in group], batch_first=True)  # (n, w, C), w: its longest
            out.append(F.pad(self._upper(x, k), (0, 0, 0, T - x.shape[1])))  # (n, T, C)
            order += group
        return torch.cat(out)[torch.argsort(torch.tensor(order, device=ids.device))]  # (N, T, C), as in `ids`

    def _lower(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        """Ids (M, T) >= 0 -> the residual stream entering block k (M, T, C)."""
        x, rope = self.gpt.embed_input(ids)  # (M, T, C), what GPT.trunk feeds block 0
        for block in self.gpt.blocks[:k]:
            x = block(x, None, rope, None)
        return x

    def _upper(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The residual stream entering block k (N, T, C) -> hidden states after ln_f (N, T, C)."""
        gpt = self.gpt
        # GPT.trunk's tables for positions 0.., in the embeddings' dtype (as autocast leaves it)
        rope = gpt.rope_tables(x.shape[1])
        for block in gpt.blocks[k:]:
            x = block(x, None, rope, None)
        return gpt.ln_f(x)


def _by_width(index, lengths: list[int], T: int) -> dict[int, list[int]]:
    """Windows grouped by length, each group to run at the width of a quarter of T that holds it: a window of
    20 real tokens is not computed at the full T (128 for the lab's model). Padding never reaches a real
    position (causal attention), so only the work changes."""
    step = -(-T // 4)
    groups: dict[int, list[int]] = {}
    for i in index:
        groups.setdefault(min(T, -(-lengths[i] // step) * step), []).append(i)
    return groups
