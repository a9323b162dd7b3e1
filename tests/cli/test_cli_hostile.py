"""The command line under hostile and unlucky input (issue 16): names that are not UTF-8, an empty folder,
``--delete`` off a terminal, Ctrl-C during a scan. Real processes where the terminal's encoding or signals
matter."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import ROOT, cli_command, snapshot
from imagegen import make_photo


def _run(*args: str | Path, env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*map(str, args), prelude=prelude),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_names_that_are_not_utf8_scan_report_move_and_come_back(tmp_path: Path) -> None:
    """Issue 16, 5: ``x\\xff.jpg`` crashed the cache lookup, the JSON/CSV/HTML reports and the journal."""
    root = tmp_path / "photos"
    root.mkdir()
    bad = os.fsencode(root) + b"/x\xff.jpg"
    photo = make_photo(7, (200, 150))
    photo.save(bad.decode("utf-8", "surrogateescape"), quality=92)
    photo.resize((100, 75)).save(root / "small.jpg", quality=85)
    make_photo(8, (200, 150)).save(root / "other.jpg")
    env = {
        **os.environ,
        "LC_ALL": "C.UTF-8",
        "PYTHONUTF8": "0",
        "PYTHONIOENCODING": "",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    reports = [tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.html"]
    args = ["--features", "phash+thumb+color"]
    scan = _run("scan", root, *args, *[a for r in reports for a in ("--report", r)], env=env)
    assert scan.returncode == 0 and "Traceback" not in scan.stderr, scan.stderr
    assert "x\\xff.jpg" in scan.stdout  # shown with its bad byte escaped
    again = _run("scan", root, *args, "--json", env=env)  # a second time: through the cache
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    name = os.fsdecode(bad)
    assert [sorted(m["path"] for m in g["members"]) for g in data["groups"]] == [
        sorted([name, str(root / "small.jpg")])
    ]  # json.loads gives back the very name the OS takes
    assert json.loads(reports[0].read_text(encoding="utf-8"))["groups"] == data["groups"]
    rows = list(csv.DictReader(reports[1].open(encoding="utf-8")))
    assert any(r["path"].endswith("x\\xff.jpg") for r in rows)
    assert "x\ufffd.jpg" in reports[2].read_text(encoding="utf-8")
    before = snapshot(root)
    q = tmp_path / "q"
    dry = _run("prune", root, "--to", q, *args, "--dry-run", env=env)
    assert dry.returncode == 0 and json.loads(dry.stdout)["summary"]["move"] == 1, dry.stderr
    keep = data["groups"][0]["keep"]
    moved = _run("prune", root, "--to", q, *args, env=env)
    assert moved.returncode == 0 and "Traceback" not in moved.stderr, moved.stderr
    gone = name if keep != name else str(root / "small.jpg")
    assert not os.path.lexists(gone)
    (manifest,) = q.glob("*.jsonl")
    undone = _run("undo", manifest, env=env)
    assert undone.returncode == 0, undone.stderr
    assert snapshot(root) == before and os.path.exists(bad)


def test_an_empty_folder_says_no_images_were_found(cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = cli("scan", tmp_path / "empty", "--features", "phash")
    assert result.exit_code == 0 and f"No images found under {tmp_path / 'empty'}." in result.stdout
    result = cli("prune", tmp_path / "empty", "--to", tmp_path / "q", "--features", "phash")
    assert result.exit_code == 0 and "No images found" in result.stderr and "Nothing to do." in result.stdout


def test_delete_off_a_terminal_is_refused_before_the_scan(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, 13: used to refuse only after the whole scan had run."""
    from dedup import curate

    def no_scan(*a: object, **k: object) -> object:
        raise AssertionError("the scan ran before --delete was refused")

    monkeypatch.setattr(curate, "find_duplicates", no_scan)
    make_photo(1, (60, 40)).save(tmp_path / "a.jpg")
    result = cli("prune", tmp_path, "--delete", "--features", "phash")
    assert result.exit_code == 1 and "no terminal to confirm on" in result.stderr
    assert result.stderr.count("Error:") == 1


_SLOW_DECODE = """
import os, time
from dedup import extract
_real = extract.open_image
def _slow(*a, **k):
    open({marker!r}, "a").close()
    time.sleep(0.5)
    return _real(*a, **k)
extract.open_image = _slow
"""


def test_ctrl_c_ends_a_scan_within_seconds(tmp_path: Path) -> None:
    """Issue 16, 6: SIGINT used to wait for every queued decode (and the digest pre-pass) to finish."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(160):
        make_photo(i, (64, 48)).save(root / f"p{i:03d}.png")  # 160 decodes of 0.5 s each queued
    marker = tmp_path / "decoding"
    proc = subprocess.Popen(
        cli_command("scan", str(root), "--features", "phash", "--no-cache",
                    prelude=_SLOW_DECODE.format(marker=str(marker))),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert "Interrupted." in err and "Traceback" not in err
    assert elapsed < 2.5, f"the scan took {elapsed:.1f} s to stop"
