"""The review web app (FastAPI): the page, its data, the images of the report, and the decisions.

Routes (``TOKEN`` is the random token of the printed URL):

- ``GET /?token=TOKEN`` -- the page (sets an HttpOnly, SameSite=Strict cookie with the token, named after
  it: two reviews on one machine keep their own).
- ``GET /static/{review.js,review.css,cards.js,cards.css}`` -- the page's own script and styles.
- ``GET /api/state`` -- every group with its members' evidence, the decisions, the counts.
- ``GET /thumb/{path}``, ``GET /file/{path}`` -- a thumbnail / the image itself, for files listed in the
  report's groups only; ``path`` is relative to the folder all of them share.
- ``POST /api/decide`` ``{"action", "group", "path", "groups"}`` -- one decision (:meth:`ReviewState.decide`).
- ``POST /api/quarantine/preview`` ``{"to"}`` -- what "Move duplicates to quarantine" would move.
- ``POST /api/quarantine`` ``{"to", "confirm": true}`` -- the same journaled prune as ``dedup prune
  --from-report REVIEWED --to QUARANTINE``; returns the manifest and the ``dedup undo`` command.

Security: every route but the static files needs the token (cookie, ``X-Dedup-Token`` header or
``?token=``); state-changing ``POST`` routes need it in the ``X-Dedup-Token`` header (a cross-site form or
image cannot set it). A request whose ``Host`` is not the server's own address is refused (DNS rebinding).
A file path that is absolute, contains ``..``/``.``/backslashes/NUL, is not listed in the report, or
resolves (symbolic links followed) outside the scanned folders gets 404, whatever its encoding. The page
carries a Content-Security-Policy that allows nothing but this server. Bad requests get a 4xx JSON
``{"error": ...}``; nothing is ever deleted from the page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import shlex
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from dedup.config import Config
from dedup.errors import DedupError
from dedup.keep import in_reference
from dedup.report.html import member_data, shared_assets
from dedup.review.state import ReviewState

COOKIE = "dedup_review_token"
HEADER = "x-dedup-token"
THUMB_SIZE = 240  # longest side of the page's thumbnails
VIEW_SIZE = 2048  # images the browser cannot show (TIFF, PPM...) are sent as a JPEG of at most this side
THUMB_CACHE = 4096  # thumbnails kept in memory
BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC = {
    "review.js": "application/javascript; charset=utf-8",
    "review.css": "text/css; charset=utf-8",
    "cards.js": "application/javascript; charset=utf-8",
    "cards.css": "text/css; charset=utf-8",
}


class Decision(BaseModel):
    action: str
    group: int | None = None
    path: str | None = None
    groups: list[int] = []


class Quarantine(BaseModel):
    to: str | None = None
    confirm: bool = False


class Files:
    """The images the app may serve: every member of the report's groups, addressed by its path relative
    to the folder they all share, and only while it resolves inside the scanned folders."""

    def __init__(self, state: ReviewState) -> None:
        paths = sorted({os.path.normpath(m.path) for g in state.source.groups for m in g.members})
        self.listed = frozenset(paths)
        folders = sorted({os.path.dirname(p) for p in paths})
        try:
            self.base = os.path.commonpath(folders) if folders else "/"
        except ValueError:  # pragma: no cover - mixed drives on Windows
            self.base = "/"
        roots = [p for p in state.source.paths] or [self.base]
        self.roots = tuple(os.path.realpath(r if os.path.isdir(r) else os.path.dirname(r)) for r in roots)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.base)

    def url(self, kind: str, path: str) -> str:
        return f"/{kind}/" + quote(self.rel(path), safe="/")

    def resolve(self, rel: str) -> str | None:
        """The listed file ``rel`` names, or None (absolute, traversal, unlisted, outside, not a file)."""
        if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
            return None
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return None
        path = os.path.normpath(os.path.join(self.base, *parts))
        if path not in self.listed:
            return None
        real = os.path.realpath(path)
        if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots):
            return None
        return path if os.path.isfile(real) else None


def _page() -> str:
    return files("dedup.review").joinpath("page.html").read_text(encoding="utf-8")


def _static(name: str) -> str:
    if name in ("cards.js", "cards.css"):
        js, css = shared_assets()
        return js if name == "cards.js" else css
    return files("dedup.review").joinpath(name).read_text(encoding="utf-8")


def create_app(
    state: ReviewState,
    *,
    token: str,
    config: Config,
    quarantine: str | os.PathLike[str],
    hosts: Sequence[str] = (),
) -> FastAPI:
    """The review app of ``state``.

    Args:
        state: the review (its decisions are saved by every ``POST /api/decide``).
        token: the secret every request must carry (see the module docstring).
        config: the configuration "Move duplicates to quarantine" prunes with (its reference folders).
        quarantine: the quarantine folder the page proposes.
        hosts: the ``Host`` header values accepted (``127.0.0.1:PORT``...); empty = any (tests only).
    """
    app = FastAPI(title="dedup review", docs_url=None, redoc_url=None, openapi_url=None)
    served = Files(state)
    lock = threading.Lock()
    thumbs: OrderedDict[str, bytes | None] = OrderedDict()
    thumbs_lock = threading.Lock()
    allowed_hosts = frozenset(h.lower() for h in hosts)
    default_quarantine = str(Path(quarantine).expanduser().absolute())

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})

    # one cookie per server (by its token), so two reviews on one host (other ports) never clash
    cookie = f"{COOKIE}_{hashlib.sha256(token.encode()).hexdigest()[:12]}"

    def token_ok(request: Request, *, header_only: bool = False) -> bool:
        given = [request.headers.get(HEADER)]
        if not header_only:
            given += [request.cookies.get(cookie), request.query_params.get("token")]
        return any(g is not None and hmac.compare_digest(g.encode(), token.encode()) for g in given)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        host = (request.headers.get("host") or "").lower()
        if allowed_hosts and host not in allowed_hosts:
            return error(400, "this server only answers requests addressed to its own loopback address")
        if request.url.path.startswith("/static/"):
            return await call_next(request)
        if request.method == "POST":
            if not token_ok(request, header_only=True):
                return error(403, "missing or wrong token (the X-Dedup-Token header)")
        elif not token_ok(request):
            if request.url.path == "/":
                return HTMLResponse(
                    "<!DOCTYPE html><title>dedup review</title><p>Open the address <code>dedup review</code> "
                    "printed: it carries the access token.</p>",
                    status_code=403,
                    headers={"Content-Security-Policy": PAGE_CSP},
                )
            return error(403, "missing or wrong token")
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail) if exc.status_code != 404 else "not found")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(422, f"bad request: {where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(DedupError)
    async def dedup_error(request: Request, exc: DedupError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        text = _page().replace("{{TOKEN}}", token).replace("{{TITLE}}", _escape(str(state.source_path)))
        response = HTMLResponse(
            text, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"}
        )
        response.set_cookie(cookie, token, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:
            return error(404, "not found")
        return Response(_static(name), media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    def group_view(gid: int) -> dict[str, Any]:
        group = state.groups[gid]
        d = state.decisions[gid]
        keep = state.keep_of(gid)
        members = []
        for m in group.members:
            data = member_data(m)
            data["thumb"] = served.url("thumb", m.path)
            data["file"] = served.url("file", m.path)
            data["not_duplicate"] = m.path in d.not_duplicate
            data["reference"] = in_reference(m.path, state.reference)
            members.append(data)
        members.sort(key=lambda m: m["path"] != keep)
        return {"id": gid, "keep": keep, "scan_keep": group.keep, "status": d.status, "members": members}

    def summary() -> dict[str, Any]:
        return {
            "counts": state.counts(),
            "output": str(state.output),
            "source": str(state.source_path),
            "ignore_file": None if state.ignore is None else str(state.ignore.path),
        }

    @app.get("/api/state")
    def api_state() -> JSONResponse:
        with lock:
            body = {
                **summary(),
                "base": served.base,
                "reference": list(state.reference),
                "quarantine": default_quarantine,
                "notes": list(state.notes),
                "groups": [group_view(gid) for gid in state.groups],
            }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.post("/api/decide")
    def decide(decision: Decision) -> JSONResponse:
        with lock:
            changed = state.decide(decision.action, decision.group, decision.path, decision.groups)
            body = {**summary(), "groups": [group_view(gid) for gid in changed]}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def prune(request: Quarantine, *, dry_run: bool) -> Any:
        from dedup import curate

        to = Path(request.to).expanduser() if request.to else Path(default_quarantine)
        if not to.is_absolute():
            return error(400, f"give the quarantine folder as an absolute path, not {request.to!r}")
        return curate.prune(None, config, to=to, from_report=state.output, dry_run=dry_run)

    @app.post("/api/quarantine/preview")
    def quarantine_preview(request: Quarantine) -> JSONResponse:
        with lock:
            outcome = prune(request, dry_run=True)
        if isinstance(outcome, JSONResponse):
            return outcome
        plan = outcome.plan
        return JSONResponse(
            {
                "dest": plan.dest,
                "files": len(plan.operations),
                "bytes": plan.bytes_freed,
                "groups": len({op.group for op in plan.operations}),
                "skipped": [s.to_dict() for s in plan.skipped],
            },
            headers={"Cache-Control": "no-store"},
        )

    @app.post("/api/quarantine")
    def quarantine_apply(request: Quarantine) -> JSONResponse:
        if not request.confirm:
            return error(400, 'moving files needs the confirmation: send {"confirm": true}')
        with lock:
            outcome = prune(request, dry_run=False)
        if isinstance(outcome, JSONResponse):
            return outcome
        applied = outcome.applied
        if applied is None:
            return JSONResponse({"done": False, "message": "nothing to move", "skipped": []})
        manifest = str(applied.manifest)
        return JSONResponse(
            {
                "done": True,
                "manifest": manifest,
                "undo": f"dedup undo {shlex.quote(manifest)}",
                "counts": applied.counts(),
                "skipped": [{"path": s.path, "reason": s.reason} for s in applied.skipped],
                "failed": [{"path": f.op.src, "reason": f.reason} for f in applied.failed],
            },
            headers={"Cache-Control": "no-store"},
        )

    def thumbnail(path: str) -> bytes | None:
        from dedup.report.thumbs import thumbnail as make

        with thumbs_lock:
            if path in thumbs:
                thumbs.move_to_end(path)
                return thumbs[path]
        b64 = make(path, size=THUMB_SIZE, max_pixels=config.decode.max_pixels)
        data = None if b64 is None else base64.b64decode(b64)
        with thumbs_lock:
            thumbs[path] = data
            while len(thumbs) > THUMB_CACHE:
                thumbs.popitem(last=False)
        return data

    @app.get("/thumb/{rel:path}")
    def thumb(rel: str) -> Response:
        path = served.resolve(rel)
        data = None if path is None else thumbnail(path)
        if data is None:
            return error(404, "not found")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/file/{rel:path}")
    def file(rel: str) -> Response:
        path = served.resolve(rel)
        if path is None:
            return error(404, "not found")
        from PIL import Image

        from dedup.errors import ImageError
        from dedup.images import open_image

        try:
            with Image.open(path) as im:
                fmt = im.format or ""
        except Exception:  # noqa: BLE001 - not an image any more
            return error(404, "not found")
        if fmt in BROWSER_FORMATS:
            return FileResponse(path, media_type=BROWSER_FORMATS[fmt], headers={"Cache-Control": "no-cache"})
        try:
            image, _, _ = open_image(path, max_pixels=config.decode.max_pixels, draft_size=None)
        except ImageError:
            return error(404, "not found")
        image.thumbnail((VIEW_SIZE, VIEW_SIZE))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=92)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    return app


def _escape(text: str) -> str:
    import html

    return html.escape(text)
