"""Checking what a transformers-style tokenizer call was given, before anything is encoded: keyword names
(an unknown one names the closest known spelling), padding / truncation / return_tensors values, texts (a str or
a list of str, valid Unicode) and token ids (whole numbers inside the vocabulary).

Every function here returns the checked value or raises an InputError / UsageError that says what was wrong and
what to write instead; none encodes or decodes. `gptviz.tokenizer_calls` applies the checked values (padding,
truncation, tensors); the rules themselves are described there. Imports only `gptviz.errors`.
"""

from __future__ import annotations

import difflib
import operator
import warnings
from typing import Any

from .errors import InputError, UsageError

PADDING_SIDES = ("left", "right")

ENCODE_KEYWORDS = (
    "add_special_tokens",
    "padding",
    "truncation",
    "max_length",
    "pad_to_multiple_of",
    "padding_side",
    "return_tensors",
)
CALL_KEYWORDS = ("text", *ENCODE_KEYWORDS, "return_attention_mask")
# encode(text) with these is a plain list of ids: no padding, truncation or tensors to do
PLAIN_ENCODE = {
    "padding": False,
    "truncation": None,
    "max_length": None,
    "pad_to_multiple_of": None,
    "padding_side": None,
}
DECODE_KEYWORDS = ("skip_special_tokens", "clean_up_tokenization_spaces")

# transformers keywords accepted only at their default (which is falsy): gptviz encodes single texts, with no
# text pairs, pre-split words, overflow windows, offsets or type ids.
_DEFAULT_ONLY = (
    "text_pair",
    "text_target",
    "text_pair_target",
    "stride",
    "is_split_into_words",
    "return_token_type_ids",
    "return_overflowing_tokens",
    "return_special_tokens_mask",
    "return_offsets_mapping",
    "return_length",
    "tokenizer_kwargs",
)
_IGNORED = ("verbose",)  # transformers' switch for its own warnings


def did_you_mean(word: Any, options: tuple) -> str:
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def check_keywords(where: str, kwargs: dict, accepted: tuple[str, ...]) -> None:
    """Refuse keyword arguments gptviz does not support, naming the closest one it does."""
    for name, value in kwargs.items():
        if name in _IGNORED or (name in _DEFAULT_ONLY and not value):
            continue
        if name in _DEFAULT_ONLY:
            raise InputError(
                f"{where}: {name}={value!r} is not supported; gptviz tokenizers encode single texts (no text "
                "pairs, pre-split words, overflow windows, offsets or type ids). Leave it out."
            )
        raise UsageError(
            f"{where} got an unexpected keyword argument {name!r}{did_you_mean(name, accepted)} "
            f"It accepts: {', '.join(accepted)}."
        )


def padding_mode(padding: Any, where: str) -> str | None:
    value = getattr(padding, "value", padding)  # transformers' PaddingStrategy enum
    if value is True:
        return "longest"
    if value is False or value is None or value == "do_not_pad":
        return None
    if value in ("longest", "max_length"):
        return value
    options = ("longest", "max_length", "do_not_pad")
    raise InputError(
        f"{where}: padding={padding!r} is not one of True, False, 'longest', 'max_length'"
        f"{did_you_mean(value, options) or '.'}"
    )


def truncation_mode(truncation: Any, where: str) -> bool | None:
    value = getattr(truncation, "value", truncation)  # transformers' TruncationStrategy enum
    if value is None:
        return None
    if value is False or value == "do_not_truncate":
        return False
    if value is True or value in ("longest_first", "only_first"):
        return True
    if value == "only_second":
        raise InputError(
            f"{where}: truncation='only_second' cuts the second text of a pair; gptviz encodes "
            "single texts: use truncation=True"
        )
    options = ("longest_first", "only_first", "do_not_truncate")
    raise InputError(
        f"{where}: truncation={truncation!r} is not one of True, False, 'longest_first', 'do_not_truncate'"
        f"{did_you_mean(value, options) or '.'}"
    )


def tensor_kind(return_tensors: Any, where: str) -> str | None:
    value = getattr(return_tensors, "value", return_tensors)  # transformers' TensorType enum
    if value is None or value in ("pt", "np"):
        return value
    extra = " (did you mean 'pt'?)" if value in ("torch", "pytorch") else ""
    extra = " (gptviz works with PyTorch only)" if value in ("tf", "jax", "mlx") else extra
    raise InputError(
        f"{where}: return_tensors={return_tensors!r} is not supported{extra}; use 'pt' for PyTorch tensors, "
        "'np' for NumPy arrays, or None for lists."
    )


def positive_int(value: Any, name: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 1:
        raise InputError(f"{where}: {name}={value!r} must be a positive whole number (or None).")
    return int(value)


def check_padding_side(side: Any, where: str) -> str:
    if side not in PADDING_SIDES:
        raise InputError(
            f"{where}: padding_side={side!r} must be 'left' (what generation needs) or 'right'"
            f"{did_you_mean(side, PADDING_SIDES) or '.'}"
        )
    return side


def check_unicode(texts: list[str], where: str) -> None:
    """InputError naming the first text, position and character that is not valid Unicode (a lone surrogate)."""
    for n, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            ch = text[e.start]
            escaped = all("\udc80" <= c <= "\udcff" for c in text[e.start : e.end])
            repair = (
                "text.encode('utf-8', 'surrogateescape').decode('latin-1') if the bytes were Latin-1, or "
                if escaped
                else ""
            )
            which = f"text {n}" if len(texts) > 1 else "the text"
            raise InputError(
                f"{where}: {which} is not valid Unicode: it holds {ch!r} (U+{ord(ch):04X}, a lone surrogate) at "
                f"position {e.start}, which no tokenizer can encode. It usually comes from bytes that were not "
                f"UTF-8 (a terminal or file in another encoding). Repair the text first: {repair}"
                "text.encode('utf-8', 'replace').decode('utf-8') to replace the bad characters with '?'."
            ) from e


def as_texts(text: Any, where: str) -> tuple[list[str], bool]:
    """(texts, whether one text was given)."""
    if isinstance(text, str):
        return [text], True
    if isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text):
        return list(text), False
    if isinstance(text, (list, tuple)) and not text:
        raise InputError(f"{where}: got an empty list; give a text or a list of texts.")
    if isinstance(text, (list, tuple)) and all(isinstance(t, (list, tuple)) for t in text):
        raise InputError(f"{where}: pre-split words (lists of strings) are not supported; join each into a text.")
    if (isinstance(text, (list, tuple)) and all(isinstance(t, int) for t in text)) or hasattr(text, "tolist"):
        raise InputError(
            f"{where}: these look like token ids already; tokenizers take text (decode turns ids "
            "into text, and torch.tensor([ids]) makes a batch of one)."
        )
    if isinstance(text, (bytes, bytearray)):
        raise InputError(f"{where}: expected a str, got bytes; decode them first, e.g. text.decode('utf-8').")
    raise InputError(f"{where}: expected a str or a list of str, got {type(text).__name__}.")


def as_id(value: Any, who: str) -> int:
    """One id: an int (or numpy/torch integer), or a float holding a whole number (a float tensor of ids)."""
    if not isinstance(value, bool):
        if hasattr(value, "__index__"):
            return operator.index(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    hint = " (a float tensor? pass ids.long())" if isinstance(value, float) else ""
    raise InputError(f"{who}: token ids must be whole numbers, got {value!r} ({type(value).__name__}){hint}.")


def as_id_list(ids: Any, vocab_size: int, who: str) -> list[int]:
    """Accept a list, tuple, numpy array or 1-D tensor of ids; check they are whole numbers in range."""
    if isinstance(ids, (str, bytes)):
        raise InputError(f"{who}: expected token ids, got text ({ids!r:.40}); tok.encode(text) turns text into ids.")
    if hasattr(ids, "tolist"):  # torch.Tensor, numpy array, numpy scalar
        ids = ids.tolist()
    if isinstance(ids, int):
        ids = [ids]
    try:
        ids = list(ids)
    except TypeError:
        raise InputError(
            f"{who}: expected a sequence of token ids (a list, 1-D tensor or array), got {type(ids).__name__}."
        ) from None
    if any(isinstance(i, (list, tuple)) for i in ids):
        raise InputError(
            f"{who}: expected one sequence of ids (1-D), got a nested/2-D input. Decode one row at a time, "
            "e.g. tok.decode(ids[0]), or every row with tok.batch_decode(ids)."
        )
    ids = [as_id(i, who) for i in ids]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise InputError(
            f"{who}: ids {bad[:5]}{' ...' if len(bad) > 5 else ''} are outside the vocabulary "
            f"(valid ids are 0..{vocab_size - 1}). Were these ids made by a different tokenizer? "
            "Use the tokenizer saved with the model (load_tokenizer on its tokenizer.json)."
        )
    return ids


def warn_no_cleanup(where: str) -> None:
    warnings.warn(
        f"{where}: clean_up_tokenization_spaces=True is ignored: gptviz tokenizers give back the text "
        "exactly (transformers 5 ignores it for BPE tokenizers too: the clean-up deletes real spaces "
        "before punctuation).",
        stacklevel=3,
    )
