"""`gptviz lab`: the command it builds, and a real start of JupyterLab through the CLI a user runs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from gptviz import launcher, paths
from gptviz.commands.lab import cli as lab_cli

REPO = Path(__file__).resolve().parents[1]


def _flag(cmd: list[str], name: str) -> str | None:
    """The value of `--name=value` in cmd, or None."""
    for arg in cmd:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


# ------------------------------------------------------------------------------------------- the command


def test_command_binds_localhost_is_offline_and_opens_the_tour(tmp_path):
    cmd = launcher.lab_command(tmp_path, 8899, overrides_dir=tmp_path, allow_root=False)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    assert _flag(cmd, "ServerApp.ip") == "127.0.0.1"
    assert _flag(cmd, "ServerApp.port") == "8899"
    assert _flag(cmd, "ServerApp.port_retries") == "0"  # the printed URL is the one that serves
    assert _flag(cmd, "ServerApp.root_dir") == str(tmp_path.resolve())
    assert _flag(cmd, "LabApp.default_url") == "/lab/tree/00_tour.ipynb"
    assert _flag(cmd, "LabApp.news_url") == "None"
    assert _flag(cmd, "LabApp.check_for_updates_class") == "jupyterlab.NeverCheckForUpdate"
    assert _flag(cmd, "LabApp.extension_manager") == "readonly"
    assert _flag(cmd, "LabApp.app_settings_dir") == str(tmp_path.resolve())
    assert "--allow-root" not in cmd
    assert _flag(cmd, "ServerApp.open_browser") == "True"
    no_browser = launcher.lab_command(tmp_path, 8899, open_browser=False)
    assert _flag(no_browser, "ServerApp.open_browser") == "False"
    assert _flag(no_browser, "LabApp.app_settings_dir") is None


def test_token_is_required_and_travels_in_the_environment_not_argv(tmp_path):
    cmd = launcher.lab_command(tmp_path, 8899)
    # nothing in argv may disable or reveal the token (argv is readable by every local user)
    assert not any(re.match(r"--\w+\.(token|password)", arg, re.I) for arg in cmd), cmd
    env = launcher.lab_env("s3cret-token", base={"PATH": "/bin"})
    assert env["JUPYTER_TOKEN"] == "s3cret-token" and env["PATH"] == "/bin"
    with pytest.raises(ValueError, match="non-empty token"):
        launcher.lab_env("")
    assert (
        launcher.lab_url(8899, "abc", "01_attention.ipynb")
        == "http://127.0.0.1:8899/lab/tree/01_attention.ipynb?token=abc"
    )


def test_allow_root_follows_the_effective_user(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    assert "--allow-root" in launcher.lab_command(tmp_path, 1)
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    assert "--allow-root" not in launcher.lab_command(tmp_path, 1)


def test_notebooks_dir_is_found_from_the_package_and_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("GPTVIZ_ROOT", raising=False)
    assert launcher.find_notebooks_dir(tmp_path) == REPO / "notebooks"
    # an install without a checkout beside it, run from an empty folder
    monkeypatch.setattr(paths, "package_checkout", lambda: tmp_path / "site")
    with pytest.raises(FileNotFoundError, match="GPTVIZ_ROOT") as err:
        launcher.find_notebooks_dir(tmp_path)
    assert str(tmp_path / "notebooks") in str(err.value)
    # ... but from a checkout's root, or from inside notebooks/, it is found
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "00_tour.ipynb").write_text("{}")
    assert launcher.find_notebooks_dir(tmp_path) == tmp_path / "notebooks"
    assert launcher.find_notebooks_dir(tmp_path / "notebooks") == tmp_path / "notebooks"
    monkeypatch.setenv("GPTVIZ_ROOT", str(tmp_path))
    assert launcher.find_notebooks_dir("/") == tmp_path / "notebooks"


def test_unknown_notebook_names_the_closest_one(tmp_path):
    for name in ("00_tour.ipynb", "01_attention.ipynb"):
        (tmp_path / name).write_text("{}")
    assert launcher.check_notebook(tmp_path, "01_attention") == "01_attention.ipynb"
    with pytest.raises(ValueError, match="Did you mean 01_attention.ipynb"):
        launcher.check_notebook(tmp_path, "01_atention.ipynb")


def test_repo_settings_overrides_keep_cells_in_the_dom_and_stay_offline():
    overrides = json.loads((REPO / "lab" / "jupyter" / "overrides.json").read_text())
    assert overrides["@jupyterlab/notebook-extension:tracker"]["windowingMode"] == "none"
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert overrides["@jupyterlab/apputils-extension:notification"]["checkForUpdates"] is False
    assert launcher.settings_dir(REPO / "notebooks") == REPO / "lab" / "jupyter"


def test_cli_refuses_a_busy_port(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert lab_cli(["--no-browser", "--port", str(busy)]) == 2
    assert f"port {busy}" in capsys.readouterr().err


def test_cli_unknown_notebook_is_a_clear_error(capsys):
    assert lab_cli(["--no-browser", "--notebook", "99_nope.ipynb"]) == 2
    assert "Available:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- a real start


def _get(url: str) -> tuple[int, dict, bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def isolated_jupyter_env(tmp_path: Path) -> dict[str, str]:
    """Jupyter's config/data/runtime/settings/workspaces dirs in tmp_path, so a test never sees a user's."""
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ]:
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(tmp_path / sub)
    env.pop("JUPYTER_TOKEN", None)
    return env


@pytest.mark.timeout(180)
def test_gptviz_lab_really_starts_behind_its_token(tmp_path):
    port = launcher.free_port(None)
    out, err = open(tmp_path / "stdout.txt", "wb"), open(tmp_path / "stderr.txt", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptviz", "lab", "--no-browser", "--port", str(port)],
        cwd=tmp_path,
        env=isolated_jupyter_env(tmp_path),
        stdout=out,
        stderr=err,
        start_new_session=True,
    )  # its own process group, stopped as one below

    def logs() -> str:
        return (tmp_path / "stdout.txt").read_text() + (tmp_path / "stderr.txt").read_text()[-4000:]

    try:
        url = None
        status = None
        while time.monotonic() - t0 < 120:
            assert proc.poll() is None, f"gptviz lab exited early ({proc.returncode}):\n{logs()}"
            if url is None:
                m = re.search(r"http://127\.0\.0\.1:(\d+)/lab/tree/00_tour\.ipynb\?token=(\S+)", logs())
                if m:
                    url, token = m.group(0), m.group(2)
                    assert int(m.group(1)) == port
            if url is not None:
                try:
                    status, _, body = _get(f"http://127.0.0.1:{port}/api/status?token={token}")
                except (urllib.error.URLError, ConnectionError, OSError):
                    status = None
                if status == 200:
                    break
            time.sleep(0.25)  # polling a server that is starting: nothing to wait on but the socket
        assert status == 200, f"no 200 from /api/status within 120 s:\n{logs()}"
        started = time.monotonic() - t0
        assert len(token) >= 24

        assert _get(f"http://127.0.0.1:{port}/api/status")[0] == 403  # no token: refused
        assert _get(f"http://127.0.0.1:{port}/api/status?token=wrong{token}")[0] == 403
        assert _get(f"http://127.0.0.1:{port}/api/contents?token=wrong")[0] == 403

        # it serves the notebooks folder, opens on the tour, with the lab's settings overrides
        code, _, body = _get(f"http://127.0.0.1:{port}/api/contents?token={token}")
        assert code == 200
        names = {item["name"] for item in json.loads(body)["content"]}
        assert "00_tour.ipynb" in names and "01_attention.ipynb" in names
        code, headers, _ = _get(f"http://127.0.0.1:{port}/?token={token}")
        assert code in (301, 302) and urlparse(headers["Location"]).path.endswith("/lab/tree/00_tour.ipynb")
        code, _, body = _get(
            f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/notebook-extension:tracker?token={token}"
        )
        assert code == 200
        assert json.loads(body)["schema"]["properties"]["windowingMode"]["default"] == "none"
        print(f"gptviz lab: start -> /api/status 200 in {started:.1f} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        out.close()
        err.close()
    assert proc.returncode is not None
    with socket.socket() as s:  # nothing listens there any more (TIME_WAIT connections may remain)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
