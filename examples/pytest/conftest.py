"""pytest fixtures: the app, and `portico emulate` (Azure Front Door) in front of it.

Copy this file into your own test folder and change `start_app` to start your app. The
Portico binary is `$PORTICO_BIN`, or `portico` on PATH.

Nothing here sleeps to synchronise: the app prints its port once it listens, and the edge
is ready when its admin `/healthz` says 200 and its own listener answers, polled until a
deadline.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PORTICO_BIN = os.environ.get("PORTICO_BIN", "portico")
DEADLINE = 30.0  # seconds, for anything to start


class Process:
    """A child process whose output goes to a file (shown when something fails)."""

    def __init__(self, args, log_path, env=None):
        self.args = args
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def output(self):
        return self.log_path.read_text(errors="replace")

    def exited(self):
        return self.proc.poll() is not None

    def stop(self):
        """SIGINT (Portico's fast stop; SIGTERM would drain first), SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def poll_until(what, check, process, deadline=DEADLINE, every=0.05):
    """Calls `check()` until it returns a true value; fails with `process`'s output if it
    has exited or the deadline passes."""
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        if process.exited():
            raise ProcessExited(f"{process.args[0]} exited while waiting for {what}", process)
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {deadline}s:\n{process.output()}")
        time.sleep(every)


class ProcessExited(AssertionError):
    def __init__(self, message, process):
        super().__init__(f"{message}:\n{process.output()}")
        self.process = process


def http_status(url, method="GET"):
    """The status of `url`, or None when nothing answers yet."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def free_port():
    """A port nothing listens on right now. Portico binds it a moment later; if something
    else took it meanwhile, Portico exits with "cannot listen on" and we retry."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(log_dir):
    """The app under test (here `echo_app.py`), on a port it picks and prints."""
    app = Process([sys.executable, str(HERE / "echo_app.py"), "--port", "0"], log_dir / "app.log")

    def printed_port():
        for line in app.output().splitlines():
            if line.startswith("listening on http://127.0.0.1:"):
                return int(line.rsplit(":", 1)[1])
        return None

    port = poll_until("the app's port", printed_port, app)
    return app, f"http://127.0.0.1:{port}"


class Edge:
    """A running `portico emulate`."""

    def __init__(self, process, port, admin_port):
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"

    def ws_url(self, path):
        return f"ws://127.0.0.1:{self.url.rsplit(':', 1)[1]}{path}"

    def close_tunnels(self, **selection):
        """`POST /tunnels/close`, e.g. `close_tunnels(all=True, how="close")`: a maintenance
        event. Returns the answer, e.g. `{"closed": 1, "how": "close_1001"}`."""
        request = urllib.request.Request(
            f"{self.admin_url}/tunnels/close",
            data=json.dumps(selection).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def access_log_has(self, text, deadline=10.0):
        """Waits until the edge's access log (its stdout) contains `text`."""
        return poll_until(repr(text), lambda: text in self.process.output(), self.process, deadline)


def start_emulate(origin, args, log_dir, attempts=5):
    """`portico emulate --origin ORIGIN ARGS...` on two free ports, once it is ready."""
    for attempt in range(attempts):
        port, admin_port = free_port(), free_port()
        if port == admin_port:
            continue
        process = Process(
            [
                PORTICO_BIN,
                "emulate",
                "--origin",
                origin,
                "--listen",
                f"127.0.0.1:{port}",
                "--admin",
                f"127.0.0.1:{admin_port}",
                *args,
            ],
            log_dir / f"portico-{attempt}.log",
            # emulate writes its configuration under $TMPDIR: keep it with the logs.
            env={**os.environ, "TMPDIR": str(log_dir)},
        )
        edge = Edge(process, port, admin_port)
        try:
            # The admin endpoints, then the edge itself (it listens once the app's first
            # health probe has finished).
            poll_until("/healthz 200", lambda: http_status(f"{edge.admin_url}/healthz") == 200, process)
            poll_until("the edge to answer", lambda: http_status(f"{edge.url}/") is not None, process)
            return edge
        except ProcessExited as e:
            process.stop()
            if "cannot listen on" not in str(e):
                raise
        except BaseException:
            process.stop()
            raise
    raise AssertionError(f"no free ports for portico emulate after {attempts} attempts")


@pytest.fixture(scope="session")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("portico-example")


@pytest.fixture(scope="session")
def app(logs):
    process, url = start_app(logs)
    yield url
    process.stop()


@pytest.fixture(scope="session")
def edge(app, logs):
    """Front Door in front of the app: `/legacy/*` cached, `/chat` a WebSocket route."""
    edge = start_emulate(app, ["--cached", "/legacy/*", "--websocket", "/chat"], logs)
    yield edge
    edge.process.stop()
