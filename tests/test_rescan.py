"""Work a scan does, as counted by the scan itself: a re-scan of unchanged files redoes nothing, new files
cost work for themselves only, the keypoint budget bounds the checks, and the outcome does not depend on
thread timing. (No timing assertions: speed targets live in ``make bench``.)"""

import shutil
from pathlib import Path

import pytest
from PIL import Image

from dedup import find_duplicates, load_config
from dedup import pipeline as pipeline_module
from dedup.config import Config

from imagegen import make_photo, studio_photo, write_verify_dataset


def _cached(tmp_path: Path, **overrides) -> Config:
    """The default configuration with a feature cache of this test's own (other tests' copies of the same
    generated images would be found in a shared one by content)."""
    return load_config(overrides={"cache.dir": str(tmp_path / "cache"), **overrides})


def _groups(result) -> set[frozenset[str]]:
    return {frozenset(result.images[m].path for m in g.members) for g in result.groups}


@pytest.fixture
def facts_read(monkeypatch) -> list[str]:
    """Paths whose facts the scan reads from the files."""
    read: list[str] = []
    real = pipeline_module.read_facts

    def spy(paths, **kwargs):
        read.extend(paths)
        return real(paths, **kwargs)

    monkeypatch.setattr(pipeline_module, "read_facts", spy)
    return read


def test_a_warm_rescan_decodes_nothing_computes_no_keypoints_and_verifies_no_pair(tmp_path, facts_read):
    truth = write_verify_dataset(tmp_path / "photos")
    config = _cached(tmp_path)  # the default: phash+thumb+color, verified, cache on
    cold = find_duplicates([truth["root"]], config)
    assert cold.verified and cold.verifier.stats["matched"] > 0 and cold.verifier.store.computed > 0
    assert cold.sources.extracted == 12 and len(facts_read) == 7  # the one group's members
    facts_read.clear()

    warm = find_duplicates([truth["root"]], config)
    assert warm.sources.extracted == 0 and warm.sources.cached == 12
    assert warm.verifier.store.computed == 0 and warm.verifier.stats["matched"] == 0
    assert facts_read == []
    assert _groups(warm) == _groups(cold)
    assert [im.quality for im in warm.images] == [im.quality for im in cold.images]  # facts from the cache
    assert {k: (e.edge, e.inliers) for k, e in warm.verifier.evidence.items()} == {
        k: (e.edge, e.inliers) for k, e in cold.verifier.evidence.items()
    }


def test_new_images_cost_work_for_themselves_and_are_grouped(tmp_path):
    truth = write_verify_dataset(tmp_path / "photos")
    config = _cached(tmp_path)
    cold = find_duplicates([truth["root"]], config)
    root = Path(truth["root"])
    shutil.copy(truth["original"], root / "zz-copy.jpg")
    Image.open(truth["original"]).resize((200, 150)).save(root / "zz-small.jpg", quality=80)
    make_photo(999, (400, 300)).save(root / "zz-new.jpg", quality=90)

    again = find_duplicates([truth["root"]], config)
    assert again.sources.cached == 12 and again.sources.extracted == 2  # the copy: reused by content
    # keypoints only for new images (and none at all for the byte-identical copy's own pairs: 'sure')
    assert again.verifier.store.computed <= 2
    assert again.verifier.stats["matched"] <= 2 * config.verify.budget + 2
    group = max(_groups(again), key=len)
    assert group >= max(_groups(cold), key=len) | {str(root / "zz-copy.jpg"), str(root / "zz-small.jpg")}
    assert str(root / "zz-new.jpg") not in group


def test_changed_verify_settings_recheck_pairs_but_reuse_keypoints(tmp_path):
    truth = write_verify_dataset(tmp_path / "photos")
    find_duplicates([truth["root"]], _cached(tmp_path))
    stricter = find_duplicates([truth["root"]], _cached(tmp_path, **{"verify.min_inliers": 40}))
    assert stricter.verifier.store.computed == 0  # keypoints depend on image_size / max_keypoints only
    assert stricter.verifier.stats["matched"] > 0 and stricter.verifier.stats["reused"] == 0
    resized = find_duplicates([truth["root"]], _cached(tmp_path, **{"verify.image_size": 256}))
    assert resized.verifier.store.computed > 0


def _look_alikes(root: Path, n: int) -> None:
    """``n`` different objects on one studio background: every pair is a candidate, none a duplicate."""
    root.mkdir(parents=True)
    for i in range(n):
        studio_photo(500 + i, 7, size=(200, 260)).save(root / f"{i:02}.jpg", quality=90)


@pytest.mark.parametrize("budget", [1, 2])
def test_the_budget_bounds_rejected_checks_per_image(tmp_path, budget):
    _look_alikes(tmp_path / "look", 14)
    everything = {"cache.enabled": False, "verify.candidate_threshold": 0.0, "index.neighbours": 20}
    look = [tmp_path / "look"]
    unbounded = find_duplicates(look, load_config(overrides={**everything, "verify.budget": 0}))
    n = len(unbounded.images)
    assert unbounded.verifier.stats["matched"] == n * (n - 1) // 2 and unbounded.groups == []

    bounded = find_duplicates(look, load_config(overrides={**everything, "verify.budget": budget}))
    rejected = [k for k, e in bounded.verifier.evidence.items() if e.reason == "rejected"]
    assert bounded.verifier.stats["matched"] == len(rejected) <= budget * n
    assert bounded.verifier.stats["over_budget"] == n * (n - 1) // 2 - len(rejected)
    assert bounded.groups == []


def test_the_budget_skips_pairs_already_joined_and_keeps_every_duplicate(tmp_path):
    truth = write_verify_dataset(tmp_path / "photos")
    config = load_config(overrides={"cache.enabled": False, "verify.budget": 1})
    result = find_duplicates([truth["root"]], config)
    members = max(_groups(result), key=len)
    assert members == {truth["original"], *truth["variants"].values()}
    assert result.verifier.stats["already_joined"] > 0


def test_decisions_do_not_depend_on_thread_timing(tmp_path, monkeypatch):
    _look_alikes(tmp_path / "look", 8)
    truth = write_verify_dataset(tmp_path / "look" / "photos")
    config = load_config(overrides={"cache.enabled": False, "verify.budget": 2})

    def evidence(workers: int) -> dict:
        monkeypatch.setattr(pipeline_module.os, "cpu_count", lambda: workers)
        result = find_duplicates([tmp_path / "look"], config)
        assert truth["original"] in max(_groups(result), key=len)
        paths = [im.path for im in result.images]
        return {(paths[i], paths[j]): e for (i, j), e in result.verifier.evidence.items()}

    assert evidence(1) == evidence(4) == evidence(4)


def test_a_candidate_set_is_reused_only_for_the_same_images(tmp_path):
    truth = write_verify_dataset(tmp_path / "photos")
    config = _cached(tmp_path)
    calls: list[int] = []
    real = pipeline_module.neighbour_graph

    def spy(emb, **kwargs):
        calls.append(len(emb))
        return real(emb, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline_module, "neighbour_graph", spy)
        find_duplicates([truth["root"]], config)
        assert len(calls) == 3  # phash, thumb, color
        find_duplicates([truth["root"]], config)
        assert len(calls) == 3  # all three candidate sets reused
        Path(truth["unrelated"][0]).unlink()
        after = find_duplicates([truth["root"]], config)
        assert len(calls) == 6 and calls[-1] == 11  # another set of images: searched again
    assert truth["original"] in max(_groups(after), key=len)
