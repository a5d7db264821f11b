"""Kept for the installed `gptviz` script (pyproject: `gptviz = "gptviz.cli:main"`); the commands live in
`gptviz.commands`."""

from .commands import main

__all__ = ["main"]
