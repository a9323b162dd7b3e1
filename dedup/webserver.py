"""uvicorn on a socket bound before it starts, in the foreground (the CLI) or in a thread (tests, notebooks):
shared by the review page (:mod:`dedup.review.server`) and the assign service (:mod:`dedup.service`).

The socket is bound at construction (port 0 = a free port chosen by the OS), so the address is known at once
and no other process can take the port in between. Loopback unless told otherwise; the ``Host`` header
values a request may carry (DNS rebinding) come from :meth:`AppServer.hosts`. Nothing here prints: uvicorn's
own logging is left unconfigured (its loggers stay silent below WARNING) and access logs are off.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from dedup.errors import InputError

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0 = a free port).

    Raises:
        InputError: the address cannot be bound (in use, not an address of this machine).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(64)
    return sock


class AppServer:
    """An ASGI app on ``host:port``, bound at construction.

    Args:
        make_app: called once with the accepted ``Host`` header values (see :meth:`hosts`) to build the app.
        host: address to listen on (loopback unless told otherwise).
        port: port; 0 = a free one.
        name: the thread's name and what "did not start" errors call the server.

    Raises:
        InputError: the address cannot be bound.
    """

    def __init__(
        self,
        make_app: Callable[[list[str]], Any],
        *,
        host: str = LOOPBACK,
        port: int = 0,
        name: str = "dedup",
    ) -> None:
        self.socket = bind(host, port)
        self.host = host
        self.port = int(self.socket.getsockname()[1])
        self.name = name
        self.app = make_app(self.hosts())
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def hosts(self) -> list[str]:
        """``Host`` header values a request may carry: this address or a loopback one with the port; empty
        (any) for a wildcard address (``0.0.0.0``, ``::``), where every address of the machine can be
        right."""
        if self.host in ("0.0.0.0", "::"):
            return []
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return [
            f"{shown}:{self.port}",
            f"127.0.0.1:{self.port}",
            f"localhost:{self.port}",
            f"[::1]:{self.port}",
        ]

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

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
        """Serve in a background thread; returns :attr:`base_url` once the server answers.

        Raises:
            InputError: the server did not start within ``timeout`` seconds.
        """
        server = self._make()
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self.socket]}, name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise InputError(f"the {self.name} server did not start on {self.base_url}")
            time.sleep(0.02)
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start` (wait at most ``timeout`` seconds), close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.socket.close()

    def __enter__(self) -> AppServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
