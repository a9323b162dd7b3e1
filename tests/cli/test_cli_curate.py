"""CLI tests of ``dedup prune``, ``group`` and ``undo`` (CliRunner; real processes for the kill -9 tests).

Scans use the weight-free ``phash`` extractor on generated photos; the kill -9 tests run
``python -m dedup prune --from-report`` on a hand-written report of plain files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, cli_command, make_dataset, member, non_kept, records, snapshot
from imagegen import make_photo


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three originals (JPEG q95) each with a smaller JPEG re-encode and a lossless PNG of the same pixels
    in a sub-folder, plus one loner. The default keep policy ``best`` keeps the PNG (lossless beats JPEG)."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        image = make_photo(i, size=(240, 180))
        image.save(root / f"p{i}.jpg", quality=95)
        image.resize((120, 90)).save(root / "sub" / f"p{i}_small.jpg", quality=80)
        image.save(root / "sub" / f"p{i}.png")
    make_photo(10, size=(240, 180)).save(root / "loner.jpg")
    return root


def test_prune_dry_run_leaves_the_disk_byte_for_byte_unchanged(invoke, photos: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    code, out, err = invoke(
        "prune", photos, "--to", photos / "quarantine", "--features", "phash", "--dry-run"
    )
    assert code == 0, err
    assert snapshot(tmp_path) == before and not (photos / "quarantine").exists()
    plan = json.loads(out)
    assert plan["summary"]["move"] == 6 and plan["summary"]["kept"] == 3
    assert {Path(op["src"]).name for op in plan["operations"]} == {
        f"p{i}{s}" for i in range(3) for s in ("_small.jpg", ".jpg")
    }
    assert "Dry run: nothing was changed" in err


def test_prune_then_undo_restores_everything_and_quarantine_is_not_rescanned(invoke, photos: Path) -> None:
    before = snapshot(photos)
    q = photos / "quarantine"  # inside the scanned folder
    code, out, err = invoke("prune", photos, "--to", q, "--features", "phash")
    assert code == 0, err
    (manifest,) = q.glob("dedup-prune-*.jsonl")
    assert f"dedup undo {manifest}" in out and "Moved" in out
    assert sorted(p.name for p in q.rglob("*.*") if p != manifest) == sorted(
        f"p{i}{s}" for i in range(3) for s in ("_small.jpg", ".jpg")
    )
    assert all((photos / "sub" / f"p{i}.png").exists() for i in range(3))
    code, out, err = invoke("prune", photos, "--to", q, "--features", "phash", "--dry-run")
    assert code == 0, err
    assert json.loads(out)["operations"] == []  # the quarantined copies were not scanned as duplicates
    code, out, err = invoke("undo", manifest)
    assert code == 0, err
    after = snapshot(photos)
    assert {p for p in after if p.startswith(str(q))} == {str(q), str(manifest)}
    assert {k: v for k, v in after.items() if not k.startswith(str(q))} == before
    assert invoke("undo", manifest)[0] == 0  # twice is harmless


def test_delete_needs_yes_off_a_terminal_and_cannot_be_undone(
    invoke, cli, photos: Path, tmp_path: Path
) -> None:
    before = snapshot(photos)
    code, _, err = invoke("prune", photos, "--delete", "--features", "phash")
    assert code == 1 and "--yes" in err and "no terminal" in err
    assert snapshot(photos) == before
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    result = cli("prune", str(photos), "--delete", "--yes", "--features", "phash", env=env)
    assert result.exit_code == 0, result.output
    assert "cannot be restored" in result.stdout
    assert sorted(p.name for p in photos.rglob("*.*")) == ["loner.jpg", "p0.png", "p1.png", "p2.png"]
    (manifest,) = (tmp_path / "state" / "dedup").glob("dedup-prune-delete-*.jsonl")
    code, out, err = invoke("undo", manifest)
    assert code == 1 and "cannot be restored" in err


@pytest.mark.parametrize("mode", ["--copy", "--link", "--move"])
def test_group_then_undo(invoke, photos: Path, tmp_path: Path, mode: str) -> None:
    out_dir = tmp_path / "by-group"
    before = snapshot(photos)
    code, out, err = invoke("group", photos, "--to", out_dir, mode, "--features", "phash")
    assert code == 0, err
    folders = sorted(p.name for p in out_dir.iterdir() if p.is_dir())
    assert folders == ["group-0001", "group-0002", "group-0003", "unique"]
    assert sorted(os.listdir(out_dir / "group-0001"))[0].startswith("p")
    assert [p.name for p in (out_dir / "unique").iterdir()] == ["loner.jpg"]
    assert (out_dir / "unique" / "loner.jpg").is_symlink() == (mode == "--link")
    (manifest,) = out_dir.glob("dedup-group-*.jsonl")
    code, out, err = invoke("undo", manifest)
    assert code == 0, err
    assert snapshot(photos) == before and os.listdir(out_dir) == [manifest.name]


def test_group_option_errors(invoke, photos: Path, tmp_path: Path) -> None:
    """Missing or conflicting options are usage errors (exit 2, like Typer's own), found before a scan."""
    code, _, err = invoke("group", photos, "--to", tmp_path / "o", "--move", "--link")
    assert code == 2 and "only one of" in err
    code, _, err = invoke("group", photos)
    assert code == 2 and "--to" in err
    code, _, err = invoke("prune", photos)
    assert code == 2 and "--to" in err and "--delete" in err
    code, _, err = invoke("prune", photos, "--to", tmp_path / "q", "--delete")
    assert code == 2 and "--to" in err and "--delete" in err
    code, _, err = invoke("prune", "--to", tmp_path / "q")
    assert code == 2 and "--from-report" in err
    assert "Traceback" not in err


def test_from_report_leaves_changed_files_alone_and_exits_1(invoke, photos: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, _, err = invoke("scan", photos, "--features", "phash", "--report", report)
    assert code == 0, err
    changed = photos / "p1.jpg"  # a duplicate (the lossless sub/p1.png is kept)
    changed.write_bytes(changed.read_bytes() + b"\0")
    q = tmp_path / "q"
    code, out, err = invoke("prune", "--from-report", report, "--to", q)
    assert code == 1
    assert "changed since the report" in err and "not everything was done" in err
    assert changed.exists() and not (q / "p1.jpg").exists()
    assert len(list(q.rglob("*.*"))) == 5 + 1  # the five others and the manifest
    code, _, err = invoke("prune", tmp_path, "--from-report", report, "--to", q)
    assert code == 1 and "not" in err  # paths that do not match the report's


def test_hand_edited_report_never_empties_a_group(invoke, tmp_path: Path) -> None:
    """A keep that is not one of the group's members makes the report invalid: nothing is touched."""
    root = tmp_path / "data"
    report = make_dataset(root, n_groups=1, per_group=3)
    keep = report["groups"][0]["keep"]
    report["groups"][0]["keep"] = str(root / "gone.jpg")  # a kept image that is not a member
    report["groups"][0]["members"].append(member(Path(keep)))
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    before = snapshot(root)
    code, _, err = invoke("prune", "--from-report", path, "--delete", "--yes")
    assert code == 1 and "is not one of its members" in err and "Traceback" not in err
    assert snapshot(root) == before


# ------------------------------------------------------------------------------------------ kill -9


def _cli(*args: str | Path, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*map(str, args), kill=kill),
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _setup(base: Path) -> tuple[Path, Path, Path, dict[str, object]]:
    root, q = base / "data", base / "data" / "quarantine"
    report = make_dataset(root, n_groups=2, per_group=4)  # 7 operations
    report_path = base / "report.json"
    report_path.write_text(json.dumps(report))
    return root, q, report_path, report


@pytest.mark.parametrize("kill", ["intent:1", "done:2", "intent:5", "done:6"])
def test_kill_9_then_undo_or_rerun(tmp_path: Path, kill: str) -> None:
    """SIGKILL between intent and operation, or between operations; then undo, or re-run the command."""
    for follow_up in ("undo", "rerun"):
        root, q, report_path, report = _setup(tmp_path / follow_up)
        before = snapshot(root)
        proc = _cli("prune", "--from-report", report_path, "--to", q, kill=kill)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        (manifest,) = q.glob("dedup-prune-*.jsonl")
        done_before = [r["index"] for r in records(manifest) if r["type"] == "done"]
        n = int(kill.split(":")[1])
        assert len(done_before) == (n - 1 if kill.startswith("intent") else n)
        if follow_up == "undo":
            proc = _cli("undo", manifest)
            assert proc.returncode == 0, proc.stderr
            after = snapshot(root)
            assert {p for p in after if p.startswith(str(q))} == {str(q), str(manifest)}  # no extra files
            assert {k: v for k, v in after.items() if not k.startswith(str(q))} == before
            continue
        proc = _cli("prune", "--from-report", report_path, "--to", q)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Resumed the interrupted run" in proc.stderr
        assert ("Done by the interrupted run" in proc.stdout) == bool(done_before)
        recs = records(manifest)
        assert sorted(r["index"] for r in recs if r["type"] == "done") == list(range(7))  # each once
        files = sorted(str(p) for p in q.rglob("*") if p.is_file() and p != manifest)
        assert files == sorted(p.replace(str(root), str(q)) for p in non_kept(report))  # nothing twice
        assert list(q.glob("*.jsonl")) == [manifest]
        assert _cli("undo", manifest).returncode == 0
        after = snapshot(root)
        assert {k: v for k, v in after.items() if not k.startswith(str(q))} == before


def test_kill_9_during_undo_then_undo_again(tmp_path: Path) -> None:
    root, q, report_path, _ = _setup(tmp_path)
    before = snapshot(root)
    assert _cli("prune", "--from-report", report_path, "--to", q).returncode == 0
    (manifest,) = q.glob("*.jsonl")
    assert _cli("undo", manifest, kill="undo-done:3").returncode == -signal.SIGKILL
    assert snapshot(root) != before
    proc = _cli("undo", manifest)
    assert proc.returncode == 0, proc.stderr
    assert {k: v for k, v in snapshot(root).items() if not k.startswith(str(q))} == before
