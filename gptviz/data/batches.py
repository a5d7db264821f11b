"""Token batches: datasets with ``get_batch(batch_size, block_size, generator, device) -> (x, y)``.

- ``TokenDataset``: a 1-D array of token ids (numpy, memory-mapped for big corpora; ``save``/``load`` as a
  .bin + .json pair) whose ``get_batch`` draws random windows with the caller's ``torch.Generator``, so
  training is reproducible and resumable.
- ``RepeatedSequences``: endless rows of a random sequence repeated (the induction-head lesson), same
  ``get_batch`` interface.

This module does not tokenize by itself (``TokenDataset.from_text`` calls a ``gptviz.tokenizers``
tokenizer), knows nothing about models, and does not loop over batches: ``train.py`` drives training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, MissingFileError


class TokenDataset:
    """Token ids as one 1-D numpy array (uint16 when the vocabulary fits, else uint32)."""

    def __init__(self, tokens: Any, vocab_size: int | None = None):
        arr = tokens if isinstance(tokens, np.memmap) else np.asarray(tokens)  # keep a memmap on disk
        if arr.ndim != 1:
            raise InputError(f"TokenDataset expects a 1-D sequence of token ids, got shape {arr.shape}.")
        if (
            not np.issubdtype(arr.dtype, np.unsignedinteger)
            and arr.size
            and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0)
        ):
            raise InputError("TokenDataset expects non-negative integer token ids (from tokenizer.encode).")
        if vocab_size is None:
            vocab_size = int(arr.max()) + 1 if arr.size else 0
        dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
        if arr.dtype != dtype and not isinstance(arr, np.memmap):
            arr = arr.astype(dtype)
        self.tokens = arr
        self.vocab_size = int(vocab_size)

    @classmethod
    def from_text(cls, text: str, tokenizer: Any) -> TokenDataset:
        return cls(np.asarray(tokenizer.encode(text), dtype=np.int64), vocab_size=tokenizer.vocab_size)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return f"TokenDataset({len(self):,} tokens, dtype={self.tokens.dtype}, vocab_size={self.vocab_size})"

    @staticmethod
    def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
        path = Path(path)
        bin_path = path if path.suffix == ".bin" else path.with_suffix(".bin")
        return bin_path, bin_path.with_suffix(".json")

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.bin`` (raw ids) and ``<path>.json`` (dtype, length, vocab_size); returns the .bin."""
        bin_path, meta_path = self._paths(path)
        bin_path.parent.mkdir(parents=True, exist_ok=True)
        np.ascontiguousarray(self.tokens).tofile(bin_path)
        meta = {"format": 1, "dtype": self.tokens.dtype.name, "length": len(self), "vocab_size": self.vocab_size}
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
        return bin_path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> TokenDataset:
        """Read what ``save`` wrote; with ``mmap`` the ids stay on disk and are paged in as batches need them."""
        bin_path, meta_path = cls._paths(path)
        for p in (bin_path, meta_path):
            if not p.is_file():
                raise MissingFileError(
                    f"No {p.suffix} file at {p}. TokenDataset.load expects the .bin + .json pair written by "
                    "TokenDataset.save(path); build it with TokenDataset.from_text(text, tokenizer).save(path)."
                )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            dtype, length = np.dtype(meta["dtype"]), int(meta["length"])
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{meta_path} is not a TokenDataset metadata file ({e}); re-save the dataset.") from None
        if bin_path.stat().st_size != length * dtype.itemsize:
            raise InputError(
                f"{bin_path} holds {bin_path.stat().st_size} bytes but {meta_path.name} says {length} tokens of "
                f"{dtype.name}; the files do not belong together or a save was interrupted. Re-save the dataset."
            )
        if mmap and length:
            arr = np.memmap(bin_path, dtype=dtype, mode="r", shape=(length,))
        else:
            arr = np.fromfile(bin_path, dtype=dtype, count=length)
        return cls(arr, vocab_size=int(meta["vocab_size"]))

    def get_batch(
        self, batch_size: int, block_size: int, generator: torch.Generator, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: ``x`` (B, T) int64 and ``y`` (B, T) = ``x`` shifted left by one token.

        Start positions come from ``generator`` only, so the same seed (or a restored ``generator.get_state()``)
        gives the same batches.
        """
        if int(batch_size) < 1 or int(block_size) < 1:
            raise InputError(f"batch_size and block_size must be >= 1 (got {batch_size}, {block_size}).")
        n = len(self)
        if n < block_size + 1:
            raise InputError(
                f"This dataset has {n} tokens, but one training window needs block_size + 1 = {block_size + 1} "
                f"(block_size={block_size}). Use a smaller block_size (at most {max(n - 1, 0)}) or more text."
            )
        starts = torch.randint(0, n - block_size, (batch_size,), generator=generator, device=generator.device)
        windows = np.stack([self.tokens[s : s + block_size + 1] for s in starts.tolist()]).astype(np.int64)
        batch = torch.from_numpy(windows)  # (B, T+1)
        x, y = batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)
        device = torch.device(device)
        if device.type == "cuda":
            # Page-locked memory lets the copy overlap with the GPU's work on the previous batch.
            return (
                x.contiguous().pin_memory().to(device, non_blocking=True),
                y.contiguous().pin_memory().to(device, non_blocking=True),
            )
        return x.contiguous().to(device), y.contiguous().to(device)


class RepeatedSequences:
    """Endless synthetic data for the induction-head lesson: each row is a random sequence repeated.

    A row of ``get_batch`` is ``min_len``..``max_len`` random ids (its own length) repeated until the window
    is full, e.g. ``7 3 9 7 3 9 7 3 ...``. After the first copy every token can be predicted, but only by
    finding where the current token appeared before: the length varies, so no fixed offset works. Rows are
    drawn fresh from the Trainer's generator each batch, so the same seed gives the same batches.
    """

    def __init__(self, vocab_size: int, min_len: int = 3, max_len: int = 12):
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise InputError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        if not (isinstance(min_len, int) and isinstance(max_len, int) and 1 <= min_len <= max_len):
            raise InputError(f"need 1 <= min_len <= max_len, got min_len={min_len!r}, max_len={max_len!r}")
        self.vocab_size, self.min_len, self.max_len = vocab_size, min_len, max_len

    def __repr__(self) -> str:
        return f"RepeatedSequences(vocab_size={self.vocab_size}, lengths {self.min_len}..{self.max_len})"

    def rows(self, batch_size: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch_size, length) int64 ids, each row one random sequence repeated."""
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        period = torch.randint(self.min_len, self.max_len + 1, (batch_size, 1), generator=g, device=g.device)
        seqs = torch.randint(0, self.vocab_size, (batch_size, self.max_len), generator=g, device=g.device)
        return seqs.gather(1, torch.arange(length, device=g.device) % period)

    @property
    def tokens(self) -> np.ndarray:
        """A fixed sample row of 64 ids (what a dashboard shows as "the data")."""
        return self.rows(1, 64)[0].numpy()

    def get_batch(
        self, batch_size: int, block_size: int, generator: torch.Generator, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `TokenDataset.get_batch`: ``x`` (B, T) and ``y`` (B, T) = ``x`` shifted left by one."""
        if int(batch_size) < 1 or int(block_size) < 1:
            raise InputError(f"batch_size and block_size must be >= 1 (got {batch_size}, {block_size}).")
        batch = self.rows(batch_size, block_size + 1, generator)
        return batch[:, :-1].contiguous().to(device), batch[:, 1:].contiguous().to(device)
