"""`gptviz lab`: JupyterLab on the lessons, bound to localhost, behind a random token, offline.

    gptviz lab                              # opens the browser on notebooks/00_tour.ipynb
    gptviz lab --port 8890 --no-browser     # prints the URL (with its token) instead
    gptviz lab --notebook 01_attention.ipynb

What the launched server looks like:

* root dir = the repository's `notebooks/` folder (found beside the package, under $GPTVIZ_ROOT, or from the
  current directory), opened on the chosen notebook;
* bound to 127.0.0.1 only; the token is random per launch and reaches Jupyter through the JUPYTER_TOKEN
  environment variable, not argv, because any local user can read another process's command line;
* nothing reaches the internet: news and update checks off, the extension manager read-only;
* settings defaults from `lab/jupyter/overrides.json` (`--LabApp.app_settings_dir`): every cell stays in the
  DOM (`windowingMode: none`, so widgets below the fold render), light theme; a user's own settings still win;
* `--allow-root` when running as root (containers, CI).

This module finds the lessons and builds the Jupyter command, its environment and URL; `lab_command(...)`
is a pure function so tests can check the flags. The lessons live in notebooks/ and the server's behaviour
is Jupyter's own. Parsing the flags, the messages and handing the process over to Jupyter (exec) belong to
the command, `gptviz.commands.lab`. Where a checkout sits beside the package is `gptviz.paths`'s rule; this
module adds the search from the current directory.
"""

from __future__ import annotations

import difflib
import os
import socket
import sys
from pathlib import Path
from urllib.parse import quote

from . import paths

DEFAULT_NOTEBOOK = "00_tour.ipynb"
DEFAULT_PORT = 8888
HOST = "127.0.0.1"


# ---------------------------------------------------------------------------------------------- finding


def find_notebooks_dir(cwd: str | os.PathLike | None = None) -> Path:
    """The lab's notebooks/ folder: $GPTVIZ_ROOT/notebooks, beside the package, or from the current directory.

    Raises FileNotFoundError saying where it looked and what to do.
    """
    cwd = Path(cwd or Path.cwd()).resolve()
    candidates: list[Path] = []
    if os.environ.get("GPTVIZ_ROOT"):
        candidates.append(Path(os.environ["GPTVIZ_ROOT"]) / "notebooks")
    candidates.append(paths.package_checkout() / "notebooks")  # editable install from a checkout
    candidates += [cwd / "notebooks", cwd]  # `gptviz lab` run in the repo, or inside notebooks/ itself
    for path in candidates:
        if path.is_dir() and any(path.glob("*.ipynb")):
            return path
    looked = "\n  ".join(str(p) for p in dict.fromkeys(candidates))
    raise FileNotFoundError(
        "gptviz lab: cannot find the lab's notebooks/ folder (a folder of .ipynb lessons). Looked in:\n  "
        f"{looked}\nRun `gptviz lab` from the gptviz checkout (where `make lab` works), set GPTVIZ_ROOT to "
        "that checkout, or pass --notebooks-dir DIR."
    )


def settings_dir(notebooks_dir: Path) -> Path | None:
    """`lab/jupyter/` beside notebooks/ (the settings overrides), or None when this checkout lacks it."""
    path = notebooks_dir.resolve().parent / "lab" / "jupyter"
    return path if (path / "overrides.json").is_file() else None


def check_notebook(notebooks_dir: Path, notebook: str) -> str:
    """The notebook's path relative to `notebooks_dir` (as a URL path), or a ValueError naming the choices."""
    rel = Path(notebook)
    if rel.is_absolute():
        try:
            rel = rel.resolve().relative_to(notebooks_dir.resolve())
        except ValueError:
            raise ValueError(f"{notebook} is not inside the lab's notebooks folder {notebooks_dir}") from None
    if rel.suffix != ".ipynb" and not (notebooks_dir / rel).is_file():
        rel = rel.with_name(rel.name + ".ipynb")  # `--notebook 01_attention` is fine too
    if not (notebooks_dir / rel).is_file():
        have = sorted(p.name for p in notebooks_dir.glob("*.ipynb"))
        close = difflib.get_close_matches(str(notebook), have, n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ValueError(f"no notebook {notebook!r} in {notebooks_dir}.{hint} Available: {', '.join(have)}")
    return rel.as_posix()


def free_port(preferred: int | None = DEFAULT_PORT) -> int:
    """`preferred` if nothing listens there on 127.0.0.1, otherwise a port the OS says is free."""
    if preferred:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # as servers bind: a port whose old connections linger in TIME_WAIT is free; a listener is not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- command


def lab_command(
    notebooks_dir: str | os.PathLike,
    port: int,
    *,
    notebook: str = DEFAULT_NOTEBOOK,
    open_browser: bool = True,
    overrides_dir: str | os.PathLike | None = None,
    allow_root: bool | None = None,
    python: str | None = None,
) -> list[str]:
    """The argv that starts JupyterLab for the lab. The token is not in it: pass `lab_env(token)` as env.

    `port` is used as is (port_retries=0), so the URL printed before the start is the one that serves.
    `allow_root=None` means: add --allow-root when the effective user is root.
    """
    if allow_root is None:
        allow_root = hasattr(os, "geteuid") and os.geteuid() == 0
    cmd = [
        python or sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={int(port)}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={Path(notebooks_dir).resolve()}",
        f"--LabApp.default_url=/lab/tree/{quote(notebook)}",  # LabApp's own default_url wins over ServerApp's
        "--ServerApp.open_browser=" + ("True" if open_browser else "False"),
        # offline: no news feed, no update check, no extension listing from PyPI
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if overrides_dir is not None:
        cmd.append(f"--LabApp.app_settings_dir={Path(overrides_dir).resolve()}")
    if allow_root:
        cmd.append("--allow-root")
    return cmd


def lab_env(token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for `lab_command`: the token (JUPYTER_TOKEN), and the kernel from this environment."""
    if not token:
        raise ValueError("the lab needs a non-empty token; an empty one would let any local process in")
    env = dict(os.environ if base is None else base)
    env["JUPYTER_TOKEN"] = token
    # Kernel specs from this venv/conda env first (a stale ~/.local kernel named python3 would lack gptviz).
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    return env


def lab_url(port: int, token: str, notebook: str = DEFAULT_NOTEBOOK) -> str:
    return f"http://{HOST}:{port}/lab/tree/{quote(notebook)}?token={token}"
