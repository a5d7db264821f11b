"""`gptviz lab`: JupyterLab on the lessons, bound to localhost, behind a random token, offline.

    gptviz lab                              # opens the browser on notebooks/00_tour.ipynb
    gptviz lab --port 8890 --no-browser     # prints the URL (with its token) instead
    gptviz lab --notebook 01_attention.ipynb
    gptviz lab --app 04_generation_and_sampling   # the lesson as an app: outputs and widgets, no code

What the launched server looks like:

* root dir = the repository's `notebooks/` folder (found beside the package, under $GPTVIZ_ROOT, or from the
  current directory), opened on the chosen notebook;
* bound to 127.0.0.1 only; the token is random per launch and reaches Jupyter through the JUPYTER_TOKEN
  environment variable, not argv, because any local user can read another process's command line;
* nothing reaches the internet: news and update checks off, the extension manager read-only;
* settings defaults from `lab/jupyter/overrides.json` (`--LabApp.app_settings_dir`): every cell stays in the
  DOM (`windowingMode: none`, so widgets below the fold render), light theme; a user's own settings still win;
* the kernel talks to the server over IPC (Unix sockets in Jupyter's runtime dir, readable by this user only),
  not TCP on localhost: no kernel port for another local user to connect to, and no "Kernel is running over
  TCP without encryption" warning (`kernel_transport`). Two cases keep TCP on 127.0.0.1: Windows (no IPC
  transport there) and a runtime dir whose path is so long that a socket path in it would pass the OS limit
  (~104 bytes), where the kernel could not start at all;
* `--allow-root` when running as root (containers, CI).

App mode (`app_command`) serves the same lessons with Voila instead of JupyterLab: each notebook runs top to
bottom in a fresh kernel and the page shows its outputs and live widgets without the code (for a projector).
Same rules: 127.0.0.1, the token from JUPYTER_TOKEN (Voila's `auto_token` reads it), kernels over IPC, nothing
fetched from the internet (MathJax is not used by the lessons; plotly and the widget managers are served
locally).

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
    transport: str = "tcp",
    python: str | None = None,
) -> list[str]:
    """The argv that starts JupyterLab for the lab. The token is not in it: pass `lab_env(token)` as env.

    `port` is used as is (port_retries=0), so the URL printed before the start is the one that serves.
    `allow_root=None` means: add --allow-root when the effective user is root. `transport`: how kernels talk
    to the server, "tcp" (Jupyter's default, on 127.0.0.1) or "ipc" (see `kernel_transport`).
    """
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
    cmd += _transport_flags(transport)
    if allow_root is None:
        allow_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if allow_root:
        cmd.append("--allow-root")
    return cmd


IPC_PATH_MAX = 100  # bytes: AF_UNIX socket paths hold 104 (macOS) to 108 (Linux), with the terminating NUL


def kernel_transport(connection_dir: str | os.PathLike | None = None) -> str:
    """The kernel transport: "ipc" where kernels can use Unix sockets in `connection_dir` (default: Jupyter's
    runtime dir, as the server will see it from this environment), else "tcp". Each kernel's sockets are
    named `<dir>/kernel-<uuid>-ipc-<n>`; a path past the OS limit would stop every kernel from starting."""
    if os.name != "posix":
        return "tcp"
    if connection_dir is None:
        from jupyter_core.paths import jupyter_runtime_dir

        connection_dir = jupyter_runtime_dir()
    longest = os.path.join(os.fspath(connection_dir), f"kernel-{'0' * 36}-ipc-99999")
    return "ipc" if len(os.fsencode(longest)) <= IPC_PATH_MAX else "tcp"


def _transport_flags(transport: str) -> list[str]:
    if transport not in ("tcp", "ipc"):
        raise ValueError(f"kernel transport must be 'tcp' or 'ipc', got {transport!r}")
    return ["--KernelManager.transport=ipc"] if transport == "ipc" else []


def app_command(
    notebooks_dir: str | os.PathLike,
    port: int,
    *,
    notebook: str | None = None,
    template_dir: str | os.PathLike | None = None,
    transport: str = "tcp",
    python: str | None = None,
) -> list[str]:
    """The argv that serves the lessons as apps with Voila: `notebook` alone (opened at the server's root), or
    with `notebook=None` the whole folder (a list of lessons, each at /voila/render/NAME). The token is not in
    argv: pass `app_env(token, template_dir)` as env; Voila's auto_token takes the token from JUPYTER_TOKEN.
    `template_dir`: lab/jupyter, whose voila/templates/gptviz is Voila's lab template without CDN links.
    `transport`: as in `lab_command`; Voila keeps its kernels' connection files under the temp dir
    (`kernel_transport(tempfile.gettempdir())` says whether IPC fits there)."""
    root = Path(notebooks_dir).resolve()
    target = root / notebook if notebook else root
    template = ["--VoilaConfiguration.template=gptviz"] if template_dir is not None else []
    return [
        python or sys.executable,
        "-m",
        "voila",
        str(target),
        f"--Voila.ip={HOST}",
        f"--Voila.port={int(port)}",
        "--Voila.port_retries=0",
        f"--Voila.root_dir={root}",
        "--Voila.auto_token=True",  # with JUPYTER_TOKEN set, the token is ours; never an open server
        # Voila would open its root URL without the token (a login page); `gptviz lab --app` opens the browser
        "--Voila.open_browser=False",
        "--VoilaConfiguration.strip_sources=True",  # outputs and widgets only
        "--VoilaConfiguration.show_tracebacks=True",  # a teacher sees what failed, not just "error"
        *template,
        *_transport_flags(transport),
    ]


def app_template_dir(notebooks_dir: Path) -> Path | None:
    """lab/jupyter beside notebooks/ when it holds the offline Voila template, else None."""
    path = notebooks_dir.resolve().parent / "lab" / "jupyter"
    return path if (path / "voila" / "templates" / "gptviz" / "index.html.j2").is_file() else None


def app_env(token: str, template_dir: str | os.PathLike | None = None, base: dict[str, str] | None = None) -> dict:
    """`lab_env`, plus `template_dir` first on JUPYTER_PATH so Voila finds the gptviz template there."""
    env = lab_env(token, base)
    if template_dir is not None:
        first = str(Path(template_dir).resolve())
        env["JUPYTER_PATH"] = os.pathsep.join(p for p in (first, env.get("JUPYTER_PATH")) if p)
    return env


def app_url(port: int, token: str) -> str:
    """Where app mode serves: the one lesson at the root, or the list of lessons."""
    return f"http://{HOST}:{port}/?token={token}"


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
