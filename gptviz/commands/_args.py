"""Command-line flags from config dataclasses: one typed `--section.field` flag per field, with help text.

    add_config_fields(parser, "train", TrainConfig, short={"lr", ...})   # --train.lr, --lr, ...
    args = vars(parser.parse_args(argv))
    given(args, "train")                                                 # {"lr": 0.001}: only what was typed

The configs (GPTConfig, TrainConfig, FinetuneConfig) describe each field in a trailing comment,
`lr: float = 1e-3  # peak learning rate, reached after warmup`; that comment is the flag's --help text, read
from the class source with `tokenize` (so the config stays the one place a field is described, and a `#`
inside a default string is not mistaken for one). Flags default to "not given" (argparse.SUPPRESS), so a
command overlays only what the user typed onto its preset.

It also holds what every command shares about errors (`Parser`, `run_command`): a user error (a bad flag, a
missing file, a preset with a wrong value, text that is not UTF-8) is one line on stderr, `gptviz CMD: error:
WHAT; WHAT TO DO`, and exit status 2; the traceback only with --debug. An error that is not the user's (a bug)
is one line too, exit status 1, asking for --debug and a report.

This module knows nothing about training; each command picks its sections and which short names it allows.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import math
import sys
import textwrap
import tokenize
import typing
from collections.abc import Callable, Container
from dataclasses import fields

from ..errors import GptvizError

NONE_WORDS = ("none", "null")  # what a user types for an optional field's None
USER_ERRORS = (GptvizError, OSError, ValueError, MemoryError)  # what the user can fix: one line, exit status 2


class FlagError(Exception):
    """A command-line flag argparse refused (raised by Parser.error instead of printing usage and exiting)."""


class Parser(argparse.ArgumentParser):
    """argparse with gptviz's error habit: a refused flag raises FlagError (one line, via run_command), and every
    command has --debug (show the traceback of an error instead of one line)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="on an error, show the full Python traceback")

    def error(self, message: str):  # type: ignore[override]
        raise FlagError(f"{message} (gptviz {self.prog.split()[-1]} --help lists the options)")


def one_line(error: BaseException) -> str:
    """The error's message on one line (transformers' and our own multi-line messages joined)."""
    return " ".join(str(error).split()) or type(error).__name__


def run_command(prog: str, argv: list[str], body: Callable[[list[str]], int]) -> int:
    """`body(argv)` with the commands' error rules: a user error -> one line on stderr and 2 (a traceback only
    with --debug); anything else -> one line and 1 (with --debug: the traceback); Ctrl-C -> 130."""
    debug = "--debug" in argv
    try:
        return int(body(argv) or 0)
    except FlagError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help, or argparse's own exit
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: stopped (Ctrl-C)", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            raise
        print(
            f"{prog}: internal error ({type(e).__name__}: {one_line(e)}); this is a gptviz bug, not your input. "
            f"Run it again with --debug for the traceback and report it",
            file=sys.stderr,
        )
        return 1


def finite_float(text: str) -> float:
    """argparse type: a finite float ("3e-3"); 'inf' and 'nan' are refused."""
    value = float(text)  # ValueError: argparse says "invalid float value: 'x'"
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


finite_float.__name__ = "float"  # argparse names the type in its message: "invalid float value: 'x'"


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
            raise argparse.ArgumentTypeError(f"expected true or false (or yes/no, on/off, 1/0), got {text!r}")
        if base is float:
            return finite_float(text)
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
