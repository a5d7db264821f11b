"""`gptviz lab --app LESSON`: a lesson served as an app (Voila) for a projector, checked in a real browser.

One start of the command a teacher runs (`python -m gptviz lab --app 01_attention --no-browser`), then:
the page renders the lesson's outputs and live widgets (ipywidgets and our PlotlyFigure) with no code;
a widget still talks to the kernel (moving a slider redraws the figure); nothing is requested from outside
127.0.0.1; without the token the lesson is not served; another origin cannot open the kernel's websocket
even with the browser's session cookie; and no socket of the server or its kernel listens anywhere but on
127.0.0.1 (the kernel's channels are IPC: Unix sockets, no TCP port). Screenshots go to
tests/artifacts/app/ (and /tmp/app/ when it exists).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from browser_page import CHROMIUM, CHROMIUM_ARGS, _require_browser, _require_default_model
from test_launcher import _get, isolated_jupyter_env

from gptviz import launcher

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts" / "app"
LESSON = "01_attention"  # its attention explorer is a PlotlyFigure with sliders; it renders in ~20 s on 2 cores
RENDER_TIMEOUT_MS = 300_000  # Voila runs the whole lesson before the page is complete; a busy 2-core machine

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_app_command_is_voila_on_localhost_with_the_token_in_the_environment(tmp_path):
    templates = launcher.app_template_dir(REPO / "notebooks")
    assert templates == REPO / "lab" / "jupyter"
    cmd = launcher.app_command(tmp_path, 8899, notebook="01_attention.ipynb", template_dir=templates, transport="ipc")
    assert cmd[:4] == [sys.executable, "-m", "voila", str(tmp_path.resolve() / "01_attention.ipynb")]
    flags = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--"))
    assert flags["Voila.ip"] == "127.0.0.1" and flags["Voila.port"] == "8899"
    assert flags["Voila.auto_token"] == "True" and flags["VoilaConfiguration.strip_sources"] == "True"
    assert flags["VoilaConfiguration.template"] == "gptviz"
    assert not any(re.match(r"--\w+\.(token|password)=", a) for a in cmd)  # argv is readable by local users
    assert flags["KernelManager.transport"] == "ipc"
    env = launcher.app_env("tok", templates, base={"JUPYTER_PATH": "/x"})
    assert env["JUPYTER_TOKEN"] == "tok" and env["JUPYTER_PATH"] == f"{templates}{os.pathsep}/x"
    whole = launcher.app_command(tmp_path, 8899)
    assert whole[3] == str(tmp_path.resolve()) and "--VoilaConfiguration.template=gptviz" not in whole
    assert "--KernelManager.transport=ipc" not in whole  # TCP on 127.0.0.1 unless the caller says IPC fits


def _listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, address) of every listening TCP socket these processes own."""
    psutil = pytest.importorskip("psutil")
    out = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            out.append((c.pid, c.laddr.ip))
    return out


def _tree(pid: int) -> tuple[set[int], set[int]]:
    """(all pids of the process tree, the kernels' pids)."""
    psutil = pytest.importorskip("psutil")
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    kernels = {p.pid for p in procs if "ipykernel" in " ".join(p.cmdline())}
    return {p.pid for p in procs}, kernels


def _connection_info(pid: int) -> dict:
    """The kernel's connection file (`-f FILE` on its command line), read."""
    psutil = pytest.importorskip("psutil")
    argv = psutil.Process(pid).cmdline()
    return json.loads(Path(argv[argv.index("-f") + 1]).read_text())


def _up(url: str) -> bool:
    try:
        return _get(url)[0] in (200, 304)
    except OSError:  # URLError, connection refused: not listening yet
        return False


async def _ws_status(url: str, headers: dict) -> int | str:
    """The HTTP status a websocket handshake gets (101 = opened)."""
    import websockets

    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=20):
            return 101
    except websockets.exceptions.InvalidStatus as e:
        return e.response.status_code


@pytest.mark.timeout(420)
def test_a_lesson_as_an_app_renders_widgets_without_code_offline_and_behind_its_token(tmp_path):
    _require_browser()
    _require_default_model()
    if shutil.which("voila", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("voila is not installed in this Python: `make install` (pyproject lists voila)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = launcher.free_port(None)
    env = isolated_jupyter_env(tmp_path)
    env["OMP_NUM_THREADS"] = "2"
    log_path = tmp_path / "app.log"
    log = open(log_path, "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptviz", "lab", "--app", LESSON, "--no-browser", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def logs() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    try:
        url = token = None
        while time.monotonic() - t0 < 120:
            assert proc.poll() is None, f"gptviz lab --app exited early ({proc.returncode}):\n{logs()}"
            m = re.search(rf"http://127\.0\.0\.1:{port}/\?token=(\S+)", logs())
            if m and url is None:
                url, token = m.group(0), m.group(1)
            if url and _up(f"http://127.0.0.1:{port}/voila/static/voila-style.js"):
                break
            time.sleep(0.25)  # the server is starting: nothing to wait on but its socket
        assert url, f"no URL with a token printed within 120 s:\n{logs()}"
        assert len(token) >= 24

        # no token: the lesson is not served (a redirect to the login page), the API is forbidden
        code, headers, _ = _get(f"http://127.0.0.1:{port}/")
        assert code in (302, 403) and (code == 403 or "/login" in headers.get("Location", "")), code
        assert _get(f"http://127.0.0.1:{port}/voila/api/shutdown/x")[0] == 403
        assert _get(f"http://127.0.0.1:{port}/?token=wrong{token}")[0] in (302, 403)

        outside, errors, sockets = [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "request",
                lambda r: (
                    outside.append(r.url)
                    if not r.url.startswith((f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", "data:", "blob:"))
                    else None
                ),
            )
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.goto(url, timeout=RENDER_TIMEOUT_MS)
            box = page.locator(".widget-vbox", has=page.locator("b", has_text="Attention explorer")).last
            box.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            rendered = time.monotonic() - t0
            # every output is there, no code: no editors, no input prompts, no source text
            assert page.locator(".jp-InputArea-editor, .cm-editor, .jp-InputPrompt:visible").count() == 0
            text = page.inner_text("body")
            assert "default_model(" not in text and "import torch" not in text
            assert page.locator(".js-plotly-plot").count() >= 3 and page.locator(".widget-slider").count() >= 2
            box.scroll_into_view_if_needed()
            box.screenshot(path=str(ARTIFACTS / "01_attention_app.png"))

            # the widget is live: move the head slider, the figure's title follows
            title = box.locator(".js-plotly-plot .gtitle").first
            before = title.text_content()
            head = box.locator(".widget-slider", has=page.locator("label", has_text=re.compile("^head"))).first
            head.locator(".noUi-handle, .slider-handle, [role=slider]").first.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "([el, old]) => el.textContent !== old", arg=[title.element_handle(), before], timeout=60_000
            )
            box.screenshot(path=str(ARTIFACTS / "01_attention_app_head1.png"))
            cookies = {c["name"]: c["value"] for c in page.context.cookies()}
            full = ARTIFACTS / "01_attention_app_page.png"
            page.screenshot(path=str(full))
            browser.close()
        if Path("/tmp/app").is_dir():
            for png in ARTIFACTS.glob("*.png"):
                shutil.copy(png, Path("/tmp/app") / png.name)
        assert not outside, f"the app requested outside 127.0.0.1 (offline classrooms): {outside[:5]}"
        bad = [e for e in errors if "favicon" not in e]
        assert not bad, f"console errors: {bad[:5]}"

        # another origin cannot reach the kernel, even with the session cookie the browser holds
        channel = next(u for u in sockets if "/api/kernels/" in u and "/channels" in u)
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        same = {"Origin": f"http://127.0.0.1:{port}", "Cookie": cookie}
        evil = {"Origin": "http://evil.example", "Cookie": cookie}
        assert asyncio.run(_ws_status(channel.split("?")[0], evil)) == 403
        assert asyncio.run(_ws_status(channel.split("?")[0], {"Origin": f"http://127.0.0.1:{port}"})) == 403
        assert asyncio.run(_ws_status(channel.split("?")[0], same)) == 101  # the same request from the page: open

        # nothing of the server or its kernel listens beyond loopback; the kernel listens on no TCP port at all
        pids, kernels = _tree(proc.pid)
        assert kernels, "no kernel process found under the app server"
        listening = _listening(pids)
        assert listening and all(ip == "127.0.0.1" for _, ip in listening), listening
        if launcher.kernel_transport(tempfile.gettempdir()) == "ipc":  # shell, iopub, stdin, control, hb: Unix sockets
            for pid in kernels:
                info = _connection_info(pid)
                assert info["transport"] == "ipc", info
            # ipykernel's one TCP listener: the IOPub pipe for forked subprocesses, bound to 127.0.0.1 by ipykernel
            # itself (not configurable) and authenticated by a random per-kernel key; no channel is among them
            assert len([ip for pid, ip in listening if pid in kernels]) <= len(kernels)
        print(f"gptviz lab --app {LESSON}: start -> widgets drawn in {rendered:.1f} s; listening {listening}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
    assert "Kernel is running over TCP" not in logs()
