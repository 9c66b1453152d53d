"""Real HTTP servers on 127.0.0.1 for the remote shard tests: `python -m http.server` in a process of
its own (killed as a real server dies), and one in a thread that misbehaves on the files it is told
to (stalls, cuts a download short, fails the first requests)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server_process(directory: Path):
    """`python -m http.server` serving `directory`; yields (base URL, the process)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # up once it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"python -m http.server did not start (exit {proc.poll()})")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.kill()
        proc.wait()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; misbehaves on the names in server.faults:
    "stall": accept, read the request, send nothing (until the server stops);
    "cut": send the headers with the whole length, then half the body, then close;
    "fail_first:N": cut the first N requests of the file short, then serve it whole."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1].split("?", 1)[0]
        fault = self.server.faults.get(name, "")
        self.server.requests[name] = seen = self.server.requests.get(name, 0) + 1
        if fault == "stall":
            self.server.stopping.wait(120)
            self.close_connection = True
            return
        if fault == "cut" or (fault.startswith("fail_first:") and seen <= int(fault.split(":")[1])):
            body = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


class MisbehavingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path, faults: dict[str, str]):
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
        self.faults, self.requests = dict(faults), {}
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def misbehaving_server(directory: Path, faults: dict[str, str] | None = None):
    server = MisbehavingServer(directory, faults or {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_listener():
    """A socket that accepts connections and never answers: yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
