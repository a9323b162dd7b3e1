"""``dedup evaluate``: the CLI over dedup.metrics (the scores themselves are tested in test_metrics.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

MEASURES = (
    "Pairwise precision",
    "Pairwise recall",
    "Pairwise F1",
    "Adjusted Rand index",
    "Normalised mutual information",
    "Fowlkes–Mallows",
    "Homogeneity",
    "Completeness",
    "V-measure",
    "B-cubed precision",
    "B-cubed recall",
    "B-cubed F1",
)


def _member(path: str) -> dict[str, Any]:
    return {"path": path, "similarity_to_keep": 1.0, "bytes": 1, "width": 1, "height": 1, "mtime": 0.0}


def write_scene(
    tmp_path: Path, *, scanned_all: bool = True, corrupt_skipped: bool = True
) -> tuple[Path, Path]:
    """Truth {a,b,c} {d,e} {f} + 2 CORRUPT rows; report groups {a,b} {c,d} (e, f ungrouped)."""
    photos = tmp_path / "photos"
    p = {name: str(photos / f"{name}.jpg") for name in "abcdef"}
    decoded = list(p.values()) if scanned_all else [p[n] for n in "abcde"]
    report = {
        "version": 1,
        "paths": [str(photos)],
        "groups": [
            {"id": 1, "keep": p["a"], "members": [_member(p["a"]), _member(p["b"])]},
            {"id": 2, "keep": p["c"], "members": [_member(p["c"]), _member(p["d"])]},
        ],
        "skipped": [{"path": str(photos / "bad1.jpg"), "reason": "truncated image"}]
        + ([{"path": str(photos / "bad2.jpg"), "reason": "empty file"}] if corrupt_skipped else []),
        "images": [{"path": x, "bytes": 1, "mtime": 0.0, "width": 1, "height": 1} for x in decoded],
    }
    report_path = tmp_path / "report.json"
    report_path.write_text(json.dumps(report))
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "path,group_id\nphotos/a.jpg,g1\nphotos/b.jpg,g1\nphotos/c.jpg,g1\nphotos/d.jpg,g2\n"
        "photos/e.jpg,g2\nphotos/f.jpg,g3\nphotos/bad1.jpg,CORRUPT\nphotos/bad2.jpg,CORRUPT\n"
    )
    return report_path, truth


def _score(stdout: str, label: str) -> float:
    line = next(x for x in stdout.splitlines() if label in x)
    return float(line.split("│")[-2])


def test_evaluate_prints_every_measure_and_writes_json(cli, tmp_path):
    report, truth = write_scene(tmp_path)
    out = tmp_path / "scores.json"
    result = cli("evaluate", str(report), "--truth", str(truth), "--output", str(out))
    assert result.exit_code == 0, result.output
    for label in MEASURES:
        assert label in result.stdout
    # hand-computed: true pairs 4 (ab ac bc de), predicted 2 (ab cd), correct 1 -> P 1/2, R 1/4, F1 1/3
    assert _score(result.stdout, "Pairwise precision") == 0.5
    assert _score(result.stdout, "Pairwise recall") == 0.25
    assert _score(result.stdout, "Pairwise F1") == pytest.approx(1 / 3, abs=5e-5)
    # B-cubed over a..f: precision (1+1+.5+.5+1+1)/6 = 5/6; recall (2/3+2/3+1/3+1/2+1/2+1)/6 = 11/18
    assert _score(result.stdout, "B-cubed precision") == pytest.approx(5 / 6, abs=5e-5)
    assert _score(result.stdout, "B-cubed recall") == pytest.approx(11 / 18, abs=5e-5)
    assert "4 / 2 / 1" in result.stdout and "CORRUPT rows skipped by the scan" in result.stdout
    assert result.stderr == ""  # nothing to warn about
    data = json.loads(out.read_text())
    assert data["metrics"]["pairwise_f1"] == pytest.approx(1 / 3)
    assert data["coverage"]["not_scanned"] == [] and data["excluded"]["skipped"] == 2
    assert f"Scores written to {out}" in result.stdout


def test_evaluate_warns_about_coverage(cli, tmp_path):
    report, truth = write_scene(tmp_path, scanned_all=False, corrupt_skipped=False)
    result = cli("evaluate", str(report), "--truth", str(truth))
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())
    assert "1 truth items were never scanned" in err and "f.jpg" in err
    assert "1 of 2 rows of group CORRUPT were not skipped by the scan" in err and "bad2.jpg" in err


def test_evaluate_nothing_matched_hints_at_paths_and_match_name_fixes_it(cli, tmp_path):
    report, _ = write_scene(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    truth = elsewhere / "truth.csv"  # same file names, but relative to another folder
    truth.write_text("path,group_id\na.jpg,1\nb.jpg,1\nc.jpg,2\nd.jpg,2\n")
    result = cli("evaluate", str(report), "--truth", str(truth))
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())
    assert "paths probably do not match" in err and "--match name" in err
    result = cli("evaluate", str(report), "--truth", str(truth), "--match", "name")
    assert result.exit_code == 0, result.output
    assert _score(result.stdout, "Pairwise F1") == 1.0  # truth {a,b} {c,d} = the report's groups
    assert "paths probably do not match" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--match", "inode"], "--match must be one of path, name"),
        (["--output", "/no/such/folder/s.json"], "does not exist"),
    ],
)
def test_evaluate_bad_options_exit_1(cli, tmp_path, args, message):
    report, truth = write_scene(tmp_path)
    result = cli("evaluate", str(report), "--truth", str(truth), *args)
    assert result.exit_code == 1
    assert message in result.stderr


def test_evaluate_missing_files_exit_1(cli, tmp_path):
    report, truth = write_scene(tmp_path)
    result = cli("evaluate", str(tmp_path / "nope.json"), "--truth", str(truth))
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = cli("evaluate", str(report), "--truth", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1 and "cannot read truth file" in result.stderr


def test_evaluate_a_real_scan(cli, tmp_path):
    from imagegen import write_dataset

    data = write_dataset(tmp_path / "data")
    report = tmp_path / "r.json"
    assert cli("scan", data["root"], "-f", "phash", "-r", str(report)).exit_code == 0
    rows = ["path,group_id"]
    rows += [f"{p},{g}" for g, paths in data["phash_groups"].items() for p in paths]
    rows += [f"{p},single{i}" for i, p in enumerate(data["singletons"])]
    rows += [f"{p},CORRUPT" for p in data["skipped"]]
    truth = tmp_path / "truth.csv"
    truth.write_text("\n".join(rows) + "\n")
    result = cli("evaluate", str(report), "--truth", str(truth), "-o", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "s.json").read_text())
    # phash finds exactly the groups it is expected to find, and skips what must be skipped
    assert scores["metrics"]["pairwise_f1"] == 1.0 and scores["metrics"]["adjusted_rand"] == 1.0
    assert scores["excluded"]["not_skipped"] == [] and scores["coverage"]["not_scanned"] == []
    assert result.stderr == ""
