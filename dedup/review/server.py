"""Serving the review app with uvicorn on a loopback port, in the foreground (the CLI) or in a thread (tests,
notebooks): a :class:`dedup.webserver.AppServer` whose app is the review's, with a random token in its URL.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from dedup.config import Config
from dedup.review.app import create_app
from dedup.review.state import ReviewState
from dedup.webserver import LOOPBACK, AppServer, is_loopback

__all__ = ["LOOPBACK", "ReviewServer", "is_loopback"]


class ReviewServer(AppServer):
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
        super().__init__(
            lambda hosts: create_app(
                state, token=self.token, config=config, quarantine=quarantine, hosts=hosts
            ),
            host=host,
            port=port,
            name="review",
        )

    @property
    def url(self) -> str:
        """The page's address, with the token."""
        return f"{self.base_url}/?token={self.token}"

    def start(self, timeout: float = 30.0) -> str:
        """Serve in a background thread; returns :attr:`url` once the server answers.

        Raises:
            InputError: the server did not start within ``timeout`` seconds.
        """
        super().start(timeout)
        return self.url

    def __enter__(self) -> ReviewServer:
        self.start()
        return self
