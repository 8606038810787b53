"""Loopback ports for embedded services."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now. Another process may take it before we bind it, so
    whoever starts a server on it must be ready to retry with a fresh one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts_connections(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
