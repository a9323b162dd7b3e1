"""The review server over real HTTP (uvicorn on a free loopback port): tokens, hosts, what files it serves
(security cases), bad requests, the quarantine action, and the ``dedup review`` command."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from dedup.report import load_report

from helpers import ROOT, snapshot
from reviewtools import open_state, request, running, token_header


def _json(body: bytes) -> dict:
    return json.loads(body.decode())


def _group_ids(server) -> list[int]:
    status, _, body = request(server, "GET", "/api/state", headers=token_header(server))
    assert status == 200
    return [g["id"] for g in _json(body)["groups"]]


def test_binds_loopback_on_a_free_port_with_a_random_token(scanned) -> None:
    _, report, _ = scanned
    with running(report) as a, running(report.with_name("scan.json"), port=0) as b:
        assert a.host == "127.0.0.1" and a.socket.getsockname()[0] == "127.0.0.1"
        assert a.port != b.port and a.token != b.token and len(a.token) >= 24
        assert a.url == f"http://127.0.0.1:{a.port}/?token={a.token}"


def test_the_page_needs_the_token_and_loads_nothing_from_the_network(scanned) -> None:
    _, report, _ = scanned
    with running(report) as server:
        assert request(server, "GET", "/")[0] == 403
        assert request(server, "GET", "/?token=wrong")[0] == 403
        status, headers, body = request(server, "GET", f"/?token={server.token}")
        assert status == 200
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert (
            "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
        )
        page = body.decode()
        assert not re.search(r'(src|href)="(https?:)?//', page)  # only this server's own paths
        for asset in ("/static/cards.js", "/static/review.js", "/static/cards.css", "/static/review.css"):
            status, _, text = request(server, "GET", asset)
            assert status == 200 and b"http://" not in text and b"https://" not in text
        assert request(server, "GET", "/static/../app.py")[0] == 404
        cookie = headers["set-cookie"].split(";")[0]
        assert request(server, "GET", "/api/state", headers={"Cookie": cookie})[0] == 200
        assert request(server, "GET", "/api/state")[0] == 403


def test_state_changing_requests_need_the_token_header(scanned) -> None:
    _, report, _ = scanned
    with running(report) as server:
        gid = _group_ids(server)[0]
        body = {"action": "accept-group", "group": gid}
        status, headers, _ = request(server, "GET", f"/?token={server.token}")
        cookie = {"Cookie": headers["set-cookie"].split(";")[0]}
        assert request(server, "GET", "/api/state", headers=cookie)[0] == 200  # the cookie reads
        for headers in ({}, cookie, {"X-Dedup-Token": "wrong"}):
            status, _, answer = request(server, "POST", "/api/decide", body, headers)
            assert status == 403 and "token" in _json(answer)["error"]
        status, _, _ = request(server, "POST", f"/api/decide?token={server.token}", body)
        assert status == 403  # a token in the URL is not enough to change anything
        assert load_report(server.state.output).groups == ()  # nothing was decided
        status, _, answer = request(server, "POST", "/api/decide", body, token_header(server))
        assert status == 200 and _json(answer)["counts"]["accepted"] == 1
        assert [g.id for g in load_report(server.state.output).groups] == [gid]


def test_requests_for_another_host_are_refused(scanned) -> None:
    _, report, _ = scanned
    with running(report) as server:
        headers = {**token_header(server), "Host": "evil.example:80"}
        status, _, body = request(server, "GET", "/api/state", headers=headers)
        assert status == 400 and "loopback" in _json(body)["error"]
        ok = {**token_header(server), "Host": f"localhost:{server.port}"}
        assert request(server, "GET", "/api/state", headers=ok)[0] == 200


def test_only_files_listed_in_the_report_are_served(scanned, tmp_path) -> None:
    root, report, groups = scanned
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    outside = tmp_path / "outside.jpg"
    Image.new("RGB", (10, 10)).save(outside)
    # a hand-edited report that lists a symlink pointing out of the scanned folder
    link = root / "g1" / "link_out.jpg"
    os.symlink(outside, link)
    inside_link = root / "g1" / "link_in.jpg"
    os.symlink(groups["g1"][0], inside_link)
    data = json.loads(report.read_text())
    first = data["groups"][0]["members"][0]
    data["groups"][0]["members"] += [{**first, "path": str(link)}, {**first, "path": str(inside_link)}]
    report.write_text(json.dumps(data))
    with running(report) as server:
        t = f"?token={server.token}"
        status, _, state = request(server, "GET", "/api/state" + t)
        member = _json(state)["groups"][0]["members"][0]
        assert member["file"].startswith("/file/") and member["thumb"].startswith("/thumb/")
        status, headers, body = request(server, "GET", member["file"] + t)
        assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
        status, headers, body = request(server, "GET", member["thumb"] + t)
        assert status == 200 and max(Image.open(io.BytesIO(body)).size) == 240
        listed_in = "/file/g1/link_in.jpg"
        assert request(server, "GET", listed_in + t)[0] == 200  # a symlink that stays inside: fine
        not_found = [
            "/file/single.jpg",  # exists, scanned, but in no group: not listed
            "/file/g1/link_out.jpg",  # listed, but the symlink points out of the scanned folder
            "/file/../secret.txt",
            "/file/g1/../../secret.txt",
            "/file/%2e%2e/secret.txt",
            "/file/%2E%2E%2Fsecret.txt",
            "/file/%252e%252e%252fsecret.txt",  # encoded twice
            f"/file/{tmp_path}/secret.txt",
            f"/file//{secret}",
            "/file/%2F" + str(secret).lstrip("/").replace("/", "%2F"),
            "/file/g1/b_orig.jpg%00.txt",
            "/file/g1%5Cb_orig.jpg",
            "/file/./g1/b_orig.jpg",
            "/thumb/../secret.txt",
            "/thumb/single.jpg",
            "/file/",
        ]
        for path in not_found:
            status, _, body = request(server, "GET", path + t)
            assert status == 404, (path, status, body[:80])
            assert _json(body) == {"error": "not found"}
        assert request(server, "GET", "/file/g1/b_orig.jpg")[0] == 403  # no token at all


def test_bad_requests_are_4xx_json_and_the_server_stays_up(scanned) -> None:
    _, report, groups = scanned
    with running(report) as server:
        h = token_header(server)
        gid = _group_ids(server)[0]
        cases = [
            (b"not json", 422),
            (b"[1, 2]", 422),
            ({"action": 5}, 422),
            ({"action": "keep", "group": "x"}, 422),
            ({"action": "explode", "group": gid}, 400),
            ({"action": "keep", "group": 12345, "path": "/x.jpg"}, 400),
            ({"action": "keep", "group": gid, "path": "/not/a/member.jpg"}, 400),
            ({"action": "keep"}, 400),
        ]
        for body, expected in cases:
            status, headers, answer = request(server, "POST", "/api/decide", body, h)
            assert status == expected, (body, status, answer)
            assert headers["content-type"].startswith("application/json") and _json(answer)["error"]
        assert request(server, "GET", "/no/such/route", headers=h)[0] == 404
        assert request(server, "DELETE", "/api/decide", headers=h)[0] in (403, 405)
        assert request(server, "POST", "/api/quarantine", {"to": "relative/q", "confirm": True}, h)[0] == 400
        assert request(server, "POST", "/api/quarantine", {"confirm": False}, h)[0] == 400
        assert request(server, "GET", "/api/state", headers=h)[0] == 200  # still serving


def test_quarantine_from_the_page_is_the_journaled_prune(scanned, tmp_path, cli) -> None:
    root, report, _ = scanned
    before = snapshot(root)
    with running(report) as server:
        h = token_header(server)
        ids = _group_ids(server)
        request(server, "POST", "/api/decide", {"action": "accept-page", "groups": ids[:2]}, h)
        reviewed = load_report(server.state.output)
        expected = sorted(m.path for g in reviewed.groups for m in g.members if m.path != g.keep)
        q = tmp_path / "quarantine"
        status, _, body = request(server, "POST", "/api/quarantine/preview", {"to": str(q)}, h)
        preview = _json(body)
        assert status == 200 and preview["files"] == len(expected) and preview["dest"] == str(q)
        assert preview["bytes"] == sum(os.path.getsize(p) for p in expected)
        assert snapshot(root) == before and not q.exists()  # the preview touches nothing
        status, _, body = request(server, "POST", "/api/quarantine", {"to": str(q), "confirm": True}, h)
        done = _json(body)
        assert status == 200 and done["done"] and done["counts"]["moved"] == len(expected)
        assert done["undo"] == f"dedup undo {done['manifest']}"
        assert not any(os.path.exists(p) for p in expected)
        assert sorted(str(p) for p in q.rglob("*.jpg")) == sorted(
            str(q / os.path.relpath(p, root)) for p in expected
        )
    result = cli("undo", done["manifest"])
    assert result.exit_code == 0, result.output
    assert snapshot(root) == before


def _start_cli(report: Path, env: dict[str, str], *extra: str) -> tuple[subprocess.Popen, str]:
    code = "import sys\nfrom dedup.cli import main\nsys.argv = ['dedup', *sys.argv[1:]]\nmain()\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "review", str(report), "--no-browser", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError(f"no URL printed: {''.join(lines)} {proc.stderr.read() if proc.stderr else ''}")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_dedup_review_serves_until_ctrl_c_and_a_killed_server_loses_nothing(scanned) -> None:
    _, report, _ = scanned
    proc, url = _start_cli(report, _env())
    try:
        base, token = url.split("/?token=")
        status, _, body = request(base, "GET", f"/api/state?token={token}")
        assert status == 200
        ids = [g["id"] for g in _json(body)["groups"]]
        h = {"X-Dedup-Token": token}
        assert request(base, "POST", "/api/decide", {"action": "reject-group", "group": ids[0]}, h)[0] == 200
        assert request(base, "POST", "/api/decide", {"action": "accept-group", "group": ids[1]}, h)[0] == 200
        proc.send_signal(signal.SIGKILL)  # a crash: nothing may be lost
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    state = open_state(report)
    assert state.decisions[ids[0]].status == "rejected" and state.decisions[ids[1]].status == "accepted"
    proc, url = _start_cli(report, _env())  # and once more, stopped with Ctrl-C
    try:
        base, token = url.split("/?token=")
        assert request(base, "GET", f"/api/state?token={token}")[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode in (0, 130), err
    assert "dedup prune --from-report" in err and "Traceback" not in err


def test_dedup_review_bad_input_is_one_error_line(cli, tmp_path) -> None:
    result = cli("review", tmp_path / "missing.json", "--no-browser")
    assert result.exit_code == 1 and result.stderr.count("Error:") == 1 and "does not exist" in result.stderr
    (tmp_path / "x.json").write_text("{}")
    result = cli("review", tmp_path / "x.json", "--no-browser")
    assert result.exit_code == 1 and "not a dedup report" in result.stderr
    assert "Traceback" not in result.output
    assert "Example:" in cli("review", "--help").stdout


def test_scan_review_scans_then_serves_the_report(cli, scanned, monkeypatch, tmp_path) -> None:
    import dedup.cli.scan as scan_cli

    root, _, _ = scanned
    seen = {}

    def fake_serve(report, **kwargs):
        seen.update(kwargs, report=report)

    monkeypatch.setattr(scan_cli, "serve", fake_serve)
    out = tmp_path / "r.json"
    result = cli("scan", root, "-f", "phash", "--review", "--no-browser", "--report", out)
    assert result.exit_code == 0, result.output
    assert seen["report"] == out and seen["browser"] is False and load_report(out).groups
    result = cli("scan", root, "-f", "phash", "--review")
    assert result.exit_code == 0, result.output
    assert seen["report"].parent.name == "reviews" and seen["report"].is_file() and seen["browser"] is True
