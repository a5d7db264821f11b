"""Corpora: a text source -> ``Corpus``, a train and a validation text that never overlap.

- ``load_corpus(...)``: "shakespeare", a text file or a folder of .txt/.md files -> ``Corpus``.
  Shakespeare is split by play (``SHAKESPEARE_VAL_PLAYS``), a folder by file, a single file at its end:
  validation text is never sampled from inside the training text.
- ``_read_text_file``: UTF-8 (BOM and CRLF tolerated) with a plain error for other encodings; the labelled
  CSV reader in ``labelled.py`` uses it too.

The plays themselves come from ``shakespeare.py``; turning text into token ids and batches is
``batches.py``'s job (with a ``gptviz.tokenizers`` tokenizer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, MissingFileError
from .shakespeare import shakespeare_plays

# Held out from training by default: one play from each of four genres, about 10% of the cleaned text
# (a test checks the share). Chosen to be complete, typical plays that are not the lab's prompt favourites.
SHAKESPEARE_VAL_PLAYS = ("much-ado-about-nothing", "richard-ii", "julius-caesar", "a-winter-s-tale")
_DEFAULT_VAL_FRACTION = 0.1


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
        raise InputError(f"val_fraction={val_fraction!r} must be between 0 and 1 (e.g. 0.1 keeps 10% for validation).")


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
        raise InputError(f"val_docs must be a list of {what} names, e.g. [{val_docs!r}], not a single string.")
    unknown = [d for d in val_docs if d not in known]
    if unknown or not val_docs or len(set(val_docs)) >= len(known):
        raise InputError(
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
        raise InputError(
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
        raise InputError(
            f"{where} is too short to split into train and validation text ({len(text)} characters, "
            f"val_fraction={val_fraction}). Use a longer text."
        )
    return train, val


def load_corpus(
    name_or_path: str | os.PathLike, val_fraction: float = _DEFAULT_VAL_FRACTION, val_docs: list[str] | None = None
) -> Corpus:
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
        return Corpus(
            "shakespeare",
            _join([p.text for p in train]),
            _join([p.text for p in val]),
            [p.name for p in train],
            [p.name for p in val],
        )

    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise MissingFileError(
            f'No corpus at {str(path)!r}. load_corpus accepts "shakespeare" (built in), a UTF-8 text file, '
            "or a folder of .txt/.md files. Check the path (relative paths start from the notebook's folder: "
            f"{Path.cwd()})."
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
        texts = {p.relative_to(path).as_posix(): _read_text_file(p) for p in files}
        texts = {k: v for k, v in texts.items() if v.strip()}  # empty files add nothing
        if not texts:
            raise InputError(f"The folder {path} has no non-empty .txt or .md files; add some text files to it.")
        names = list(texts)
        if len(names) == 1:
            if val_docs is not None:
                raise InputError(f"{path} holds one text file only; val_docs needs at least two. Omit val_docs.")
            train_text, val_text = _split_text_at_end(texts[names[0]], val_fraction, str(path / names[0]))
            return Corpus(path.name, train_text, val_text, names, names)
        if val_docs is None:
            val_docs = _pick_val_docs(names, [len(t) for t in texts.values()], val_fraction)
        _check_val_docs(val_docs, names, "file")
        train = [n for n in names if n not in set(val_docs)]
        val = [n for n in names if n in set(val_docs)]
        return Corpus(path.name, _join([texts[n] for n in train]), _join([texts[n] for n in val]), train, val)

    if val_docs is not None:
        raise InputError(
            f'val_docs applies to "shakespeare" and to folders; {path} is a single file, split at its end '
            "by val_fraction. Omit val_docs."
        )
    text = _read_text_file(path)
    if not text.strip():
        raise InputError(f"{path} is empty; put the training text in it (UTF-8).")
    train_text, val_text = _split_text_at_end(text, val_fraction, str(path))
    return Corpus(path.name, train_text, val_text, [path.name], [path.name])
