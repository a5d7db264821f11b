"""The `gptviz` command: a thin dispatcher over one module per subcommand. The library never imports this package.

    gptviz lab        open JupyterLab on the lessons (gptviz.commands.lab -> gptviz.launcher)
    gptviz train      train a GPT from a preset (gptviz.commands.train -> gptviz.presets, gptviz.train)
    gptviz sample     generate text from a checkpoint (gptviz.commands.sample -> gptviz.sampling)
    gptviz finetune   fine-tune a checkpoint: LM or classifier (gptviz.commands.finetune -> gptviz.finetune)
    gptviz bench      benchmarks against transformers / TransformerLens (gptviz.commands.bench -> gptviz.bench)

Every subcommand module here exposes `cli(argv: list[str]) -> int`, parses its own flags and prints for a
terminal; the work is done by the library module it names. The module is imported only when its command
runs, so this file never grows with the flags and `gptviz sample` does not import the training loop.
`python -m gptviz` and the installed `gptviz` script both call `main`.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "lab": "open JupyterLab on the lessons, bound to localhost with a token",
    "train": "train a GPT from a preset in lab/configs",
    "sample": "generate text from a checkpoint",
    "finetune": "fine-tune a checkpoint (language model or classifier)",
    "bench": "benchmark gptviz against transformers and TransformerLens",
}


def usage() -> str:
    lines = ["usage: gptviz COMMAND [options]   (gptviz COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, help_ in COMMANDS.items()]
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
    module = importlib.import_module(f"{__name__}.{command}")
    return int(module.cli(rest) or 0)
