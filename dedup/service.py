"""The HTTP API of a saved index (``dedup serve --index DIR``): FastAPI, served by
:class:`dedup.webserver.AppServer` (uvicorn on a pre-bound socket, loopback unless told otherwise).

Routes:

- ``POST /assign`` -- one uploaded image (``multipart/form-data`` field ``file``, or the raw bytes as the
  body), ``?embedding=true`` for the vectors: the :class:`dedup.saved_index.Assignment` as JSON (``path`` is
  the upload's file name). The upload is at most ``max_upload`` bytes (413 beyond, checked while it is read)
  and decoded like a scanned file (decompression bombs, truncated or non-image bytes: 422).
- ``GET /similar?path=P&k=10`` -- the indexed images most similar to the indexed image ``P``.
- ``GET /health`` -- ``{"status": "ok"}`` and what the index holds (no token needed).
- ``GET /docs`` (Swagger UI), ``GET /openapi.json`` -- the API's documentation (no token needed).

With a token, ``/assign`` and ``/similar`` need it as ``Authorization: Bearer TOKEN`` or ``X-Dedup-Token``.
A request whose ``Host`` is not the server's own address is refused (DNS rebinding), unless the server
listens on a wildcard address. Every error is a 4xx JSON ``{"error": ...}``; the server keeps running.
"""

from __future__ import annotations

import hmac
import os
import re
import tempfile
import threading
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dedup import __version__
from dedup.errors import DedupError
from dedup.saved_index import Index
from dedup.webserver import LOOPBACK, AppServer

#: Largest upload accepted by default (bytes).
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
HEADER = "x-dedup-token"
OPEN_PATHS = frozenset({"/health", "/docs", "/openapi.json", "/docs/oauth2-redirect"})
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


class _TooLarge(Exception):
    pass


def error(status: int, message: str) -> JSONResponse:
    """The JSON error every failing request gets."""
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (``_TooLarge``) as soon as more than ``limit`` bytes arrived."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _one_file(request: Request, body: bytes, limit: int) -> tuple[bytes, str]:
    """``(bytes, file name)`` of the upload: the multipart field ``file``, or the raw body."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        return body, request.query_params.get("name") or "upload"
    try:
        from starlette.formparsers import MultiPartException, MultiPartParser
    except ImportError as e:  # pragma: no cover - python-multipart is part of dedup[serve]
        raise DedupError("multipart uploads need python-multipart (pip install 'dedup[serve]')") from e

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(
            request.headers, stream(), max_files=1, max_fields=8, max_part_size=limit
        ).parse()
    except (MultiPartException, AssertionError, ImportError) as e:
        raise DedupError(f"bad multipart upload: {e}") from e
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise DedupError("the multipart upload has no file field named 'file'")
    try:
        return await upload.read(), upload.filename or "upload"
    finally:
        await upload.close()


def _safe_name(name: str) -> str:
    """A file name for the temporary copy of an upload (its extension kept when it is plain)."""
    base = os.path.basename(name.replace("\\", "/")) or "upload"
    suffix = Path(base).suffix.lower()
    return "upload" + (suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else "")


def create_app(
    index: Index,
    *,
    token: str | None = None,
    hosts: Sequence[str] = (),
    max_upload: int = DEFAULT_MAX_UPLOAD,
    novel_distance: float | None = None,
) -> FastAPI:
    """The HTTP API of ``index`` (see the module docstring).

    Args:
        index: the loaded index (answers are serialised: one image at a time).
        token: the secret ``/assign`` and ``/similar`` need, or None for none.
        hosts: the ``Host`` header values accepted; empty = any.
        max_upload: largest upload in bytes.
        novel_distance: a fixed novel threshold instead of each cluster's radius.
    """
    app = FastAPI(
        title="dedup",
        version=__version__,
        description="Assign new images to the duplicate groups and named clusters of a saved dedup index.",
    )
    allowed_hosts = frozenset(h.lower() for h in hosts)
    lock = threading.Lock()

    def token_ok(request: Request) -> bool:
        if token is None:
            return True
        auth = request.headers.get("authorization", "")
        given = [request.headers.get(HEADER), auth[7:] if auth.lower().startswith("bearer ") else None]
        return any(g is not None and hmac.compare_digest(g.encode(), token.encode()) for g in given)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        host = (request.headers.get("host") or "").lower()
        if allowed_hosts and host not in allowed_hosts:
            return error(400, "this server only answers requests addressed to its own address")
        if request.url.path not in OPEN_PATHS and not token_ok(request):
            return error(401, "missing or wrong token (Authorization: Bearer TOKEN or X-Dedup-Token)")
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail) if exc.status_code != 404 else "not found")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error(422, f"bad request: {where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(DedupError)
    async def dedup_error(request: Request, exc: DedupError) -> JSONResponse:
        return error(400, str(exc))

    @app.get("/health")
    def health() -> dict[str, Any]:
        """The server runs; what the index holds."""
        return {"status": "ok", **index.info()}

    def answer(data: bytes, name: str, embedding: bool) -> JSONResponse:
        with tempfile.TemporaryDirectory(prefix="dedup-upload-") as tmp:
            path = Path(tmp) / _safe_name(name)
            path.write_bytes(data)
            with lock:
                result = index.assign([path], embedding=embedding, novel_distance=novel_distance, cache=False)
        if not result.assignments:
            reason = result.skipped[0].reason if result.skipped else "not an image"
            return error(422, f"cannot use the upload: {reason}")
        body = result.assignments[0].to_dict()
        body["path"] = name
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.post("/assign", openapi_extra={"requestBody": _UPLOAD_BODY})
    async def assign(request: Request, embedding: bool = False) -> Response:
        """Assign one uploaded image: duplicate_of (the kept image and the evidence), the nearest cluster,
        its distance to the centre, novel, and with ``embedding=true`` the vectors."""
        try:
            body = await _read_limited(request, max_upload)
        except _TooLarge:
            return error(413, f"the upload is larger than {max_upload} bytes")
        data, name = await _one_file(request, body, max_upload)
        if not data:
            return error(400, "the upload is empty")
        if len(data) > max_upload:
            return error(413, f"the upload is larger than {max_upload} bytes")
        return await run_in_threadpool(answer, data, name, embedding)

    @app.get("/similar")
    def similar(path: str, k: int = 10) -> JSONResponse:
        """The ``k`` indexed images most similar to the indexed image ``path``."""
        if not 1 <= k <= 1000:
            return error(422, "k must be between 1 and 1000")
        with lock:
            if index.row_of(path) is None:
                return error(404, f"{path} is not in the index")
            matches = index.similar(path, k)
        return JSONResponse({"path": os.path.abspath(path), "matches": matches})

    return app


class IndexServer(AppServer):
    """The API of ``index`` on ``host:port`` (bound at construction; port 0 = a free one), in the foreground
    (:meth:`serve_forever`) or a thread (:meth:`start` / :meth:`stop`, or ``with``).

    Raises:
        InputError: the address cannot be bound.
    """

    def __init__(
        self,
        index: Index,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        token: str | None = None,
        max_upload: int = DEFAULT_MAX_UPLOAD,
        novel_distance: float | None = None,
    ) -> None:
        self.index = index
        self.token = token
        super().__init__(
            lambda hosts: create_app(
                index, token=token, hosts=hosts, max_upload=max_upload, novel_distance=novel_distance
            ),
            host=host,
            port=port,
            name="serve",
        )
