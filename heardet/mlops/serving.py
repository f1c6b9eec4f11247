"""A served heardet model on this machine: ``mlflow models serve`` on a free loopback port,
and the request body that scores audio files on it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from heardet.mlops.store import PROGRESS_BAR_ENV


@contextlib.contextmanager
def served(model_uri: str, timeout_s: float = 240, env: dict | None = None,
           log_path: str | Path | None = None) -> Iterator[int]:
    """Run ``mlflow models serve -m model_uri --env-manager local`` on a free loopback port
    while the block runs; yields the port, stops the server (its process group) after.

    Args:
        model_uri: the model to serve.
        timeout_s: how long to wait for ``/ping`` to answer.
        env: extra environment variables of the server.
        log_path: where the server's output goes (default: a temporary file).

    Raises:
        RuntimeError: the server exited or did not answer ``/ping`` within ``timeout_s``
            (with the tail of its log).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bin_dir = str(Path(sys.executable).parent)  # the server execs uvicorn from PATH
    env = {PROGRESS_BAR_ENV: "false", **os.environ, **(env or {})}  # no bar line per downloaded file
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    with (open(log_path, "w+b") if log_path else tempfile.TemporaryFile()) as log:
        server = subprocess.Popen(
            [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"mlflow models serve did not start:\n{log.read().decode()[-2000:]}")
                    time.sleep(1)
            yield port
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def request_body(paths: Sequence[str | Path]) -> str:
    """The JSON body that scores audio files on a served heardet model (``dataframe_split``,
    one base64 ``audio`` row per file), for ``curl --data-binary @body.json``."""
    rows = [[base64.b64encode(Path(p).read_bytes()).decode("ascii")] for p in paths]
    return json.dumps({"dataframe_split": {"columns": ["audio"], "data": rows}})


def invoke(port: int, body: str, timeout_s: float = 120) -> dict:
    """POST ``body`` to ``/invocations`` on a local server; returns the parsed answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def smoke_request(model_uri: str, clip: Path) -> dict:
    """Serve ``model_uri``, score one clip over REST, return the answer."""
    with served(model_uri) as port:
        return invoke(port, request_body([clip]))
