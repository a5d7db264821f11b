"""`gptviz lab`: the command it builds, and a real start of JupyterLab through the CLI a user runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
    assert _flag(cmd, "KernelManager.transport") is None  # Jupyter's default (TCP on 127.0.0.1) unless asked
    ipc = launcher.lab_command(tmp_path, 8899, transport="ipc")
    assert _flag(ipc, "KernelManager.transport") == "ipc"
    with pytest.raises(ValueError, match="'tcp' or 'ipc'"):
        launcher.lab_command(tmp_path, 8899, transport="udp")
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


def test_kernels_use_ipc_where_a_socket_path_fits(tmp_path):
    """IPC (no TCP port, no "Kernel is running over TCP without encryption") unless the runtime dir is so long
    that `<dir>/kernel-<uuid>-ipc-<n>` would pass the OS limit on socket paths, where no kernel could start."""
    if os.name != "posix":
        assert launcher.kernel_transport("/tmp") == "tcp"
        return
    assert launcher.kernel_transport("/tmp/gv") == "ipc"
    assert launcher.kernel_transport("/tmp/" + "x" * 80) == "tcp"
    assert launcher.kernel_transport() in ("ipc", "tcp")  # Jupyter's runtime dir of this environment


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


def _request(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request, redirects not followed."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _login_cookie(port: int, token: str) -> str:
    """The session cookie the server sets when a browser opens the URL with the token."""
    _, headers, _ = _request(f"http://127.0.0.1:{port}/lab?token={token}")
    cookies = [v.split(";")[0] for k, v in headers.items() if k.lower() == "set-cookie"]
    jar = urllib.request.HTTPCookieProcessor()
    opener = urllib.request.build_opener(jar)
    with opener.open(f"http://127.0.0.1:{port}/lab?token={token}", timeout=60):
        pass
    cookies = [f"{c.name}={c.value}" for c in jar.cookiejar] or cookies
    assert any(c.startswith("username-") for c in cookies), cookies
    return "; ".join(cookies)


def _process_tree(pid: int, wait_for_kernel: bool = False) -> tuple[set[int], set[int]]:
    """(every pid under `pid`, the kernels' pids); waits up to 60 s for a kernel when asked."""
    psutil = pytest.importorskip("psutil")
    deadline = time.monotonic() + 60
    while True:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        kernels = {p.pid for p in procs if "ipykernel" in " ".join(_cmdline(psutil, p))}
        if kernels or not wait_for_kernel or time.monotonic() > deadline:
            return {p.pid for p in procs}, kernels
        time.sleep(0.2)  # the kernel process is being spawned


def _cmdline(psutil, proc) -> list[str]:
    """A process's command line; [] for one that has just exited (a zombie until its parent reaps it) or gone."""
    try:
        return proc.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []


def _connection_info(pid: int) -> dict:
    """A kernel's connection file (`-f FILE` on its command line), read once it is written."""
    psutil = pytest.importorskip("psutil")
    argv = psutil.Process(pid).cmdline()
    path = Path(argv[argv.index("-f") + 1])
    return json.loads(path.read_text())


def _listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, address) of every listening TCP socket these processes own."""
    psutil = pytest.importorskip("psutil")
    return [
        (c.pid, c.laddr.ip)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


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
    env = isolated_jupyter_env(tmp_path)
    # a short runtime dir, as a user's ~/.local/share/jupyter/runtime is: pytest's tmp_path is too long for IPC
    runtime = tempfile.mkdtemp(prefix="gv-", dir="/tmp" if os.name == "posix" else None)
    env["JUPYTER_RUNTIME_DIR"] = runtime
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptviz", "lab", "--no-browser", "--port", str(port)],
        cwd=tmp_path,
        env=env,
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

        # a kernel, started as the browser starts one: its channels are Unix sockets (IPC), and nothing of the
        # server or the kernel listens beyond 127.0.0.1
        code, _, body = _request(f"http://127.0.0.1:{port}/api/kernels?token={token}", "POST", b"{}")
        assert code == 201, body
        kernel_id = json.loads(body)["id"]
        pids, kernels = _process_tree(proc.pid, wait_for_kernel=True)
        assert kernels, "no kernel process started"
        for pid in kernels:
            info = _connection_info(pid)
            if os.name == "posix":
                assert info["transport"] == "ipc", info
        listening = _listening(pids)
        assert listening and all(ip == "127.0.0.1" for _, ip in listening), listening

        # another origin is refused, even with the session cookie a browser would hold after logging in
        cookie = _login_cookie(port, token)
        api = f"http://127.0.0.1:{port}/api/kernels/{kernel_id}"
        same = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
        assert _request(api, headers=same)[0] == 200  # the lab's own page
        assert _request(api, headers={"Cookie": cookie, "Origin": "http://evil.example"})[0] in (403, 404)
        assert _request(api, headers={"Origin": f"http://127.0.0.1:{port}"})[0] == 403  # no cookie, no token
        assert "Kernel is running over TCP" not in logs() or os.name != "posix"
        print(f"gptviz lab: start -> /api/status 200 in {started:.1f} s; listening {listening}")
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
        shutil.rmtree(runtime, ignore_errors=True)
    assert proc.returncode is not None
    with socket.socket() as s:  # nothing listens there any more (TIME_WAIT connections may remain)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
