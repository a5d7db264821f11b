"""`gptviz lab`: open JupyterLab on the lessons (localhost only, a random token, offline).

    gptviz lab                              # opens the browser on notebooks/00_tour.ipynb
    gptviz lab --port 8890 --no-browser     # prints the URL (with its token) instead
    gptviz lab --notebook 01_attention.ipynb
    gptviz lab --app 04_generation_and_sampling   # one lesson as an app (Voila): outputs and widgets, no code
    gptviz lab --app                              # the list of lessons, each opening as an app

This module parses the flags, checks the port and the notebook, prints the URL and then replaces this process
with Jupyter (exec), so Ctrl-C and signals behave as Jupyter's own. App mode runs Voila as a child instead and
opens the browser on the URL with the token once Voila listens (Voila's own browser opening drops the token).
What the server looks like (the flags, the token in the environment, the settings overrides) is
`gptviz.launcher`'s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import time
import webbrowser
from pathlib import Path
from tempfile import gettempdir

from ..launcher import (
    DEFAULT_NOTEBOOK,
    DEFAULT_PORT,
    HOST,
    app_command,
    app_env,
    app_template_dir,
    app_url,
    check_notebook,
    find_notebooks_dir,
    free_port,
    kernel_transport,
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
    p.add_argument(
        "--app",
        nargs="?",
        const="",
        default=None,
        metavar="LESSON",
        help="serve lessons as apps without code (Voila) for a projector: LESSON alone (e.g. 05_finetuning), "
        "or with no LESSON the list of lessons",
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
        app = args.app is not None
        notebook = check_notebook(nb_dir, args.app if app and args.app else args.notebook)
    except (FileNotFoundError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    server = "voila" if app else "jupyterlab"
    if importlib.util.find_spec(server) is None:
        print(
            f"gptviz lab: {'Voila' if app else 'JupyterLab'} is not installed in this Python "
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
    if app:
        return _serve_app(args, nb_dir, notebook if args.app else None, port)
    overrides = settings_dir(nb_dir)
    cmd = lab_command(
        nb_dir,
        port,
        notebook=notebook,
        open_browser=not args.no_browser,
        overrides_dir=overrides,
        transport=kernel_transport(),  # the runtime dir of this environment, which Jupyter inherits (exec)
    )
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
    return _exec(cmd, lab_env(token))


def _serve_app(args, nb_dir: Path, lesson: str | None, port: int) -> int:
    """`--app`: Voila on one lesson (or the list of lessons); the same token, host and transport rules."""
    templates = app_template_dir(nb_dir)
    cmd = app_command(nb_dir, port, notebook=lesson, template_dir=templates, transport=kernel_transport(gettempdir()))
    if args.print_command:
        print(" ".join(cmd))
        return 0
    token = secrets.token_urlsafe(24)
    what = f"the lesson {lesson}" if lesson else f"the lessons in {nb_dir}"
    print(
        f"gptviz lab --app: serving {what} as an app on {HOST}:{port} (Ctrl-C to stop). Each page runs its "
        f"lesson from the top, so it fills in over a minute or so. Open:\n\n    {app_url(port, token)}\n",
        flush=True,
    )
    url = app_url(port, token)
    proc = subprocess.Popen(cmd, env=app_env(token, templates))  # not exec: Voila would open a tokenless URL
    try:
        if not args.no_browser and _wait_for_port(port, proc):
            webbrowser.open(url)
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached Voila too (same process group): let it shut its kernels down
        return proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """True once something accepts connections on HOST:port; False if `proc` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)  # the server is still starting: nothing to wait on but its socket
    return False


def _exec(cmd: list[str], env: dict[str, str]) -> int:
    sys.stderr.flush()
    if os.name == "posix":
        os.execvpe(cmd[0], cmd, env)  # Jupyter takes over this process: Ctrl-C and signals behave as usual
    return subprocess.call(cmd, env=env)  # pragma: no cover
