"""Reference folders (always kept, never moved or deleted) and ``--across A B`` (only pairs between two
sets: train/test leakage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dedup.actions import plan_group, plan_prune
from dedup.config import load_config
from dedup.pipeline import find_duplicates
from dedup.report import Report, from_result

from helpers import snapshot
from imagegen import make_photo

PHASH = {"features.extractor": "phash"}


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, Path]:
    """photos/ holds the best copies; originals/ (outside it) holds worse ones of the same photos."""
    photos, originals = tmp_path / "photos", tmp_path / "originals"
    photos.mkdir()
    originals.mkdir()
    for i in range(3):
        image = make_photo(20 + i)
        image.save(photos / f"p{i}.jpg", quality=95)
        image.save(photos / f"p{i}_copy.jpg", quality=60)
        image.resize((160, 120)).save(originals / f"p{i}.jpg", quality=80)  # smaller: never 'best'
    make_photo(40).save(originals / "alone.jpg")
    return photos, originals


def test_reference_images_are_kept_and_scanned_too(library: tuple[Path, Path]) -> None:
    photos, originals = library
    cfg = load_config(overrides={**PHASH, "keep.reference": [str(originals)]})
    result = find_duplicates([photos], cfg)  # originals/ is scanned although not given
    assert str(originals) in result.paths
    report = from_result(result)
    assert len(report.groups) == 3
    assert all(Path(g.keep).parent == originals for g in report.groups)
    assert report.reference == (str(originals),)
    plain = from_result(find_duplicates([photos, originals], load_config(overrides=PHASH)))
    assert all(Path(g.keep).parent == photos for g in plain.groups)  # without it: the best copy


def test_planning_never_moves_a_reference_image(library: tuple[Path, Path], tmp_path: Path) -> None:
    photos, originals = library
    report = from_result(find_duplicates([photos, originals], load_config(overrides=PHASH)))
    assert all(Path(g.keep).parent == photos for g in report.groups)  # kept: photos/, not the reference
    plain = plan_prune(report, to=tmp_path / "q")
    assert any(Path(op.src).parent == originals for op in plain.operations)
    plan = plan_prune(report, to=tmp_path / "q", reference=[str(originals)])  # given only when acting
    assert plan.operations and not any(Path(op.src).parent == originals for op in plan.operations)
    assert {str(originals / f"p{i}.jpg") for i in range(3)} <= set(plan.kept)
    assert not plan.skipped  # kept, not "left alone"
    chosen = plan_prune(report, to=tmp_path / "q", reference=[str(originals)], keep_policy="resolution")
    assert {op.keep for op in chosen.operations} == {str(originals / f"p{i}.jpg") for i in range(3)}
    moved = plan_group(report, to=tmp_path / "g", mode="move", reference=[str(originals)])
    assert not any(Path(op.src).parent == originals for op in moved.operations)
    assert any("reference folders stay where they are" in n for n in moved.notes)
    # the report's own reference folders count without being given again
    data = report.to_dict()
    data["params"].setdefault("keep", {})["reference"] = [str(originals)]
    again = plan_prune(Report.from_dict(data), to=tmp_path / "q", delete=False)
    assert not any(Path(op.src).parent == originals for op in again.operations)


def test_prune_cli_with_reference_then_undo(invoke, library: tuple[Path, Path], tmp_path: Path) -> None:
    photos, originals = library
    before = snapshot(photos, originals)
    q = tmp_path / "q"
    code, out, err = invoke("prune", photos, "--reference", originals, "--to", q, "--features", "phash")
    assert code == 0, err
    assert snapshot(originals) == before_originals(before, originals)  # untouched
    assert sorted(p.name for p in q.rglob("*.jpg")) == sorted(
        f"p{i}{s}.jpg" for i in range(3) for s in ("", "_copy")
    )
    (manifest,) = q.glob("dedup-prune-*.jsonl")
    assert invoke("undo", manifest)[0] == 0
    assert snapshot(photos, originals) == before


def before_originals(before: dict, originals: Path) -> dict:
    return {k: v for k, v in before.items() if k.startswith(str(originals))}


@pytest.fixture
def split(tmp_path: Path) -> tuple[Path, Path]:
    """train/ and test/: two test images leak from train (re-encoded), each set has an internal duplicate
    pair of its own, and test has an unrelated image."""
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir()
    test.mkdir()
    for i in range(3):
        make_photo(50 + i).save(train / f"t{i}.jpg", quality=95)
    make_photo(50).save(train / "t0_again.jpg", quality=70)  # a duplicate inside train
    make_photo(51).save(test / "leak1.jpg", quality=60)
    make_photo(52).save(test / "leak2.jpg", quality=60)
    make_photo(60).save(test / "own.jpg", quality=95)
    make_photo(60).save(test / "own_again.jpg", quality=70)  # a duplicate inside test
    make_photo(61).save(test / "unrelated.jpg")
    return train, test


def test_across_reports_only_pairs_between_the_sets(split: tuple[Path, Path]) -> None:
    train, test = split
    cfg = load_config(overrides={**PHASH, "cluster.across": [str(train), str(test)]})
    report = from_result(find_duplicates([], cfg))  # both folders are scanned
    assert report.stats["across"] == {
        "a": str(train),
        "b": str(test),
        "a_images": 4,
        "b_images": 5,
        "b_with_duplicate_in_a": 2,
    }
    for g in report.groups:
        sides = {Path(m.path).parent for m in g.members}
        assert sides == {train, test}  # every group crosses
        assert Path(g.keep).parent == train  # A is kept
    names = {Path(m.path).name for g in report.groups for m in g.members}
    assert "own.jpg" not in names and "own_again.jpg" not in names  # a pair inside B is not reported
    assert report.reference == (str(train),)


def test_across_cli_summary_and_prune_moves_only_b(invoke, split: tuple[Path, Path], tmp_path: Path) -> None:
    train, test = split
    out = tmp_path / "leak.json"
    code, text, err = invoke("scan", "--across", train, test, "--features", "phash", "--report", out)
    assert code == 0, err
    flat = " ".join(text.split())
    assert f"2 of 5 images of {test} have a duplicate in {train}" in flat
    before = snapshot(train)
    code, _, err = invoke("prune", "--from-report", out, "--to", tmp_path / "q")
    assert code == 0, err
    assert snapshot(train) == before
    assert sorted(p.name for p in (tmp_path / "q").rglob("*.jpg")) == ["leak1.jpg", "leak2.jpg"]
    code, _, err = invoke("scan")
    assert code == 2 and "--across" in err  # a usage error
    code, _, err = invoke("scan", "--across", train, train)
    assert code == 1 and "same folder" in err
    assert json.loads(out.read_text())["params"]["cluster"]["across"] == [str(train), str(test)]
