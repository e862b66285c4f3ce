"""Run the app under uvicorn in a background thread (``rlvr demo``, tests, notebooks)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from rlvr.net import free_port


class BackgroundServer:
    """A real uvicorn server for ``app`` on ``host:port``, in a daemon thread.

    with BackgroundServer(create_app(settings)) as server:
        httpx.get(server.url + "/healthz")
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ):
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=self.port, log_level=log_level)
        )
        self._thread = threading.Thread(target=self._server.run, name="rlvr-serve", daemon=True)

    def start(self, timeout_s: float = 60.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start in {timeout_s:.0f}s")
            time.sleep(0.05)
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Graceful shutdown (runs the app's lifespan exit: the runner stops)."""
        self._server.should_exit = True
        self._thread.join(timeout=timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
