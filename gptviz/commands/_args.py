"""Command-line flags from config dataclasses: one typed `--section.field` flag per field, with help text.

    add_config_fields(parser, "train", TrainConfig, short={"lr", ...})   # --train.lr, --lr, ...
    args = vars(parser.parse_args(argv))
    given(args, "train")                                                 # {"lr": 0.001}: only what was typed

The configs (GPTConfig, TrainConfig, FinetuneConfig) describe each field in a trailing comment,
`lr: float = 1e-3  # peak learning rate, reached after warmup`; that comment is the flag's --help text, read
from the class source with `tokenize` (so the config stays the one place a field is described, and a `#`
inside a default string is not mistaken for one). Flags default to "not given" (argparse.SUPPRESS), so a
command overlays only what the user typed onto its preset.

This module knows nothing about training; each command picks its sections and which short names it allows.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import textwrap
import tokenize
import typing
from collections.abc import Callable, Container
from dataclasses import fields

NONE_WORDS = ("none", "null")  # what a user types for an optional field's None


def field_help(cls: type) -> dict[str, str]:
    """{field name: the trailing comment of its line} from `cls`'s source; {} when the source is unavailable."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # e.g. a class defined in an interactive session
        return {}
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    class_def = ast.parse(source).body[0]
    helps = {}
    for node in class_def.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = [comments[line] for line in range(node.lineno, node.end_lineno + 1) if line in comments]
            if text:
                helps[node.target.id] = " ".join(text)
    return helps


def value_parser(tp) -> Callable[[str], object]:
    """A str -> value function for a field's type: int, float, str, bool (true/false, yes/no, on/off, 1/0),
    `X | None` ("none" or "null" gives None), and `list[str] | None` (comma-separated: "hamlet,macbeth").

    Its __name__ names the type: argparse uses it in error messages, and the flags use it as the metavar.
    """
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp

    if typing.get_origin(base) is list:

        def parse(text: str):
            if optional and text.lower() in NONE_WORDS:
                return None
            return [t.strip() for t in text.split(",") if t.strip()]

        parse.__name__ = "list"
        return parse

    def parse(text: str):
        if optional and text.lower() in NONE_WORDS:
            return None
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {text!r}")
        return base(text)

    parse.__name__ = getattr(base, "__name__", "value")
    return parse


def add_config_fields(parser: argparse.ArgumentParser, section: str, cls: type, short: Container[str] = ()) -> None:
    """A group "SECTION fields" with --SECTION.FIELD for every field of dataclass `cls` (plus --FIELD for the
    names in `short`); each parses to dest "SECTION.FIELD" and is absent from the result unless given."""
    group = parser.add_argument_group(f"{section} fields")
    hints, helps = typing.get_type_hints(cls), field_help(cls)
    for f in fields(cls):
        parse = value_parser(hints[f.name])
        flags = [f"--{section}.{f.name}"] + ([f"--{f.name}"] if f.name in short else [])
        group.add_argument(
            *flags,
            dest=f"{section}.{f.name}",
            type=parse,
            default=argparse.SUPPRESS,
            metavar=parse.__name__.upper(),
            help=helps.get(f.name, "").replace("%", "%%"),
        )  # argparse formats help with %


def given(args: dict, section: str) -> dict[str, object]:
    """The fields of `section` the user typed, by field name: {"train.lr": 0.001, ...} -> {"lr": 0.001}."""
    prefix = section + "."
    return {k[len(prefix) :]: v for k, v in args.items() if k.startswith(prefix)}
