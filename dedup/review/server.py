"""Serving the review app with uvicorn on a loopback port, in the foreground (the CLI) or in a thread (tests,
notebooks).

The socket is bound before the server starts (port 0 = a free port chosen by the OS), so the URL with its
token is known at once and no other process can take the port in between. Nothing here prints: uvicorn's
own logging is left unconfigured (its loggers stay silent below WARNING) and access logs are off.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from dedup.config import Config
from dedup.errors import InputError
from dedup.review.app import create_app
from dedup.review.state import ReviewState

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReviewServer:
    """The review app of ``state`` on ``host:port``, bound at construction.

    Args:
        state: the review.
        config: the configuration the quarantine action prunes with.
        quarantine: the quarantine folder the page proposes.
        host: address to listen on (loopback unless told otherwise). Requests must name this address or
            a loopback one in their ``Host`` header, except for a wildcard (``0.0.0.0``, ``::``).
        port: port; 0 = a free one.
        token: the access token (a fresh random one when omitted).

    Raises:
        InputError: the address cannot be bound (in use, not an address of this machine).
    """

    def __init__(
        self,
        state: ReviewState,
        config: Config,
        *,
        quarantine: str | Path,
        host: str = LOOPBACK,
        port: int = 0,
        token: str | None = None,
    ) -> None:
        self.state = state
        self.token = token or secrets.token_urlsafe(24)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as e:
            self.socket.close()
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        self.socket.listen(64)
        self.host = host
        self.port = int(self.socket.getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        hosts = [
            f"{shown}:{self.port}",
            f"127.0.0.1:{self.port}",
            f"localhost:{self.port}",
            f"[::1]:{self.port}",
        ]
        if host in ("0.0.0.0", "::"):  # every address of the machine: any Host header can be right
            hosts = []
        self.app = create_app(state, token=self.token, config=config, quarantine=quarantine, hosts=hosts)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (without the token)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    @property
    def url(self) -> str:
        """The page's address, with the token."""
        return f"{self.base_url}/?token={self.token}"

    def _make(self) -> Any:
        import uvicorn

        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)
        return self._server

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C) or :meth:`stop`."""
        self._make().run(sockets=[self.socket])

    def start(self, timeout: float = 30.0) -> str:
        """Serve in a background thread; returns :attr:`url` once the server answers.

        Raises:
            InputError: the server did not start within ``timeout`` seconds.
        """
        server = self._make()
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self.socket]}, name="dedup-review", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise InputError(f"the review server did not start on {self.base_url}")
            time.sleep(0.02)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start` (wait at most ``timeout`` seconds), close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.socket.close()

    def __enter__(self) -> ReviewServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
