"""Transformers' calling conventions for every gptviz tokenizer: ``tok(texts, ...)``, ``encode``, ``decode``,
``batch_decode`` and the special-token attributes, as Hugging Face users write them.

``gptviz.tokenizers.Tokenizer`` inherits ``TransformersCalls``; each tokenizer only says how to turn texts into
ids and back (the hooks listed in ``TransformersCalls``). The rules, and where they differ from transformers:

- ``tok(text)`` gives ``{"input_ids": [...], "attention_mask": [...]}`` (flat lists); ``tok([t1, t2])`` lists of
  lists; ``return_tensors="pt"`` a ``(B, T)`` long tensor (one text: ``(1, T)``), ``"np"`` an int64 array.
  Rows of different lengths need ``padding=True`` for a tensor (a ``ValueError`` says so, as transformers does).
- Padding goes on ``tok.padding_side``, **"left" by default** (transformers' default is "right"): generation
  continues after the last position of every row, so the prompts must end there. Padded positions have
  ``attention_mask`` 0; their id is ``tok.pad_token_id``: the tokenizer's own pad token if it has one, else
  its end-of-text token (GPT-2 has no pad token; transformers users set ``pad_token = eos_token``), else 0
  (the char tokenizer). The value never matters to a model that is given the mask.
- ``truncation=True`` with ``max_length`` keeps the first ``max_length`` tokens (special tokens included), and
  ``max_length`` alone truncates too, as in transformers. Without ``max_length`` it cuts at
  ``tok.model_max_length`` (GPT-2: 1024), or, where there is none, cuts nothing and warns.
- ``decode`` takes one sequence (a list, 1-D tensor or array). A 2-D input is refused with a hint (use
  ``decode(out[0])`` or ``batch_decode(out)``), where transformers 5 would return a list of strings: a ``str``
  or a ``list`` from the same call depending on a shape is a trap. ``skip_special_tokens=True`` drops
  ``tok.all_special_ids`` (every token the vocabulary marks special, as transformers' fast tokenizers do).
  ``clean_up_tokenization_spaces=True`` is accepted and ignored, with a warning (transformers 5 ignores it
  for BPE tokenizers): gptviz gives back the text exactly.
- A keyword gptviz does not know is a ``UsageError`` (a ``TypeError``) that names the closest spelling it knows;
  a value it does not support (``return_tensors="tf"``, ``padding="longst"``) an ``InputError`` (a
  ``ValueError``) that names the valid ones.

- Text must be valid Unicode: a ``str`` holding lone surrogates (what ``errors="surrogateescape"`` makes of
  bytes that are not UTF-8, e.g. from a Latin-1 terminal) is an ``InputError`` that says where, and how to
  repair the text, from every tokenizer (``check_unicode``), never the tokenizers library's bare TypeError.

Checking the arguments (keywords, values, texts, ids) is ``gptviz.tokenizer_args``'; this module applies them.
This module imports only ``gptviz.errors`` and ``gptviz.tokenizer_args``; torch and numpy are imported only when
tensors are asked for.
"""

from __future__ import annotations

import warnings
from typing import Any

from .errors import InputError
from .tokenizer_args import (
    CALL_KEYWORDS,
    DECODE_KEYWORDS,
    ENCODE_KEYWORDS,
    PLAIN_ENCODE,
    as_id_list,
    as_texts,
    check_keywords,
    check_padding_side,
    padding_mode,
    positive_int,
    tensor_kind,
    truncation_mode,
    warn_no_cleanup,
)
from .tokenizer_args import PADDING_SIDES as PADDING_SIDES  # re-exported: gptviz.tokenizer_calls.PADDING_SIDES
from .tokenizer_args import check_unicode as check_unicode


class BatchEncoding(dict):
    """What calling a tokenizer returns: ``input_ids`` and ``attention_mask`` in a dict with attribute access
    (``enc.input_ids``, ``enc["attention_mask"]``, ``model.generate(**enc)``), like transformers' class."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no {name!r}; it holds {', '.join(map(repr, self))}") from None

    def to(self, device: Any, non_blocking: bool = False) -> BatchEncoding:
        """Move the tensors to ``device`` (in place, like transformers); returns self."""
        import torch

        if not any(isinstance(v, torch.Tensor) for v in self.values()):
            raise InputError(
                "BatchEncoding.to(device) moves tensors, and this one holds lists: call the "
                "tokenizer with return_tensors='pt'."
            )
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device, non_blocking=non_blocking)
        return self


class TransformersCalls:
    """The transformers-style surface, written once for every tokenizer. A tokenizer class provides:

    ``vocab_size``, ``eos_id``, ``bos_id``, ``model_max_length`` (int or None), and the methods
    ``_encode_texts(texts, add_special_tokens, max_length) -> list[list[int]]`` (``max_length``: truncate each to
    at most that many ids, special tokens included), ``_decode_ids(ids) -> str``, ``_id_to_token(i) -> str``,
    ``_token_to_id(token) -> int | None`` and ``_special_token_ids() -> set[int]``.
    """

    vocab_size: int = 0
    eos_id: int | None = None
    bos_id: int | None = None
    model_max_length: int | None = None
    _pad_id: int | None = None  # a pad token set by the tokenizer or the user; None: eos, else 0
    _padding_side: str = "left"

    def _encode_texts(self, texts: list[str], add_special_tokens: bool, max_length: int | None) -> list[list[int]]:
        raise NotImplementedError

    def _decode_ids(self, ids: list[int]) -> str:
        raise NotImplementedError

    def _id_to_token(self, token_id: int) -> str:
        raise NotImplementedError

    def _token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def _special_token_ids(self) -> set[int]:
        return set()

    # ------------------------------------------------------------------------------------------------------
    # Encoding

    def __call__(
        self,
        text: str | list[str],
        text_pair: Any = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
        **kwargs,
    ) -> BatchEncoding:
        """Encode one text or a list of texts, as a transformers tokenizer does (see the module docstring).

        Returns a ``BatchEncoding`` with ``input_ids`` and (unless ``return_attention_mask=False``)
        ``attention_mask``. Padding is on ``padding_side`` (default ``tok.padding_side``, "left": what
        generation needs) with ``tok.pad_token_id``; padded positions have attention_mask 0.
        """
        where = f"{type(self).__name__}(...)"
        if text_pair is not None:
            raise InputError(
                f"{where}: text_pair={text_pair!r} is not supported; text pairs are not (a GPT reads one stream of "
                "text): join them yourself, e.g. tok(question + ' ' + answer)"
            )
        check_keywords(where, kwargs, CALL_KEYWORDS)
        options = {
            "add_special_tokens": add_special_tokens,
            "padding": padding,
            "truncation": truncation,
            "max_length": max_length,
            "pad_to_multiple_of": pad_to_multiple_of,
            "padding_side": padding_side,
        }
        return self._call(where, text, options, return_tensors, return_attention_mask is not False)

    def _call(self, where: str, text: Any, options: dict, return_tensors: Any, return_mask: bool) -> BatchEncoding:
        kind = tensor_kind(return_tensors, where)
        texts, single = as_texts(text, where)
        ids, mask = self._encode_padded(texts, where, **options)
        data = {"input_ids": ids, "attention_mask": mask} if return_mask else {"input_ids": ids}
        if kind is None:
            return BatchEncoding({k: v[0] if single else v for k, v in data.items()})
        lengths = sorted({len(row) for row in ids})
        if len(lengths) > 1:
            raise InputError(
                f"{where}: the texts encode to different lengths ({lengths[0]} to {lengths[-1]} tokens), which "
                f"cannot make one tensor; pass padding=True (shorter rows are padded on the {self.padding_side} "
                f"with pad_token_id={self.pad_token_id}, attention_mask 0 there), or return_tensors=None for lists."
            )
        if kind == "pt":
            import torch

            return BatchEncoding({k: torch.tensor(v, dtype=torch.long) for k, v in data.items()})
        import numpy as np

        return BatchEncoding({k: np.array(v, dtype=np.int64) for k, v in data.items()})

    def encode(
        self,
        text: str,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> Any:
        """The ids of one text: a ``list[int]``, or a ``(1, T)`` long tensor with ``return_tensors="pt"``.

        ``add_special_tokens=True`` applies the tokenizer's post-processor, as transformers does (GPT-2, char
        and trained BPE add nothing; a pretrained model's tokenizer adds what its tokenizer.json says).
        """
        where = f"{type(self).__name__}.encode"
        check_keywords(where, kwargs, ("text", *ENCODE_KEYWORDS))
        if not isinstance(text, str):
            several = isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text)
            hint = " for several texts call tok(texts, padding=True, return_tensors='pt')." if several else ""
            raise InputError(f"{where} expects one str, got {type(text).__name__};{hint or ' encode text.'}")
        options = {
            "add_special_tokens": add_special_tokens,
            "padding": padding,
            "truncation": truncation,
            "max_length": max_length,
            "pad_to_multiple_of": pad_to_multiple_of,
            "padding_side": padding_side,
        }
        if return_tensors is None and all(options[k] is v for k, v in PLAIN_ENCODE.items()):  # the common call
            return self._encode_texts([text], bool(add_special_tokens), None)[0]
        return self._call(where, text, options, return_tensors, False)["input_ids"]

    def _encode_padded(
        self,
        texts: list[str],
        where: str,
        add_special_tokens: Any,
        padding: Any,
        truncation: Any,
        max_length: Any,
        pad_to_multiple_of: Any,
        padding_side: Any,
    ) -> tuple[list[list[int]], list[list[int]]]:
        pad = padding_mode(padding, where)
        truncate = truncation_mode(truncation, where)
        max_length = positive_int(max_length, "max_length", where)
        multiple = positive_int(pad_to_multiple_of, "pad_to_multiple_of", where)
        side = self._padding_side if padding_side is None else check_padding_side(padding_side, where)
        if truncate is None:  # transformers: max_length alone truncates; with padding it is the padded length
            if max_length is not None and pad == "longest":
                warnings.warn(
                    f"{where}: max_length is ignored with padding=True and no truncation; pass "
                    "truncation=True to cut, or padding='max_length' to pad to it.",
                    stacklevel=4,
                )
            truncate = max_length is not None and pad is None
        limit = (max_length or self.model_max_length) if truncate else None
        if truncate and limit is None:
            warnings.warn(
                f"{where}: truncation=True without max_length, and {type(self).__name__} has no "
                "model_max_length: nothing was cut. Pass max_length (e.g. the model's block_size).",
                stacklevel=4,
            )
        ids = self._encode_texts(texts, bool(add_special_tokens), limit)
        mask = [[1] * len(row) for row in ids]
        target = None
        if pad == "longest":
            target = max(map(len, ids))
        elif pad == "max_length":
            target = max_length or self.model_max_length
            if target is None:
                raise InputError(
                    f"{where}: padding='max_length' needs max_length=... ({type(self).__name__} has "
                    "no model_max_length); or pad to the longest text with padding=True."
                )
        if target is not None and multiple:
            target = -(-target // multiple) * multiple
        if target is not None:
            pad_id = self.pad_token_id
            for i, row in enumerate(ids):
                n = target - len(row)
                if n > 0:
                    left = side == "left"
                    ids[i] = [pad_id] * n + row if left else row + [pad_id] * n
                    mask[i] = [0] * n + mask[i] if left else mask[i] + [0] * n
        return ids, mask

    # ------------------------------------------------------------------------------------------------------
    # Decoding

    def decode(
        self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False, **kwargs
    ) -> str:
        """Text of one sequence of ids (list, 1-D tensor or array). ``skip_special_tokens`` drops
        ``all_special_ids`` (end-of-text, pad, ``<|im_end|>``, ...)."""
        where = f"{type(self).__name__}.decode"
        check_keywords(where, kwargs, DECODE_KEYWORDS)
        ids = as_id_list(ids, self.vocab_size, where)
        if skip_special_tokens:
            special = set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        if clean_up_tokenization_spaces:
            warn_no_cleanup(where)
        return self._decode_ids(ids)

    def batch_decode(
        self, sequences: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False, **kwargs
    ) -> list[str]:
        """``decode`` of each row of a 2-D tensor / array or a list of id lists."""
        where = f"{type(self).__name__}.batch_decode"
        check_keywords(where, kwargs, DECODE_KEYWORDS)
        rows = sequences.tolist() if hasattr(sequences, "tolist") else list(sequences)
        if not all(isinstance(row, (list, tuple)) for row in rows):
            raise InputError(
                f"{where} expects several sequences (a 2-D tensor or a list of id lists); for one "
                "sequence use tok.decode(ids)."
            )
        if clean_up_tokenization_spaces:
            warn_no_cleanup(where)
        return [self.decode(row, skip_special_tokens) for row in rows]

    # ------------------------------------------------------------------------------------------------------
    # Vocabulary and special tokens

    def __len__(self) -> int:
        return self.vocab_size

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> str | list[str]:
        """The vocabulary's own spelling of ids (GPT-2: ``"Ġupon"``); ``tokens(ids)`` gives readable ones."""
        if isinstance(ids, int) or (hasattr(ids, "ndim") and ids.ndim == 0):
            return self._id_to_token(as_id_list(ids, self.vocab_size, "convert_ids_to_tokens")[0])
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [
            self._id_to_token(i) for i in as_id_list(ids, self.vocab_size, "convert_ids_to_tokens") if i not in special
        ]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        """The vocabulary's spelling of a text's tokens (GPT-2: ``["Hello", "Ġworld"]``), as transformers' tokenize."""
        return self.convert_ids_to_tokens(self.encode(text, add_special_tokens=add_special_tokens))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """The text that vocabulary tokens spell (``["Hello", "Ġworld"]`` -> ``"Hello world"``)."""
        ids = self.convert_tokens_to_ids([tokens] if isinstance(tokens, str) else tokens)
        return self._decode_ids(ids)

    def get_vocab(self) -> dict[str, int]:
        """Every vocabulary token's spelling -> its id."""
        return {self._id_to_token(i): i for i in range(self.vocab_size)}

    unk_token = unk_token_id = None  # byte-level and char vocabularies have no unknown token
    name_or_path = ""

    @property
    def all_special_tokens(self) -> list[str]:
        return [self._id_to_token(i) for i in self.all_special_ids]

    @property
    def truncation_side(self) -> str:
        return "right"

    @truncation_side.setter
    def truncation_side(self, side: str) -> None:
        if side != "right":
            raise InputError(
                f"truncation_side={side!r} is not supported: gptviz tokenizers keep the start of a text (right "
                "truncation); cut the text yourself to keep its end"
            )

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The special tokens this tokenizer has, by role (``{"eos_token": "<|endoftext|>", ...}``)."""
        roles = {"bos_token": self.bos_token, "eos_token": self.eos_token}
        if self._pad_id is not None:
            roles["pad_token"] = self.pad_token
        return {role: token for role, token in roles.items() if token is not None}

    def add_special_tokens(self, special_tokens_dict: dict, replace_additional_special_tokens: bool = True) -> int:
        """Give a role (``pad_token``, ``eos_token``, ``bos_token``) to a token the vocabulary already has, as
        transformers does; returns 0, the number of tokens added. A new token is refused: it would need new rows
        in the model's embedding, which gptviz does not grow."""
        where = f"{type(self).__name__}.add_special_tokens"
        if not isinstance(special_tokens_dict, dict):
            raise InputError(
                f"{where} takes a dict such as {{'pad_token': tok.eos_token}}, got {special_tokens_dict!r}"
            )
        for role, token in special_tokens_dict.items():
            if role not in ("pad_token", "eos_token", "bos_token"):
                raise InputError(
                    f"{where}: {role!r} is not supported; gptviz tokenizers have pad_token, eos_token and bos_token"
                )
            token = getattr(token, "content", token)  # transformers' AddedToken
            if not isinstance(token, str) or self._token_to_id(token) is None:
                raise InputError(
                    f"{where}: {token!r} is not in the vocabulary, and gptviz does not add tokens (the model's "
                    f"embedding would need a new row). Give the role to a token it has, e.g. "
                    f"tok.add_special_tokens({{{role!r}: tok.eos_token}}), or tok.{role} = tok.eos_token"
                )
        for role, token in special_tokens_dict.items():
            setattr(self, role, getattr(token, "content", token))
        return 0

    def add_tokens(self, new_tokens: Any, special_tokens: bool = False) -> int:
        raise InputError(
            f"{type(self).__name__}.add_tokens: gptviz does not add tokens to a vocabulary (the model's embedding "
            "would need new rows); a char tokenizer built from text that holds them has them"
        )

    def save_pretrained(self, directory: Any, **_ignored: Any) -> Any:
        raise InputError(
            f"{type(self).__name__} has no transformers format (a character vocabulary is gptviz's own); save it "
            "with tok.save(folder), or the model and tokenizer together with gptviz.save(folder, model, tok)"
        )

    def apply_chat_template(
        self,
        conversation: list,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> Any:
        """transformers' chat call: the template applied to one conversation (a list of {"role", "content"}) or a
        list of them. ``tokenize=False``: the prompt text(s); else the encoding (special tokens come from the
        template, none are added), a ``BatchEncoding`` (``return_dict=True``, transformers 5's default) or the ids."""
        where = f"{type(self).__name__}.apply_chat_template"
        for name, value in kwargs.items():
            if value not in (None, False, {}, []):
                raise InputError(
                    f"{where}: {name}={value!r} is not supported (the template gets messages and "
                    "add_generation_prompt only); leave it out"
                )
        chat = getattr(self, "chat", None)
        if chat is None or not getattr(self, "chat_template", None):
            raise InputError(f"{where}: this tokenizer has no chat template; write the prompt text yourself")
        batched = isinstance(conversation, (list, tuple)) and bool(conversation) and isinstance(conversation[0], list)
        texts = [
            chat(c, add_generation_prompt=add_generation_prompt) for c in (conversation if batched else [conversation])
        ]
        if not tokenize:
            return texts if batched else texts[0]
        options = {
            "add_special_tokens": False,
            "padding": padding,
            "truncation": truncation or None,
            "max_length": max_length,
            "pad_to_multiple_of": None,
            "padding_side": None,
        }
        out = self._call(where, texts if batched else texts[0], options, return_tensors, True)
        return out if return_dict else out["input_ids"]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._require_id(tokens, "convert_tokens_to_ids")
        return [self._require_id(t, "convert_tokens_to_ids") for t in tokens]

    def _require_id(self, token: str, where: str) -> int:
        token_id = self._token_to_id(token) if isinstance(token, str) else None
        if token_id is None:
            raise InputError(
                f"{type(self).__name__}.{where}: {token!r} is not a token of this vocabulary; "
                "see how a text is spelled with tok.convert_ids_to_tokens(tok.encode(text))."
            )
        return token_id

    def _token_or_none(self, token_id: int | None) -> str | None:
        return None if token_id is None else self._id_to_token(token_id)

    def _checked_id(self, token_id: Any, name: str) -> int | None:
        if token_id is not None:
            token_id = as_id_list([token_id], self.vocab_size, f"{type(self).__name__}.{name}")[0]
        return token_id

    @property
    def all_special_ids(self) -> list[int]:
        """Ids that ``skip_special_tokens=True`` drops: the special tokens, end-of-text, bos and a set pad."""
        ids = self._special_token_ids() | {self.eos_id, self.bos_id, self._pad_id}
        return sorted(i for i in ids if i is not None)

    @property
    def eos_token_id(self) -> int | None:
        return self.eos_id

    @eos_token_id.setter
    def eos_token_id(self, value: int | None) -> None:
        self.eos_id = self._checked_id(value, "eos_token_id")

    @property
    def bos_token_id(self) -> int | None:
        return self.bos_id

    @bos_token_id.setter
    def bos_token_id(self, value: int | None) -> None:
        self.bos_id = self._checked_id(value, "bos_token_id")

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad token if it has one (or you set one), else end-of-text, else 0. Padded positions
        have attention_mask 0, so the value does not change what a model computes."""
        if self._pad_id is not None:
            return self._pad_id
        return self.eos_id if self.eos_id is not None else 0

    @pad_token_id.setter
    def pad_token_id(self, value: int | None) -> None:
        self._pad_id = self._checked_id(value, "pad_token_id")

    @property
    def eos_token(self) -> str | None:
        return self._token_or_none(self.eos_id)

    @eos_token.setter
    def eos_token(self, token: str | None) -> None:
        self.eos_id = None if token is None else self._require_id(token, "eos_token")

    @property
    def bos_token(self) -> str | None:
        return self._token_or_none(self.bos_id)

    @bos_token.setter
    def bos_token(self, token: str | None) -> None:
        self.bos_id = None if token is None else self._require_id(token, "bos_token")

    @property
    def pad_token(self) -> str:
        """The token of ``pad_token_id``; ``tok.pad_token = tok.eos_token`` works as in transformers."""
        return self._id_to_token(self.pad_token_id)

    @pad_token.setter
    def pad_token(self, token: str | None) -> None:
        self._pad_id = None if token is None else self._require_id(token, "pad_token")

    @property
    def padding_side(self) -> str:
        """Where ``tok(..., padding=True)`` pads: "left" (the default; generation needs it) or "right"."""
        return self._padding_side

    @padding_side.setter
    def padding_side(self, side: str) -> None:
        self._padding_side = check_padding_side(side, type(self).__name__)
