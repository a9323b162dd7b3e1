"""``dedup serve``: the HTTP API of a saved index, as a real uvicorn server on a free loopback port, sent real
HTTP requests (uploads as multipart and as raw bodies, bad and oversized uploads, tokens, hosts, docs)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dedup.saved_index import Index
from dedup.service import IndexServer

from helpers import ROOT
from indextools import index_config, jpeg_bytes, png_claiming, write_collection


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    tmp = tmp_path_factory.mktemp("service")
    collection = write_collection(tmp / "photos")
    return Index.build([collection["root"]], tmp / "photos.index", index_config())


@contextmanager
def serving(index: Index, **kwargs: Any) -> Iterator[IndexServer]:
    server = IndexServer(index, **kwargs)
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


def call(
    server: IndexServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def upload(server: IndexServer, data: bytes, name: str = "x.jpg", query: str = "", **headers: str):
    """POST /assign as multipart/form-data with the field ``file``."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, out = call(
        server,
        "POST",
        "/assign" + query,
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}", **headers},
    )
    return status, json.loads(out)


def test_a_known_image_gets_its_own_group_and_cluster_and_a_copy_its_kept_image(index: Index) -> None:
    group = max(index.groups.values(), key=lambda g: len(g.members))
    member = index.images[group.members[-1]]
    keep = index.images[group.keep]
    with serving(index) as server:
        assert server.socket.getsockname()[0] == "127.0.0.1"
        status, body = upload(server, Path(member.path).read_bytes(), name="member.jpg")
        assert status == 200, body
        assert body["path"] == "member.jpg" and body["known"] == member.path
        assert body["duplicate_of"]["group"] == group.id and body["duplicate_of"]["path"] == keep.path
        assert body["cluster"] == member.cluster and body["novel"] is False
        # a re-encoded copy (raw body this time) is a duplicate of the kept image, not a known file
        copy = jpeg_bytes(Image.open(member.path), quality=40)
        status, _, raw = call(server, "POST", "/assign?embedding=true", copy, {"Content-Type": "image/jpeg"})
        answer = json.loads(raw)
        assert status == 200, answer
        assert answer["known"] is None and answer["duplicate_of"]["path"] == keep.path
        assert len(answer["embedding"]["phash"]) == 256
        # the server keeps answering after bad uploads, each decoded with the scan's protections
        bad = {
            "cannot decode": b"GIF89a this is not an image",
            "not an image": b"plain text, not an image at all",
            "truncated": jpeg_bytes(Image.open(member.path))[:1500],
            "decompression bomb": png_claiming(30000, 30000),
        }
        for reason, data in bad.items():
            status, body = upload(server, data)
            assert status == 422 and reason in body["error"], body
        status, body = upload(server, b"")
        assert status == 400
        assert call(server, "GET", "/health")[0] == 200


def test_oversized_uploads_get_413(index: Index) -> None:
    with serving(index, max_upload=50_000) as server:
        big = b"\xff\xd8\xff" + b"\0" * 60_000
        status, _, body = call(server, "POST", "/assign", big, {"Content-Type": "image/jpeg"})
        assert status == 413 and "larger than 50000 bytes" in json.loads(body)["error"]
        # without a Content-Length (chunked), the limit holds while reading
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/assign", body=iter([big[:30_000], big[30_000:]]), encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413
        conn.close()
        assert call(server, "GET", "/health")[0] == 200


def test_similar_health_docs_token_and_host(index: Index) -> None:
    kept = index.images[next(iter(index.groups.values())).keep]
    with serving(index, token="s3cret") as server:
        status, _, body = call(server, "GET", "/health")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok" and health["images"] == len(index.images)
        assert call(server, "GET", f"/similar?path={kept.path}")[0] == 401
        status, body_json = upload(server, Path(kept.path).read_bytes())
        assert status == 401 and "token" in body_json["error"]
        auth = {"Authorization": "Bearer s3cret"}
        status, _, body = call(server, "GET", f"/similar?path={kept.path}&k=3", headers=auth)
        matches = json.loads(body)["matches"]
        assert status == 200 and len(matches) == 3 and all(m["path"] != kept.path for m in matches)
        assert matches[0]["group"] == kept.group
        assert (
            call(server, "GET", "/similar?path=/nowhere.jpg", headers={"X-Dedup-Token": "s3cret"})[0] == 404
        )
        assert call(server, "GET", f"/similar?path={kept.path}&k=0", headers=auth)[0] == 422
        status, _, docs = call(server, "GET", "/docs")
        assert status == 200 and b"swagger" in docs.lower()
        spec = json.loads(call(server, "GET", "/openapi.json")[2])
        assert {"/assign", "/similar", "/health"} <= set(spec["paths"])
        assert "multipart/form-data" in spec["paths"]["/assign"]["post"]["requestBody"]["content"]
        assert call(server, "GET", "/health", headers={"Host": "evil.example:80"})[0] == 400


def test_dedup_serve_command_binds_loopback_and_answers(index: Index) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dedup", "serve", "--index", str(index.folder), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "Serving ... on http://127.0.0.1:PORT — API docs: ..."
        assert "on http://127.0.0.1:" in line, (line, process.stderr.read() if process.poll() else "")
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                assert conn.getresponse().status == 200
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_on_a_damaged_index_is_one_error_line(tmp_path: Path, invoke) -> None:
    code, _, err = invoke("serve", "--index", tmp_path)
    assert code == 1 and "not a dedup index" in err and "Traceback" not in err
