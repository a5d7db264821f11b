"""The `gptviz` command: a thin dispatcher. Each subcommand lives beside the code it drives.

    gptviz lab        open JupyterLab on the lessons (gptviz.launcher)
    gptviz train      train a GPT from a preset (gptviz.train)
    gptviz sample     generate text from a checkpoint (gptviz.sampling)
    gptviz finetune   fine-tune a checkpoint: LM or classifier (gptviz.finetune)
    gptviz bench      benchmarks against transformers / TransformerLens (gptviz.bench)

Every subcommand module exposes `cli(argv: list[str]) -> int` and parses its own flags, so this file never
grows with them and `gptviz sample` does not import the training loop.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "lab": ("launcher", "open JupyterLab on the lessons, bound to localhost with a token"),
    "train": ("train", "train a GPT from a preset in lab/configs"),
    "sample": ("sampling", "generate text from a checkpoint"),
    "finetune": ("finetune", "fine-tune a checkpoint (language model or classifier)"),
    "bench": ("bench", "benchmark gptviz against transformers and TransformerLens"),
}


def usage() -> str:
    lines = ["usage: gptviz COMMAND [options]   (gptviz COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"gptviz: unknown command {command!r}.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"gptviz.{COMMANDS[command][0]}")
    return int(module.cli(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
