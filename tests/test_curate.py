"""The curation workflows from Python (dedup.curate, exported by ``dedup``): what the README's Python API
section shows, checked on the files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dedup
from dedup import group, load_config, prune, scan, undo
from dedup.errors import InputError

from helpers import tree_state
from imagegen import make_photo

PHASH = {"features.extractor": "phash"}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three photos, two of them with a re-encoded copy in a sub-folder."""
    root = tmp_path / "photos"
    (root / "copies").mkdir(parents=True)
    for seed in range(3):
        make_photo(seed).save(root / f"p{seed}.jpg", quality=95)
    for seed in range(2):
        make_photo(seed).resize((160, 120)).save(root / "copies" / f"p{seed}_small.jpg", quality=60)
    return root


def test_prune_from_python_moves_the_copies_and_undo_restores_them(photos: Path, tmp_path: Path) -> None:
    before = tree_state(photos)
    quarantine = tmp_path / "quarantine"
    outcome = prune([photos], load_config(overrides=PHASH), to=quarantine)
    assert outcome.applied is not None and outcome.applied.complete
    assert outcome.applied.counts()["moved"] == 2 and outcome.applied.counts()["kept"] == 2
    assert sorted(p.name for p in (quarantine / "copies").iterdir()) == ["p0_small.jpg", "p1_small.jpg"]
    assert not (photos / "copies" / "p0_small.jpg").exists() and (photos / "p0.jpg").exists()
    assert undo(outcome.applied.manifest).complete
    assert tree_state(photos) == before


def test_dry_run_and_from_report_touch_nothing_until_applied(photos: Path, tmp_path: Path) -> None:
    config = load_config(overrides=PHASH)
    before = tree_state(tmp_path)
    dry = prune([photos], config, to=tmp_path / "q", dry_run=True)
    assert dry.applied is None and len(dry.plan.operations) == 2
    assert tree_state(tmp_path) == before  # byte for byte, and no quarantine folder
    report_path = tmp_path / "r.json"
    done = scan([photos], config, reports=[report_path])
    assert done.written == [report_path] and json.loads(report_path.read_text())["stats"]["groups"] == 2
    outcome = prune(None, config, to=tmp_path / "q", from_report=report_path)
    assert outcome.result is None and outcome.applied is not None and len(outcome.applied.done) == 2
    with pytest.raises(InputError, match="not"):
        prune([tmp_path / "elsewhere"], config, to=tmp_path / "q2", from_report=report_path)


def test_group_from_python_links_every_image(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "sorted"
    outcome = group([photos], load_config(overrides=PHASH), to=out, mode="link")
    assert outcome.applied is not None and outcome.applied.counts()["linked"] == 5
    assert sorted(p.name for p in out.iterdir()) == [
        outcome.applied.manifest.name,
        "group-0001",
        "group-0002",
        "unique",
    ]
    assert all(p.is_symlink() for p in out.rglob("*.jpg"))


def test_the_public_api_is_importable_lazily() -> None:
    for name in dedup.__all__:
        assert getattr(dedup, name) is not None, name
    with pytest.raises(AttributeError):
        dedup.no_such_thing  # noqa: B018
