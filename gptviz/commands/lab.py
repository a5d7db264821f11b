"""`gptviz lab`: open JupyterLab on the lessons (localhost only, a random token, offline).

    gptviz lab                              # opens the browser on notebooks/00_tour.ipynb
    gptviz lab --port 8890 --no-browser     # prints the URL (with its token) instead
    gptviz lab --notebook 01_attention.ipynb

This module parses the flags, checks the port and the notebook, prints the URL and then replaces this process
with Jupyter (exec), so Ctrl-C and signals behave as Jupyter's own. What the server looks like (the flags,
the token in the environment, the settings overrides) is `gptviz.launcher`'s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from ..launcher import (
    DEFAULT_NOTEBOOK,
    DEFAULT_PORT,
    HOST,
    check_notebook,
    find_notebooks_dir,
    free_port,
    lab_command,
    lab_env,
    lab_url,
    settings_dir,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gptviz lab", description="Open JupyterLab on the gptviz lessons (localhost only, random token, offline)."
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}, or a free one if that is taken)",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a browser; just print the URL")
    p.add_argument(
        "--notebook",
        default=DEFAULT_NOTEBOOK,
        help=f"the notebook to open, relative to notebooks/ (default {DEFAULT_NOTEBOOK})",
    )
    p.add_argument("--notebooks-dir", default=None, help="the lessons folder (default: the checkout's notebooks/)")
    p.add_argument("--print-command", action="store_true", help="print the Jupyter command and exit")
    return p


def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.notebooks_dir:
            nb_dir = Path(args.notebooks_dir).expanduser().resolve()
            if not nb_dir.is_dir():
                raise FileNotFoundError(f"gptviz lab: --notebooks-dir {nb_dir} is not a folder")
        else:
            nb_dir = find_notebooks_dir()
        notebook = check_notebook(nb_dir, args.notebook)
    except (FileNotFoundError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        print(
            "gptviz lab: JupyterLab is not installed in this Python "
            f"({sys.executable}). Install the lab with `make install` (or `pip install -e .`).",
            file=sys.stderr,
        )
        return 2

    if args.port is not None:
        if free_port(args.port) != args.port:
            print(
                f"gptviz lab: port {args.port} on {HOST} is in use. Pick another with --port, or leave --port "
                "out to get a free one.",
                file=sys.stderr,
            )
            return 2
        port = args.port
    else:
        port = free_port(DEFAULT_PORT)
    overrides = settings_dir(nb_dir)
    cmd = lab_command(nb_dir, port, notebook=notebook, open_browser=not args.no_browser, overrides_dir=overrides)
    if args.print_command:
        print(" ".join(cmd))
        return 0
    token = secrets.token_urlsafe(24)
    if overrides is None:
        print(
            f"gptviz lab: no lab/jupyter/overrides.json beside {nb_dir}; using JupyterLab's default settings",
            file=sys.stderr,
        )
    print(
        f"gptviz lab: serving {nb_dir} on {HOST}:{port} (Ctrl-C to stop). Open:\n\n    "
        f"{lab_url(port, token, notebook)}\n",
        flush=True,
    )
    env = lab_env(token)
    sys.stderr.flush()
    if os.name == "posix":
        os.execvpe(cmd[0], cmd, env)  # Jupyter takes over this process: Ctrl-C and signals behave as usual
    import subprocess  # pragma: no cover - Windows has no real exec

    return subprocess.call(cmd, env=env)  # pragma: no cover
