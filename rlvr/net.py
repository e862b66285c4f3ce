"""Finding a free TCP port (the Ray head, the API server, the NCCL weight-sync group, tests)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", preferred: int = 0) -> int:
    """``preferred`` if it is free on ``host``, else any free port (``""``: all interfaces)."""
    with socket.socket() as s:
        try:
            s.bind((host, preferred))
        except OSError:
            s.bind((host, 0))
        return s.getsockname()[1]
