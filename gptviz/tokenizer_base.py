"""The interface every gptviz tokenizer shares, how tokens are shown, and the simplest tokenizer: one id per
character (``CharTokenizer``, the classic first lesson).

``Tokenizer`` says what a tokenizer implements (text -> ids -> text, ``tokens(ids)`` for plots, ``to_dict``);
transformers' calling conventions come from ``gptviz.tokenizer_calls``. ``visible`` / ``display_bytes`` make
whitespace and partial UTF-8 readable (the rules are in ``gptviz.tokenizers``' docstring). The tokenizers built on
the Hugging Face ``tokenizers`` library (GPT-2, trained BPE, pretrained models) are ``gptviz.tokenizer_bpe``'s;
choosing, rebuilding and loading one is ``gptviz.tokenizers``'. Users import all of it from ``gptviz.tokenizers``.
"""

from __future__ import annotations

import codecs
import json
import os
import unicodedata
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import write_atomic
from .tokenizer_args import as_id_list as _as_id_list
from .tokenizer_args import check_unicode
from .tokenizer_calls import TransformersCalls

# Display symbols for whitespace in tokens(); chosen to be single, visible, common in fonts.
WHITESPACE_SYMBOLS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}

# ----------------------------------------------------------------------------------------------------------
# Display helpers shared by all tokenizers


def _hex_bytes(raw: bytes) -> str:
    return "".join(f"<0x{b:02X}>" for b in raw)


def _hex_error_handler(err: UnicodeDecodeError) -> tuple[str, int]:
    # Bytes that do not form a whole UTF-8 character are shown as <0xNN> instead of "�".
    return _hex_bytes(err.object[err.start : err.end]), err.end


codecs.register_error("gptviz-hex", _hex_error_handler)


def visible(text: str) -> str:
    """Make whitespace and control characters of ``text`` visible (see the module docstring)."""
    out = []
    for ch in text:
        if ch in WHITESPACE_SYMBOLS:
            out.append(WHITESPACE_SYMBOLS[ch])
        elif unicodedata.category(ch) == "Cc":
            out.append(_hex_bytes(ch.encode("utf-8")))
        elif unicodedata.category(ch) in ("Zs", "Zl", "Zp", "Cf"):  # no-break / wide / zero-width spaces
            out.append(f"<U+{ord(ch):04X}>")  # would otherwise show as a blank (or nothing) in a plot
        else:
            out.append(ch)
    return "".join(out)


def display_bytes(raw: bytes) -> str:
    """Readable form of a byte-level token: real text where the bytes are whole UTF-8 characters."""
    return visible(raw.decode("utf-8", errors="gptviz-hex"))


# ----------------------------------------------------------------------------------------------------------
# The interface


class Tokenizer(TransformersCalls):
    """Base class: text <-> ids, plus readable token strings, called as transformers tokenizers are.

    A subclass sets ``kind``, ``vocab_size``, ``eos_id`` (``bos_id``, ``model_max_length``, a pad token) and
    implements ``_encode_texts`` (or just ``_encode_text``), ``_decode_ids``, ``_id_to_token``, ``_token_to_id``,
    ``tokens`` and ``to_dict``; ``encode``/``decode``/``__call__``/... come from ``TransformersCalls``.
    """

    kind: str = ""
    vocab_size: int = 0
    eos_id: int | None = None
    bos_id: int | None = None
    model_max_length: int | None = None

    def _encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def _encode_texts(self, texts: list[str], add_special_tokens: bool, max_length: int | None) -> list[list[int]]:
        # No special tokens to add: truncation keeps the first max_length ids.
        try:
            return [self._encode_text(t)[:max_length] for t in texts]
        except InputError:
            check_unicode(texts, f"{type(self).__name__}.encode")  # which text of a batch is not valid Unicode
            raise

    def tokens(self, ids: Any) -> list[str]:
        """One display string per id, for plots and tables (whitespace made visible)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """JSON-able dict from which ``tokenizer_from_dict`` rebuilds this tokenizer."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``to_dict()`` as JSON to ``path`` (a folder gets ``tokenizer.json``); returns the file path."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        # Write then rename, so an interrupted save never leaves half a file next to a checkpoint.
        write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False))
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, eos_id={self.eos_id})"


class CharTokenizer(Tokenizer):
    """One id per character; ids follow the sorted order of the characters (so "\\n" and " " come first)."""

    kind = "char"

    def __init__(self, chars: list[str] | str):
        chars = list(chars)
        if not chars:
            raise InputError(
                "CharTokenizer needs at least one character; build it with CharTokenizer.from_text(corpus)."
            )
        if len(set(chars)) != len(chars) or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise InputError(
                "CharTokenizer(chars): expected distinct single characters; use CharTokenizer.from_text(text)."
            )
        check_unicode(["".join(chars)], "CharTokenizer")  # a lone surrogate could never be saved as JSON
        self.chars = chars
        self.vocab_size = len(chars)
        self.eos_id = None
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        if not isinstance(text, str) or not text:
            raise InputError(
                "CharTokenizer.from_text needs a non-empty string: the corpus whose characters become the vocabulary."
            )
        return cls(sorted(set(text)))

    def _encode_text(self, text: str) -> list[int]:
        unknown = set(text) - self._stoi.keys()
        if unknown:
            check_unicode([text], "CharTokenizer.encode")  # lone surrogates: say so, not "not in the vocabulary"
            # Report in order of appearance: the first few are what the student will recognise.
            seen = sorted(unknown, key=text.index)
            shown = ", ".join(repr(c) for c in seen[:8]) + (" ..." if len(seen) > 8 else "")
            raise InputError(
                f"CharTokenizer cannot encode {len(seen)} character(s) that were not in the text it was built "
                f"from: {shown}. Rebuild it with CharTokenizer.from_text(corpus) on a corpus that contains them, "
                "or use get_tokenizer('gpt2'), which encodes any text."
            )
        stoi = self._stoi
        return [stoi[c] for c in text]

    def _decode_ids(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def _id_to_token(self, token_id: int) -> str:
        return self.chars[token_id]

    def _token_to_id(self, token: str) -> int | None:
        return self._stoi.get(token)

    def tokens(self, ids: Any) -> list[str]:
        return [visible(self.chars[i]) for i in _as_id_list(ids, self.vocab_size, "CharTokenizer.tokens")]

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": self.chars}
