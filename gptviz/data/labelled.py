"""Labelled sets for classification fine-tuning: lists of ``Example(text, label, group)``.

- ``shakespeare_genre_passages(...)``: passages of consecutive speeches labelled by their play's genre.
- ``load_labelled_csv(path)``: your own UTF-8 CSV with columns ``text,label`` (optional ``group``).
- ``split_by_group(...)``: (train, test) so that no group (e.g. a play) is on both sides.

The plays come from ``shakespeare.py``; tokenizing, batching and the classifier are ``gptviz.finetune``'s job.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingFileError
from .corpus import _read_text_file
from .shakespeare import GENRES, shakespeare_plays


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


def shakespeare_genre_passages(
    genres: tuple[str, ...] | list[str] = ("comedies", "histories", "tragedies"),
    passage_chars: int = 400,
    max_per_play: int | None = None,
) -> list[Example]:
    """Passages of consecutive speeches (up to ~``passage_chars`` each) labelled by the play's genre.

    Passages shorter than a quarter of ``passage_chars`` are dropped (too little to classify). With
    ``max_per_play`` the passages are taken evenly spaced through each play, not just from Act I.
    """
    if isinstance(genres, str):
        genres = (genres,)
    unknown = [g for g in genres if g not in GENRES]
    if unknown or len(set(genres)) < 2:
        raise InputError(
            f"genres={tuple(genres)!r}: need at least two distinct genres from {', '.join(GENRES)}"
            f"{f'; unknown: {unknown}' if unknown else ''}."
        )
    if int(passage_chars) < 50:
        raise InputError(f"passage_chars={passage_chars} is too small to hold a speech; use 200..1000.")
    if max_per_play is not None and int(max_per_play) < 1:
        raise InputError(f"max_per_play={max_per_play} must be >= 1, or None for all passages.")
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


def split_by_group(
    examples: list[Example], test_groups: list[str] | None = None, test_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, test) with no group on both sides.

    Without ``test_groups``, groups are held out per label (a group's label is its most common one): about
    ``test_fraction`` of each label's groups, at least one, chosen with ``random.Random(seed)``.
    """
    if not examples:
        raise InputError(
            "split_by_group got no examples; build them with shakespeare_genre_passages or load_labelled_csv."
        )
    groups = sorted({e.group for e in examples})
    if test_groups is not None:
        if isinstance(test_groups, str):
            test_groups = [test_groups]
        unknown = sorted(set(test_groups) - set(groups))
        if unknown:
            raise InputError(
                f"test_groups {unknown!r} do not occur in the examples. Known groups: "
                f"{', '.join(groups[:12])}{' ...' if len(groups) > 12 else ''}."
            )
        held = set(test_groups)
    else:
        if not 0.0 < float(test_fraction) < 1.0:
            raise InputError(f"test_fraction={test_fraction!r} must be between 0 and 1 (e.g. 0.25).")
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
            raise InputError(
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
        raise InputError(f"The split left {'train' if not train else 'test'} empty; choose fewer test_groups.")
    return train, test


def load_labelled_csv(path: str | os.PathLike) -> list[Example]:
    """Read a UTF-8 CSV with columns ``text,label`` and optionally ``group`` (otherwise each row is its own group)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"No CSV file at {path}. Expected a UTF-8 .csv with a header row and columns text,label (optional group)."
        )
    raw = _read_text_file(path)
    reader = csv.DictReader(raw.splitlines())
    found = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = found
    missing = [c for c in ("text", "label") if c not in found]
    if missing:
        raise InputError(
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
        raise InputError(
            f"{path}: {len(blank_rows)} row(s) have an empty text or label: rows {shown} (the header is row 1). "
            "Fill them in or delete those rows."
        )
    labels = sorted({e.label for e in examples})
    if len(labels) < 2:
        found_labels = f"only the label {labels[0]!r}" if labels else "no labels"
        raise InputError(
            f"{path}: found {len(examples)} row(s) but {found_labels}; "
            "classification needs at least two different labels."
        )
    return examples
